//! exp over slices in a form the compiler vectorizes (libm's `expf` is one call per value, and
//! softmax over attention scores and vocabularies makes billions of them in an evaluation).
//! Cody–Waite range reduction, a degree-6 polynomial and the exponent set by bit arithmetic:
//! within 2 ulp of the exact result on the range softmax uses (x ≤ 0); no branches, no calls.

const LOG2E: f32 = std::f32::consts::LOG2_E;
// ln 2 split so that n · LN2_HI is exact for the n that occur.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 · 2²³: adding and subtracting it rounds an f32 to the nearest integer.
const ROUND: f32 = 12_582_912.0;

/// e^x for one value; below −87.3 it is e^−87.3 (about 1e−38: never subnormal, never 0).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    // e^r on |r| ≤ ln2/2: Taylor terms up to r⁶ (Horner).
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

/// `x ← e^(x − shift)` for every value; returns their sum.
pub fn exp_shifted_sum(values: &mut [f32], shift: f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = values.chunks_exact_mut(8);
    for chunk in &mut chunks {
        for (v, lane) in chunk.iter_mut().zip(lanes.iter_mut()) {
            *v = exp(*v - shift);
            *lane += *v;
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for v in chunks.into_remainder() {
        *v = exp(*v - shift);
        sum += *v;
    }
    sum
}

/// Σ e^(x − shift) without writing the values back, accumulated in f64 per lane of 8.
pub fn sum_exp_shifted(values: &[f32], shift: f32) -> f64 {
    let mut lanes = [0.0f32; 8];
    let mut total = 0.0f64;
    // Partial sums in f32 over short runs, then f64: the f32 sums stay exact to ~1e-7.
    for block in values.chunks(1024) {
        let mut chunks = block.chunks_exact(8);
        for chunk in &mut chunks {
            for (v, lane) in chunk.iter().zip(lanes.iter_mut()) {
                *lane += exp(*v - shift);
            }
        }
        for v in chunks.remainder() {
            total += exp(*v - shift) as f64;
        }
        total += lanes.iter().map(|&l| l as f64).sum::<f64>();
        lanes = [0.0; 8];
    }
    total
}

/// The largest value (−∞ for none), eight lanes at a time.
pub fn max(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        for (v, lane) in chunk.iter().zip(lanes.iter_mut()) {
            *lane = if *v > *lane { *v } else { *lane };
        }
    }
    let mut m = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &v in chunks.remainder() {
        m = m.max(v);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_where_softmax_uses_it() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 87.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        assert!(exp(-1000.0) < 1e-37);
        assert!((exp(1.0) - std::f32::consts::E).abs() < 1e-6);
    }

    #[test]
    fn sums_and_maxima_match_the_plain_loops() {
        let values: Vec<f32> = (0..10_003)
            .map(|i| ((i * 7919) % 1000) as f32 / 50.0 - 10.0)
            .collect();
        let m = max(&values);
        assert_eq!(m, values.iter().copied().fold(f32::NEG_INFINITY, f32::max));
        let want: f64 = values.iter().map(|&v| ((v - m) as f64).exp()).sum();
        let got = sum_exp_shifted(&values, m);
        assert!((got / want - 1.0).abs() < 1e-6, "{got} vs {want}");
        let mut copy = values.clone();
        let s = exp_shifted_sum(&mut copy, m) as f64;
        assert!((s / want - 1.0).abs() < 1e-5, "{s} vs {want}");
        assert!((copy[5] as f64 / ((values[5] - m) as f64).exp() - 1.0).abs() < 1e-6);
    }
}
