//! The `blocklist` target: what it does is `banshare::fuzz::blocklist`, which tests/fuzz.rs also runs.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| banshare::fuzz::blocklist(data));
