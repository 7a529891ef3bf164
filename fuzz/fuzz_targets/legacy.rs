//! The `legacy` target: what it does is `banshare::fuzz::legacy`, which tests/fuzz.rs also runs.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| banshare::fuzz::legacy(data));
