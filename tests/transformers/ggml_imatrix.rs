//! compressd's importance-weighted GGUF quantizers against ggml's own (`ggml_quantize_chunk`
//! with an importance matrix, what llama-quantize calls), run through the libggml-base that
//! llama-cpp-python builds: the same bytes, block for block, for every type. Skipped when
//! llama-cpp-python is not installed, unless COMPRESSD_REQUIRE_LLAMA_CPP is set.

use compressd::compress::quant::ggml_weighted;
use compressd::domain::GgufType;

use crate::python_reference::reference_output;

/// Rows with outliers, a zero block and a near-constant block; importances over four decades.
fn inputs(rows: usize, cols: usize) -> (Vec<f32>, Vec<f32>) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut x: Vec<f32> = (0..rows * cols)
        .map(|i| {
            let v = next() * 2.0 - 1.0;
            if i % 89 == 0 {
                v * 12.0
            } else {
                v * 0.05
            }
        })
        .collect();
    x[..64].fill(0.0);
    x[256..288].fill(0.031);
    let importance = (0..cols).map(|_| 10f32.powf(next() * 4.0 - 2.0)).collect();
    (x, importance)
}

fn ggml(kind: u32, cols: usize, x: &[f32], importance: &[f32]) -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let bytes = |v: &[f32]| v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
    std::fs::write(dir.path().join("x"), bytes(x)).unwrap();
    std::fs::write(dir.path().join("w"), bytes(importance)).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ggml_quantize.py");
    let mut python = std::process::Command::new("python3");
    python
        .arg(script)
        .arg(kind.to_string())
        .arg(cols.to_string())
        .arg(dir.path().join("x"))
        .arg(dir.path().join("w"))
        .arg(dir.path().join("out"));
    reference_output(
        "ggml_quantize_chunk",
        &mut python,
        "NO_LLAMA_CPP",
        "COMPRESSD_REQUIRE_LLAMA_CPP",
        "llama-cpp-python",
    )?;
    Some(std::fs::read(dir.path().join("out")).unwrap())
}

#[test]
fn weighted_blocks_are_ggmls_bytes() {
    let (rows, cols) = (8, 768);
    let (x, importance) = inputs(rows, cols);
    for (t, id) in [
        (GgufType::Q4_0, 2),
        (GgufType::Q4_1, 3),
        (GgufType::Q5_0, 6),
        (GgufType::Q5_1, 7),
        (GgufType::Q4K, 12),
        (GgufType::Q5K, 13),
        (GgufType::Q6K, 14),
    ] {
        let (ours, _) = ggml_weighted::encode(t, &x, cols, &importance);
        let Some(theirs) = ggml(id, cols, &x, &importance) else {
            return;
        };
        assert_eq!(ours.len(), theirs.len(), "{}", t.name());
        if let Some(at) = ours.iter().zip(&theirs).position(|(a, b)| a != b) {
            panic!("{}: first differing byte {at} of {}", t.name(), ours.len());
        }
    }
}
