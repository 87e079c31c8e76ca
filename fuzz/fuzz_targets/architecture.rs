//! Any text as an uploaded architecture. The property is `compressd::fuzz_checks::architecture`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| compressd::fuzz_checks::architecture(data));
