//! The `report` target: what it does is `banshare::fuzz::report`, which tests/fuzz.rs also runs.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| banshare::fuzz::report(data));
