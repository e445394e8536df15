//! cargo-fuzz entry for `veil_fuzz_targets::parquet_ingestion` (see that crate for what it covers).
#![no_main]

libfuzzer_sys::fuzz_target!(
    // libfuzzer-sys aborts on every panic, even one that is caught. Veil catches the
    // `parquet` crate's panics on malformed data pages (`veil-partner-data`'s Parquet reader)
    // and refuses the file, as a node does in production, so this target keeps Rust's own
    // hook: a caught panic is only printed, and a panic that escapes Veil still aborts (it
    // cannot unwind out of libFuzzer's `extern "C"` entry), which libFuzzer reports as a crash.
    init: {
        let _ = std::panic::take_hook();
    },
    |data: &[u8]| veil_fuzz_targets::parquet_ingestion(data)
);
