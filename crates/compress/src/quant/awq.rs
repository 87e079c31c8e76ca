//! AWQ (Lin et al. 2024, "Activation-aware Weight Quantization"): before rounding, the input
//! channels that carry large activations are scaled up in the weights (and down in whatever
//! produces the input), so that rounding costs them less. The scales are
//! s = x̄^α / w̄^(1−α) (x̄: mean |x| per channel over the calibration tokens, w̄: the channel's
//! mean weight relative to its group's largest, AutoAWQ's "duo scaling"), normalised, with α
//! searched on a grid of 20. Each candidate is scored by the output error it leaves,
//! Σ ‖X(W − Q(W·s)/s)ᵀ‖² = Σ tr(δ H δᵀ) over the layers that share the input, computed from
//! the input Hessian H = XᵀX (so every calibration token counts, without keeping them).
//! The identity is a candidate too: AWQ never leaves a pair worse than rounding alone.

use rayon::prelude::*;

use crate::obs::linalg::matmul;
use crate::quant::int::{self, IntSpec};

/// Grid points for α in [0, 1) (AutoAWQ's `n_grid`).
pub const GRID: usize = 20;

/// A search's outcome for one group of layers.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    pub scales: Vec<f32>,
    /// The α chosen; None when no candidate beat leaving the layers as they are.
    pub ratio: Option<f64>,
    /// Output error of round-to-nearest without scales, and with the scales chosen.
    pub error_before: f64,
    pub error_after: f64,
}

/// `layers` are the weights ([out, in], row-major) that read one input; `mean_abs` and `h`
/// (in × in) are that input's statistics.
pub fn search(layers: &[(&[f32], usize)], mean_abs: &[f64], h: &[f64], spec: IntSpec) -> Search {
    let cols = mean_abs.len();
    let h32: Vec<f32> = h.iter().map(|v| *v as f32).collect();
    let w_mean = weight_means(layers, cols, spec);
    let error = |s: &[f32]| -> f64 {
        layers
            .iter()
            .map(|(w, rows)| scaled_error(w, *rows, cols, s, &h32, spec))
            .sum()
    };
    let ones = vec![1f32; cols];
    let error_before = error(&ones);
    let mut best = (error_before, None, ones);
    for i in 0..GRID {
        let ratio = i as f64 / GRID as f64;
        let s = candidate(mean_abs, &w_mean, ratio);
        let e = error(&s);
        if e < best.0 {
            best = (e, Some(ratio), s);
        }
    }
    Search {
        error_before,
        error_after: best.0,
        ratio: best.1,
        scales: best.2,
    }
}

/// x̄^α / (w̄^(1−α) + 1e-4), at least 1e-4, divided by √(max · min).
fn candidate(x_mean: &[f64], w_mean: &[f64], ratio: f64) -> Vec<f32> {
    let s: Vec<f64> = x_mean
        .iter()
        .zip(w_mean)
        .map(|(x, w)| (x.powf(ratio) / (w.powf(1.0 - ratio) + 1e-4)).max(1e-4))
        .collect();
    let (lo, hi) = s.iter().fold((f64::INFINITY, 0f64), |(lo, hi), v| {
        (lo.min(*v), hi.max(*v))
    });
    let norm = (lo * hi).sqrt();
    s.iter().map(|v| (v / norm) as f32).collect()
}

/// Per input column, the mean over every row of every layer of |w| relative to the largest
/// |w| of its group.
fn weight_means(layers: &[(&[f32], usize)], cols: usize, spec: IntSpec) -> Vec<f64> {
    let group = spec.group_len(1, cols).clamp(1, cols);
    let mut sums = vec![0f64; cols];
    let mut rows_total = 0usize;
    for (w, rows) in layers {
        rows_total += rows;
        let partial: Vec<f64> = w
            .par_chunks(cols)
            .map(|row| {
                let mut out = vec![0f64; cols];
                for (o, v) in out.chunks_mut(group).zip(row.chunks(group)) {
                    let max = v.iter().fold(0f32, |m, x| m.max(x.abs())) + 1e-6;
                    o.iter_mut()
                        .zip(v)
                        .for_each(|(o, x)| *o = f64::from(x.abs() / max));
                }
                out
            })
            .reduce(
                || vec![0f64; cols],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                    a
                },
            );
        sums.iter_mut().zip(&partial).for_each(|(a, b)| *a += b);
    }
    sums.iter().map(|s| s / rows_total.max(1) as f64).collect()
}

/// tr(δ H δᵀ) for δ = W − Q(W·s)/s.
fn scaled_error(w: &[f32], rows: usize, cols: usize, s: &[f32], h: &[f32], spec: IntSpec) -> f64 {
    let scaled: Vec<f32> = w
        .par_chunks(cols)
        .flat_map_iter(|row| row.iter().zip(s).map(|(x, s)| x * s))
        .collect();
    let mut back = vec![0f32; w.len()];
    int::quantize_measured(&scaled, rows, cols, spec, Some(&mut back));
    let delta: Vec<f32> = w
        .par_chunks(cols)
        .zip(back.par_chunks(cols))
        .flat_map_iter(|(w, q)| w.iter().zip(q).zip(s).map(|((w, q), s)| w - q / s))
        .collect();
    let mut dh = vec![0f32; w.len()];
    matmul(&mut dh, &delta, h, rows, cols, cols);
    dh.par_iter()
        .zip(delta.par_iter())
        .map(|(a, b)| f64::from(a * b))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn spec() -> IntSpec {
        IntSpec {
            bits: 4,
            symmetric: false,
            granularity: int::Granularity::Group(32),
        }
    }

    #[test]
    fn loud_channels_are_protected_and_the_error_falls() {
        let (rows, cols, tokens) = (48, 64, 1024);
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        // A few input channels 30× louder than the rest, as in real activations.
        let loud = |j: usize| if j % 16 == 3 { 30.0 } else { 1.0 };
        let x: Vec<f32> = (0..tokens * cols)
            .map(|k| rng.random_range(-1.0f32..1.0) * loud(k % cols))
            .collect();
        let w: Vec<f32> = (0..rows * cols)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let mut h = vec![0f64; cols * cols];
        let mut mean_abs = vec![0f64; cols];
        for t in x.chunks(cols) {
            for i in 0..cols {
                mean_abs[i] += f64::from(t[i].abs()) / tokens as f64;
                for j in 0..cols {
                    h[i * cols + j] += f64::from(t[i] * t[j]);
                }
            }
        }
        let found = search(&[(&w, rows)], &mean_abs, &h, spec());
        assert!(found.ratio.is_some());
        assert!(
            found.error_after < 0.8 * found.error_before,
            "{} vs {}",
            found.error_after,
            found.error_before
        );
        // The loud channels get the largest scales.
        let loud_mean: f32 = (0..cols)
            .filter(|j| j % 16 == 3)
            .map(|j| found.scales[j])
            .sum::<f32>()
            / 4.0;
        let quiet_max = (0..cols)
            .filter(|j| j % 16 != 3)
            .map(|j| found.scales[j])
            .fold(0f32, f32::max);
        assert!(loud_mean > quiet_max, "{loud_mean} {quiet_max}");
        // The error the search reports is the output error it leaves.
        let direct = |s: &[f32]| -> f64 {
            let scaled: Vec<f32> = w
                .chunks(cols)
                .flat_map(|r| r.iter().zip(s).map(|(a, b)| a * b))
                .collect();
            let mut back = vec![0f32; w.len()];
            int::quantize_measured(&scaled, rows, cols, spec(), Some(&mut back));
            let q: Vec<f32> = back
                .chunks(cols)
                .flat_map(|r| r.iter().zip(s).map(|(a, b)| a / b))
                .collect();
            x.chunks(cols)
                .map(|t| {
                    (0..rows)
                        .map(|r| {
                            let d: f32 = (0..cols)
                                .map(|j| (w[r * cols + j] - q[r * cols + j]) * t[j])
                                .sum();
                            f64::from(d) * f64::from(d)
                        })
                        .sum::<f64>()
                })
                .sum()
        };
        let want = direct(&found.scales);
        assert!(
            (want - found.error_after).abs() < 1e-3 * want,
            "{want} vs {}",
            found.error_after
        );
    }

    #[test]
    fn uniform_inputs_keep_the_identity_or_better() {
        let (rows, cols) = (8, 32);
        let w: Vec<f32> = (0..rows * cols)
            .map(|k| ((k * 7919 % 61) as f32 - 30.0) / 30.0)
            .collect();
        let h: Vec<f64> = (0..cols * cols)
            .map(|k| if k / cols == k % cols { 1.0 } else { 0.0 })
            .collect();
        let found = search(&[(&w, rows)], &vec![1.0; cols], &h, spec());
        assert!(found.error_after <= found.error_before);
    }
}
