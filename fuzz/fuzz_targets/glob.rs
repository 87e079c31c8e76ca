//! A tensor-name pattern against a name. The property is `compressd::fuzz_checks::glob`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| compressd::fuzz_checks::glob(data));
