//! Key files in the zcert format, public and secret.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = Path::new("fuzz.key");
        let _ = banshare::wire::keys::parse_public(path, text);
        let _ = banshare::wire::keys::parse_secret(path, text);
    }
});
