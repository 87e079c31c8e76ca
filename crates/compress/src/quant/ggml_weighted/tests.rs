use super::*;
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType};
use candle_core::Device;
use rand::{Rng, SeedableRng};

const TYPES: [(GgufType, GgmlDType); 7] = [
    (GgufType::Q4_0, GgmlDType::Q4_0),
    (GgufType::Q4_1, GgmlDType::Q4_1),
    (GgufType::Q5_0, GgmlDType::Q5_0),
    (GgufType::Q5_1, GgmlDType::Q5_1),
    (GgufType::Q4K, GgmlDType::Q4K),
    (GgufType::Q5K, GgmlDType::Q5K),
    (GgufType::Q6K, GgmlDType::Q6K),
];

/// Rows with a few outliers and an all-zero block, importances spanning four decades.
fn inputs(rows: usize, cols: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut x: Vec<f32> = (0..rows * cols)
        .map(|i| {
            let v: f32 = rng.random_range(-1.0..1.0);
            if i % 97 == 0 {
                v * 8.0
            } else {
                v
            }
        })
        .collect();
    x[..32].fill(0.0);
    let importance = (0..cols)
        .map(|_| 10f32.powf(rng.random_range(-2.0..2.0)))
        .collect();
    (x, importance)
}

/// What ggml itself (candle's port of its dequantizers) reads back from the bytes.
fn ggml_reads(bytes: &[u8], dtype: GgmlDType, rows: usize, cols: usize) -> Vec<f32> {
    qtensor_from_ggml(dtype, bytes, vec![rows, cols], &Device::Cpu)
        .unwrap()
        .dequantize(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn the_blocks_hold_what_the_encoder_measured() {
    let (rows, cols) = (6, 512);
    let (x, importance) = inputs(rows, cols, 3);
    for (t, dtype) in TYPES {
        let (bytes, sums) = encode(t, &x, cols, &importance);
        assert_eq!(
            bytes.len(),
            rows * cols / dtype.block_size() * dtype.type_size()
        );
        let back = ggml_reads(&bytes, dtype, rows, cols);
        let mut direct = ErrorSums::default();
        direct.add_short(&x, &back);
        let (a, b) = (direct.stats(), sums.stats());
        // Summed row by row there, at once here: the same errors, rounded apart.
        assert_eq!(a.max_abs_error, b.max_abs_error, "{}", t.name());
        assert!(
            (a.mse - b.mse).abs() <= 1e-5 * a.mse,
            "{}: {a:?} {b:?}",
            t.name()
        );
        // The zero block comes back as zeros.
        assert!(back[..32].iter().all(|v| *v == 0.0), "{}", t.name());
    }
}

#[test]
fn the_important_columns_lose_less_than_without_the_matrix() {
    let (rows, cols) = (32, 512);
    let (x, importance) = inputs(rows, cols, 4);
    for (t, dtype) in TYPES {
        let (weighted, _) = encode(t, &x, cols, &importance);
        let plain = candle_core::quantized::QTensor::quantize(
            &candle_core::Tensor::from_slice(&x, (rows, cols), &Device::Cpu).unwrap(),
            dtype,
        )
        .unwrap()
        .data()
        .unwrap()
        .into_owned();
        let cost = |bytes: &[u8]| -> f64 {
            let back = ggml_reads(bytes, dtype, rows, cols);
            x.iter()
                .zip(&back)
                .enumerate()
                .map(|(i, (a, b))| f64::from(importance[i % cols]) * f64::from(a - b).powi(2))
                .sum()
        };
        let (w, p) = (cost(&weighted), cost(&plain));
        assert!(w < p, "{}: weighted {w} against plain {p}", t.name());
    }
}

#[test]
fn nearest_int_rounds_half_to_even() {
    for (x, want) in [
        (0.5f32, 0),
        (1.5, 2),
        (2.5, 2),
        (-0.5, 0),
        (-1.5, -2),
        (3.49, 3),
        (-7.6, -8),
    ] {
        assert_eq!(nearest_int(x), want, "{x}");
    }
}
