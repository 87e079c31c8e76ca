//! Any bytes as an uploaded GGUF file. The property is `compressd::fuzz_checks::gguf_header`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| compressd::fuzz_checks::gguf_header(data));
