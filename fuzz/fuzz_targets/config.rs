//! server.toml and client.toml, parsed and checked as the daemons do at start.

#![no_main]

use std::path::Path;

use banshare::config::{ClientConfig, ServerConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = Path::new("fuzz.toml");
        let _ = ServerConfig::from_text(path, text);
        let _ = ClientConfig::from_text(path, text);
    }
});
