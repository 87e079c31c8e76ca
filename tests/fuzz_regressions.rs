//! Replays the fuzz targets' seed corpus and every input a fuzzer once crashed on
//! (`fuzz/regressions/<target>/`) through the same properties, on the stable toolchain.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut seen = 0;
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            let bytes = std::fs::read(entry.path()).unwrap();
            let name = entry.path().display().to_string();
            std::panic::catch_unwind(|| check(&bytes))
                .unwrap_or_else(|_| panic!("{target} fails on {name}"));
            seen += 1;
        }
    }
    assert!(seen > 0, "no inputs for {target}");
}

#[test]
fn safetensors_header_inputs() {
    replay(
        "safetensors_header",
        compressd::fuzz_checks::safetensors_header,
    );
}

#[test]
fn architecture_inputs() {
    replay("architecture", compressd::fuzz_checks::architecture);
}

#[test]
fn pipeline_inputs() {
    replay("pipeline", compressd::fuzz_checks::pipeline);
}

#[test]
fn compressed_reader_inputs() {
    replay(
        "compressed_reader",
        compressd::fuzz_checks::compressed_reader,
    );
}

#[test]
fn glob_inputs() {
    replay("glob", compressd::fuzz_checks::glob);
}

#[test]
fn gguf_header_inputs() {
    replay("gguf_header", compressd::fuzz_checks::gguf_header);
}
