//! What a client decodes from the server: published messages, snapshot pages and verdicts,
//! with the input cut into frames at each 0x00 byte.

#![no_main]

use banshare::wire::protocol::{Publish, SnapshotPage, Verdict};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let frames: Vec<Vec<u8>> = data.split(|b| *b == 0).map(<[u8]>::to_vec).collect();
    let _ = Publish::decode(&frames);
    let _ = SnapshotPage::decode(&frames);
    let _ = Verdict::decode(&frames);
});
