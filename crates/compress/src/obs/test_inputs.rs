//! What the Hessian methods' tests share: random weights, correlated calibration inputs with
//! their Hessian, and the output error a rewrite leaves on them.

use rand::{Rng, SeedableRng};

pub fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

pub fn identity(n: usize) -> Vec<f64> {
    (0..n * n)
        .map(|k| if k / n == k % n { 1.0 } else { 0.0 })
        .collect()
}

/// Σ xᵀx over the rows of `x`.
pub fn hessian(x: &[f32], cols: usize) -> Vec<f64> {
    let mut h = vec![0f64; cols * cols];
    for t in x.chunks(cols) {
        for i in 0..cols {
            for j in 0..cols {
                h[i * cols + j] += f64::from(t[i] * t[j]);
            }
        }
    }
    h
}

/// Inputs with very different scales per column and correlations between neighbours, and
/// their Hessian.
pub fn correlated_inputs(tokens: usize, cols: usize, seed: u64) -> (Vec<f32>, Vec<f64>) {
    let base = random(tokens * cols, seed);
    let x: Vec<f32> = base
        .chunks(cols)
        .flat_map(|t| {
            (0..cols).map(move |j| (t[j] + 0.8 * t[(j + 1) % cols]) * (1.0 + (j % 7) as f32))
        })
        .collect();
    let h = hessian(&x, cols);
    (x, h)
}

/// Σ ‖x(W − Q)ᵀ‖² over the rows x of `x`.
pub fn output_error(x: &[f32], w: &[f32], q: &[f32], cols: usize) -> f64 {
    let rows = w.len() / cols;
    x.chunks(cols)
        .map(|t| {
            (0..rows)
                .map(|r| {
                    let d: f32 = (0..cols)
                        .map(|j| (w[r * cols + j] - q[r * cols + j]) * t[j])
                        .sum();
                    f64::from(d * d)
                })
                .sum::<f64>()
        })
        .sum()
}
