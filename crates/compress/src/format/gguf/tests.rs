//! GGUF files as written, reopened.

use crate::format::gguf::*;

/// One 32-value row whose largest magnitude appears first, with its sign.
fn row() -> Vec<f32> {
    (0..32).map(|i| (i as f32 - 15.5) / 16.0).collect()
}

/// ggml's `quantize_row_q8_0_ref`: d = amax / 127 stored as f16, q = round(x / d).
#[test]
fn q8_0_block_matches_ggml_definition() {
    let x = row();
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let mut expected = half::f16::from_f32(d).to_le_bytes().to_vec();
    expected.extend(x.iter().map(|v| (v / d).round() as i8 as u8));
    let (bytes, _) = quantize_rows(&x, 32, GgmlDType::Q8_0).unwrap();
    assert_eq!(bytes, expected);
    let (ours, sums) = ggml_blocks::encode(Block::Q8_0, &x);
    assert_eq!(ours, expected, "compressd's own Q8_0 encoder");
    assert!(sums.stats().max_abs_error <= d as f64 / 2.0 * 1.01);
}

/// ggml's `quantize_row_q4_0_ref`: d = max / −8 (max: the signed value of largest
/// magnitude), q = min(15, (x / d + 8.5) truncated); value j and j + 16 share byte j.
#[test]
fn q4_0_block_matches_ggml_definition() {
    let x = row();
    let max = x
        .iter()
        .copied()
        .fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
    let d = max / -8.0;
    let id = 1.0 / d;
    let q = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
    let mut expected = half::f16::from_f32(d).to_le_bytes().to_vec();
    expected.extend((0..16).map(|j| q(x[j]) | (q(x[j + 16]) << 4)));
    let (bytes, _) = quantize_rows(&x, 32, GgmlDType::Q4_0).unwrap();
    assert_eq!(bytes, expected);
    let (ours, _) = ggml_blocks::encode(Block::Q4_0, &x);
    assert_eq!(ours, expected, "compressd's own Q4_0 encoder");
}

#[test]
fn block_sizes_follow_ggml() {
    for (t, block, size) in [
        (GgufType::Q8_0, 32, 34),
        (GgufType::Q4_0, 32, 18),
        (GgufType::Q4_1, 32, 20),
        (GgufType::Q5_0, 32, 22),
        (GgufType::Q5_1, 32, 24),
        (GgufType::Q2K, 256, 84),
        (GgufType::Q3K, 256, 110),
        (GgufType::Q4K, 256, 144),
        (GgufType::Q5K, 256, 176),
        (GgufType::Q6K, 256, 210),
    ] {
        let d = ggml_dtype(t);
        assert_eq!((d.block_size(), d.type_size()), (block, size), "{t:?}");
    }
}
