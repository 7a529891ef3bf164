//! The 2014 format, `prog;jail;ip;sender` in one frame, as the server decodes it.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = banshare::wire::protocol::decode_request(&[data.to_vec()]);
});
