//! ggml's Q8_0 and Q4_0 blocks, written straight from the reference definitions
//! (`quantize_row_q8_0_ref`, `quantize_row_q4_0_ref` in ggml-quants.c), fused with the error
//! measurement and run on all cores. candle's `QTensor::quantize` produces the same bytes but
//! copies every chunk four times; the other block types still go through candle.

use half::f16;
use rayon::prelude::*;

use crate::quant::ErrorSums;

pub const BLOCK: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    Q8_0,
    Q4_0,
}

impl Block {
    pub fn bytes(self) -> usize {
        match self {
            Block::Q8_0 => 2 + BLOCK,
            Block::Q4_0 => 2 + BLOCK / 2,
        }
    }
}

/// Encodes one block into `out` and adds its error (as ggml dequantizes it) to `sums`.
fn block(kind: Block, x: &[f32], out: &mut [u8], sums: &mut ErrorSums) {
    match kind {
        Block::Q8_0 => {
            let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let dh = f16::from_f32(d);
            out[..2].copy_from_slice(&dh.to_le_bytes());
            let dd = dh.to_f32();
            let mut back = [0f32; BLOCK];
            for ((o, &v), r) in out[2..].iter_mut().zip(x).zip(&mut back) {
                let q = round_away(v * id) as i8;
                *o = q as u8;
                *r = q as f32 * dd;
            }
            sums.add_short(x, &back);
        }
        Block::Q4_0 => {
            // The first value of largest magnitude, with its sign (ggml's strict `<`).
            let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            let max = x.iter().copied().find(|v| v.abs() == amax).unwrap_or(0.0);
            let d = max / -8.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let dh = f16::from_f32(d);
            out[..2].copy_from_slice(&dh.to_le_bytes());
            let dd = dh.to_f32();
            // x·id + 8.5 lies in [0.5, 16.5]: truncation then min(15), as ggml does.
            let mut codes = [0u8; BLOCK];
            let mut back = [0f32; BLOCK];
            for ((c, r), &v) in codes.iter_mut().zip(&mut back).zip(x) {
                let q = (v * id + 8.5).min(15.0) as u8;
                *c = q;
                *r = (q as f32 - 8.0) * dd;
            }
            for j in 0..BLOCK / 2 {
                out[2 + j] = codes[j] | (codes[j + BLOCK / 2] << 4);
            }
            sums.add_short(x, &back);
        }
    }
}

/// C's `roundf` (half away from zero) without the libm call: truncation is exact, and so is
/// the difference it leaves.
#[inline]
fn round_away(x: f32) -> f32 {
    let t = x.trunc();
    if (x - t).abs() >= 0.5 {
        t + x.signum()
    } else {
        t
    }
}

/// Encodes `values` (a whole number of blocks) and measures the error, on every core.
pub fn encode(kind: Block, values: &[f32]) -> (Vec<u8>, ErrorSums) {
    assert_eq!(values.len() % BLOCK, 0, "rows are whole blocks");
    const BLOCKS_PER_TASK: usize = 2048;
    let mut out = vec![0u8; values.len() / BLOCK * kind.bytes()];
    let sums = out
        .par_chunks_mut(BLOCKS_PER_TASK * kind.bytes())
        .zip(values.par_chunks(BLOCKS_PER_TASK * BLOCK))
        .map(|(o, v)| {
            let mut sums = ErrorSums::default();
            for (ob, xb) in o.chunks_exact_mut(kind.bytes()).zip(v.chunks_exact(BLOCK)) {
                block(kind, xb, ob, &mut sums);
            }
            sums
        })
        .reduce(ErrorSums::default, |mut a, b| {
            a.merge(&b);
            a
        });
    (out, sums)
}
