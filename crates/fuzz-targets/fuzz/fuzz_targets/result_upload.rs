//! cargo-fuzz entry for `veil_fuzz_targets::result_upload` (see that crate for what it covers).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veil_fuzz_targets::result_upload(data));
