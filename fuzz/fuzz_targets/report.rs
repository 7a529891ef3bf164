//! The server's decoder of requests on the report socket, with the input cut into frames at
//! each 0x00 byte (so the fuzzer reaches every frame count).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let frames: Vec<Vec<u8>> = data.split(|b| *b == 0).map(<[u8]>::to_vec).collect();
    let _ = banshare::wire::protocol::decode_request(&frames);
});
