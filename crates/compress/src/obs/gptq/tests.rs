use super::*;
use crate::obs::test_inputs::{correlated_inputs, identity, output_error, random};

fn spec(bits: u32, symmetric: bool, group: usize, act_order: bool) -> GptqSpec {
    GptqSpec {
        bits,
        symmetric,
        group,
        act_order,
    }
}

#[test]
fn with_an_identity_hessian_it_is_round_to_nearest() {
    let (rows, cols) = (6, 256);
    for (bits, symmetric, group) in [
        (4, true, 32),
        (4, false, 128),
        (8, true, 64),
        (8, false, cols),
    ] {
        let w = random(rows * cols, u64::from(bits) + group as u64);
        let int_spec = IntSpec {
            bits,
            symmetric,
            granularity: int::Granularity::Group(group),
        };
        let mut rtn = vec![0f32; w.len()];
        let (want, _) = int::quantize_measured(&w, rows, cols, int_spec, Some(&mut rtn));
        let mut ours = w.clone();
        let out = quantize(
            &mut ours,
            cols,
            &identity(cols),
            spec(bits, symmetric, group, false),
            0.01,
        );
        assert_eq!(
            out.quantized, want,
            "{bits} bits, symmetric {symmetric}, group {group}"
        );
        assert_eq!(ours, rtn);
    }
}

#[test]
fn codes_and_parameters_give_back_the_values_it_leaves() {
    let (rows, cols) = (8, 128);
    let (_, h) = correlated_inputs(512, cols, 7);
    for act_order in [false, true] {
        for symmetric in [true, false] {
            let mut w = random(rows * cols, 8);
            let s = spec(4, symmetric, 32, act_order);
            let out = quantize(&mut w, cols, &h, s, 0.01);
            let q = &out.quantized;
            assert_eq!(q.scales.len(), rows * cols / 32);
            assert_eq!(
                q.zero_points.len(),
                if symmetric { 0 } else { q.scales.len() }
            );
            let back = int::dequantize(q, 32);
            assert_eq!(back, w, "act_order {act_order} symmetric {symmetric}");
            let (lo, hi) = IntSpec {
                bits: 4,
                symmetric,
                granularity: int::Granularity::Group(32),
            }
            .range();
            assert!(q.codes.iter().all(|&c| (lo..=hi).contains(&i32::from(c))));
        }
    }
}

#[test]
fn it_moves_the_outputs_less_than_round_to_nearest() {
    let (rows, cols, tokens) = (32, 128, 2048);
    let (x, h) = correlated_inputs(tokens, cols, 9);
    let w = random(rows * cols, 10);
    for (bits, group) in [(4, 32), (3, 128), (8, cols)] {
        let int_spec = IntSpec {
            bits,
            symmetric: false,
            granularity: int::Granularity::Group(group),
        };
        let mut rtn = vec![0f32; w.len()];
        int::quantize_measured(&w, rows, cols, int_spec, Some(&mut rtn));
        let e_rtn = output_error(&x, &w, &rtn, cols);
        for act_order in [false, true] {
            let mut ours = w.clone();
            quantize(
                &mut ours,
                cols,
                &h,
                spec(bits, false, group, act_order),
                0.01,
            );
            let e = output_error(&x, &w, &ours, cols);
            assert!(
                e < 0.7 * e_rtn,
                "{bits} bits g{group} act_order {act_order}: {e} against round-to-nearest {e_rtn}"
            );
        }
    }
}

/// GPTQ written the plain way: the damped inverse Hessian formed explicitly, and after each
/// column the OBS update applied to every later column at once (no Cholesky factor, no
/// blocks). The sweep must land on the same codes.
fn textbook_gptq(w: &[f32], cols: usize, h: &[f64], spec: IntSpec, group: usize) -> Vec<f32> {
    let n = cols;
    let mean = (0..n).map(|j| h[j * n + j]).sum::<f64>() / n as f64;
    let mut hinv: Vec<f64> = h.to_vec();
    (0..n).for_each(|j| hinv[j * n + j] += 0.01 * mean);
    // Gauss–Jordan inverse.
    let mut inv: Vec<f64> = (0..n * n)
        .map(|k| f64::from(u8::from(k / n == k % n)))
        .collect();
    for c in 0..n {
        let d = hinv[c * n + c];
        for k in 0..n {
            hinv[c * n + k] /= d;
            inv[c * n + k] /= d;
        }
        for r in (0..n).filter(|&r| r != c) {
            let f = hinv[r * n + c];
            for k in 0..n {
                hinv[r * n + k] -= f * hinv[c * n + k];
                inv[r * n + k] -= f * inv[c * n + k];
            }
        }
    }
    let mut out = w.to_vec();
    for row in out.chunks_mut(cols) {
        let mut hi = inv.clone();
        let mut x: Vec<f64> = row.iter().map(|v| f64::from(*v)).collect();
        let mut params = (0f32, 0i32);
        for j in 0..n {
            if j % group == 0 {
                let g: Vec<f32> = x[j..j + group].iter().map(|v| *v as f32).collect();
                params = int::params_for(&g, spec);
            }
            let (scale, zp) = params;
            let (lo, hi_code) = spec.range();
            let inv_s = if scale == 0.0 { 0.0 } else { 1.0 / scale };
            let q = (int::round_even(x[j] as f32 * inv_s) as i32 + zp).clamp(lo, hi_code);
            let qv = f64::from((q - zp) as f32 * scale);
            let e = (x[j] - qv) / hi[j * n + j];
            for k in j + 1..n {
                x[k] -= e * hi[j * n + k];
            }
            x[j] = qv;
            // Remove column j from the inverse Hessian (OBS's rank-one downdate).
            let d = hi[j * n + j];
            let rowj: Vec<f64> = (0..n).map(|k| hi[j * n + k]).collect();
            for a in 0..n {
                let f = hi[a * n + j] / d;
                for b in 0..n {
                    hi[a * n + b] -= f * rowj[b];
                }
            }
        }
        row.iter_mut().zip(&x).for_each(|(o, v)| *o = *v as f32);
    }
    out
}

#[test]
fn the_sweep_lands_where_the_textbook_algorithm_does() {
    let (rows, cols) = (4, 160);
    let (_, h) = correlated_inputs(400, cols, 12);
    let w = random(rows * cols, 13);
    let spec_int = IntSpec {
        bits: 4,
        symmetric: false,
        granularity: int::Granularity::Group(32),
    };
    let mut ours = w.clone();
    quantize(&mut ours, cols, &h, spec(4, false, 32, false), 0.01);
    let theirs = textbook_gptq(&w, cols, &h, spec_int, 32);
    let differ = ours
        .iter()
        .zip(&theirs)
        .filter(|(a, b)| (*a - *b).abs() > 1e-4 * (1.0 + b.abs()))
        .count();
    // Rounding ties may fall the other way in a few places; the grid steps are large.
    assert!(
        differ * 100 <= ours.len(),
        "{differ} of {} values differ",
        ours.len()
    );
}
