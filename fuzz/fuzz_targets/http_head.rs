//! The `http_head` target: what it does is `banshare::fuzz::http_head`, which tests/fuzz.rs also runs.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| banshare::fuzz::http_head(data));
