//! Any JSON as a job's pipeline. The property is `compressd::fuzz_checks::pipeline`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| compressd::fuzz_checks::pipeline(data));
