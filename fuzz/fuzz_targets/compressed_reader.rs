//! Any bytes as a model file read back by compressd's reader. The property is `compressd::fuzz_checks::compressed_reader`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| compressd::fuzz_checks::compressed_reader(data));
