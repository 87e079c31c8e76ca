//! Any bytes as an uploaded safetensors file. The property is `compressd::fuzz_checks::safetensors_header`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| compressd::fuzz_checks::safetensors_header(data));
