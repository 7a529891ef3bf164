//! The server's decoder of requests on the report socket, with the input cut into frames at
//! each 0x00 byte (so the fuzzer reaches every frame count), and of the report line that a
//! FORWARD request from a peer carries.

#![no_main]

use banshare::server::policy::confirm::PendingSet;
use banshare::store::Record;
use banshare::wire::protocol::{decode_request, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let frames: Vec<Vec<u8>> = data.split(|b| *b == 0).map(<[u8]>::to_vec).collect();
    if let Ok(Request::Forward { line, .. }) = decode_request(&frames) {
        let fields: Vec<&str> = line.split(' ').collect();
        let _ = PendingSet::decode(&fields);
    }
});
