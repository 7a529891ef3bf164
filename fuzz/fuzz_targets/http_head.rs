//! The metrics endpoint's request heads (`daemon::http`), as any local user may send them:
//! the input is cut into reads at each 0x00, as a head may arrive in pieces. Whatever comes,
//! the answer is one of the statuses the endpoint gives, and a head that reached the cap is
//! answered rather than kept.

#![no_main]

use banshare::daemon::http::{status_after, HEAD_MAX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let reads: Vec<&[u8]> = data.split(|b| *b == 0).collect();
    match status_after(&reads) {
        Some(status) => assert!([200, 400, 431].contains(&status), "{status}"),
        None => {
            let kept: usize = reads.iter().map(|r| r.len()).sum();
            assert!(kept < HEAD_MAX, "a head of {kept} bytes still waits");
        }
    }
});
