//! Causal grouped-query attention on the CPU, fused per block of query positions: a block's
//! scores against the keys it may see (never the masked future, so about half the products of
//! a full score matrix), its softmax and its product with the values are made while the block
//! is in cache, and the blocks run on every core. Built from candle ops instead, a window of
//! 2,048 tokens made and freed a 50 MB score matrix per key/value head and layer, and the page
//! faults, copies and wasted masked products took most of a perplexity evaluation's time.

use rayon::prelude::*;

use super::fastmath;

/// Query positions per task: a task's scores (`BLOCK` × at most the window) stay in L2.
const BLOCK: usize = 64;

/// The shapes of one sequence's attention.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub positions: usize,
    pub head_dim: usize,
}

/// `q` is [heads, positions, head_dim], `k` and `v` [kv_heads, positions, head_dim], all
/// row-major; query head h reads key/value head h / (heads / kv_heads). Returns
/// [heads, positions, head_dim]: softmax(q·kᵀ·scale, causal)·v.
pub fn causal(q: &[f32], k: &[f32], v: &[f32], s: Heads, scale: f32) -> Vec<f32> {
    let Heads {
        heads,
        kv_heads,
        positions: t,
        head_dim: d,
    } = s;
    assert_eq!(q.len(), heads * t * d, "q is [heads, positions, head_dim]");
    assert_eq!(
        k.len(),
        kv_heads * t * d,
        "k is [kv_heads, positions, head_dim]"
    );
    assert_eq!(v.len(), k.len(), "v is shaped like k");
    assert!(kv_heads > 0 && heads % kv_heads == 0, "whole query groups");
    let mut out = vec![0.0f32; q.len()];
    if out.is_empty() {
        return out;
    }
    let rep = heads / kv_heads;
    let tasks: Vec<(usize, usize, &mut [f32])> = out
        .chunks_mut(t * d)
        .enumerate()
        .flat_map(|(h, head)| {
            head.chunks_mut(BLOCK * d)
                .enumerate()
                .map(move |(b, rows)| (h, b * BLOCK, rows))
        })
        .collect();
    tasks.into_par_iter().for_each(|(h, first, rows)| {
        let g = h / rep;
        let q = &q[(h * t + first) * d..(h * t + first) * d + rows.len()];
        let k = &k[g * t * d..(g + 1) * t * d];
        let v = &v[g * t * d..(g + 1) * t * d];
        block(q, k, v, first, d, scale, rows);
    });
    out
}

/// One task: the query rows of positions `first..` (`q`, row-major, head_dim `d`), the keys
/// and values of every position, `out` the rows' results.
fn block(q: &[f32], k: &[f32], v: &[f32], first: usize, d: usize, scale: f32, out: &mut [f32]) {
    let rows = q.len() / d;
    let seen = first + rows;
    let mut scores = vec![0.0f32; rows * seen];
    // SAFETY: every pointer is to a live slice at least as long as the extents and strides
    // given (scores rows × seen, q rows × d, k seen × d read as its transpose, v seen × d,
    // out rows × d), and `scores`/`out` are borrowed mutably here alone.
    unsafe {
        gemm::gemm(
            rows,
            seen,
            d,
            scores.as_mut_ptr(),
            1,
            seen as isize,
            false,
            q.as_ptr(),
            1,
            d as isize,
            k.as_ptr(),
            d as isize,
            1,
            0.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    for (i, row) in scores.chunks_mut(seen).enumerate() {
        let (visible, future) = row.split_at_mut(first + i + 1);
        let max = fastmath::max(visible);
        let inv = 1.0 / fastmath::exp_shifted_sum(visible, max);
        visible.iter_mut().for_each(|x| *x *= inv);
        future.fill(0.0);
    }
    // SAFETY: as above.
    unsafe {
        gemm::gemm(
            rows,
            d,
            seen,
            out.as_mut_ptr(),
            1,
            d as isize,
            false,
            scores.as_ptr(),
            1,
            seen as isize,
            v.as_ptr(),
            1,
            d as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook definition, one query at a time in f64.
    fn reference(q: &[f32], k: &[f32], v: &[f32], s: Heads, scale: f32) -> Vec<f32> {
        let (t, d) = (s.positions, s.head_dim);
        let rep = s.heads / s.kv_heads;
        let mut out = vec![0.0f32; q.len()];
        for h in 0..s.heads {
            let g = h / rep;
            for i in 0..t {
                let qi = &q[(h * t + i) * d..][..d];
                let logits: Vec<f64> = (0..=i)
                    .map(|j| {
                        let kj = &k[(g * t + j) * d..][..d];
                        qi.iter().zip(kj).map(|(a, b)| (a * b) as f64).sum::<f64>() * scale as f64
                    })
                    .collect();
                let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
                let sum: f64 = weights.iter().sum();
                for c in 0..d {
                    out[(h * t + i) * d + c] = (0..=i)
                        .map(|j| weights[j] / sum * v[(g * t + j) * d + c] as f64)
                        .sum::<f64>() as f32;
                }
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 250.0 - 2.0)
            .collect()
    }

    #[test]
    fn matches_the_definition_across_block_edges() {
        // Positions that are not a multiple of the block, three query heads per key head.
        for (heads, kv_heads, t) in [(6, 2, 150), (4, 4, 64), (3, 1, 1), (2, 1, 129)] {
            let s = Heads {
                heads,
                kv_heads,
                positions: t,
                head_dim: 16,
            };
            let q = values(heads * t * 16, 1);
            let k = values(kv_heads * t * 16, 2);
            let v = values(kv_heads * t * 16, 3);
            let ours = causal(&q, &k, &v, s, 0.25);
            let want = reference(&q, &k, &v, s, 0.25);
            let worst = ours
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-5, "{s:?}: off by {worst}");
        }
    }
}
