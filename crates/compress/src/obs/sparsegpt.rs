//! SparseGPT (Frantar & Alistarh 2023, "Massive Language Models Can Be Accurately Pruned in
//! One-Shot"): the mask is chosen a block of columns at a time by w² / [H⁻¹]_jj² (the OBS
//! saliency), and every pruned weight's error is pushed onto the columns not yet decided.
//! Unstructured targets are met exactly per output row (each block takes its share of the
//! row's zeros); N:M chooses within every group of m as the sweep reaches it.

use super::hessian::{inverse_factor, Singular};
use super::sweep::{sweep, Rounding};
use crate::prune::wanda::{self, RowTarget};

/// Columns decided together before their error reaches the rest (the paper's 128).
pub const BLOCK: usize = 128;

/// What became of one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Σ over rows of the OBS loss estimate Σ (w − q)² / [H⁻¹]_jj², halved as in the paper.
    pub loss: f64,
    /// The damping used (fraction of H's mean diagonal); None when the magnitude fallback ran.
    pub dampening: Option<f64>,
    /// Why the Hessian path was not taken, when it was not.
    pub fallback: Option<String>,
}

/// Prunes `w` (rows × cols, row-major) in place to `target`, given the layer's input Hessian
/// `h` (cols × cols).
pub fn prune(w: &mut [f32], cols: usize, h: &[f64], target: RowTarget, dampening: f64) -> Outcome {
    let factor = match inverse_factor(h, cols, dampening) {
        Ok(f) => f,
        Err(Singular { last_dampening }) => {
            // The magnitude mask, per row or N:M as asked.
            wanda::prune(w, cols, &vec![1.0; cols], target);
            return Outcome {
                loss: 0.0,
                dampening: None,
                fallback: Some(format!(
                    "the Hessian stayed singular up to a damping of {last_dampening} × its mean diagonal; pruned by magnitude"
                )),
            };
        }
    };
    for row in w.chunks_mut(cols) {
        for (x, _) in row.iter_mut().zip(&factor.dead).filter(|(_, d)| **d) {
            *x = 0.0;
        }
    }
    let block = match target {
        RowTarget::NofM { m, .. } => BLOCK.div_ceil(m) * m,
        RowTarget::Sparsity(_) => BLOCK,
    };
    let masks = Masks {
        target,
        block,
        cols,
    };
    let states = sweep(&masks, w, cols, &factor.u, block);
    Outcome {
        loss: states.iter().map(|(_, l)| l / 2.0).sum(),
        dampening: Some(factor.dampening),
        fallback: None,
    }
}

struct Masks {
    target: RowTarget,
    block: usize,
    cols: usize,
}

/// The row's pruned columns in the current block (or N:M group), by offset from `base`.
struct RowMask {
    base: usize,
    pruned: Vec<bool>,
}

impl Rounding for Masks {
    type Row = RowMask;

    fn row_state(&self, _: usize) -> RowMask {
        RowMask {
            base: 0,
            pruned: vec![false; self.block],
        }
    }

    fn prepare(&self, state: &mut RowMask, j: usize, ahead: &[f32], diagonal: &[f32]) {
        let (span, zeros) = match self.target {
            RowTarget::Sparsity(s) if j.is_multiple_of(self.block) => {
                // This block's share of the row's floor(s · cols) zeros.
                let end = j + ahead.len();
                let share = (s * end as f64).floor() as usize - (s * j as f64).floor() as usize;
                (ahead.len(), share)
            }
            RowTarget::NofM { n, m } if j.is_multiple_of(m) => (m.min(ahead.len()), m - n),
            _ => return,
        };
        debug_assert!(j + span <= self.cols);
        state.base = j;
        state.pruned.iter_mut().for_each(|p| *p = false);
        let mut order: Vec<(f32, usize)> = ahead[..span]
            .iter()
            .zip(diagonal)
            .enumerate()
            .map(|(t, (w, d))| (w * w / (d * d), t))
            .collect();
        let zeros = zeros.min(span);
        if zeros > 0 {
            order.select_nth_unstable_by(zeros - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for &(_, t) in &order[..zeros] {
                state.pruned[t] = true;
            }
        }
    }

    fn decide(&self, state: &mut RowMask, j: usize, w: f32) -> f32 {
        if state.pruned[j - state.base] {
            0.0
        } else {
            w
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::obs::test_inputs::{correlated_inputs, hessian, identity, output_error, random};

    /// Per-block magnitude: in each block of 128 columns every row keeps its largest weights.
    fn block_magnitude(w: &[f32], cols: usize, s: f64) -> Vec<f32> {
        let mut out = w.to_vec();
        for row in out.chunks_mut(cols) {
            let mut start = 0;
            while start < cols {
                let end = (start + BLOCK).min(cols);
                let k = (s * end as f64).floor() as usize - (s * start as f64).floor() as usize;
                let mut idx: Vec<usize> = (start..end).collect();
                idx.sort_by(|&a, &b| row[a].abs().total_cmp(&row[b].abs()).then(a.cmp(&b)));
                idx[..k].iter().for_each(|&j| row[j] = 0.0);
                start = end;
            }
        }
        out
    }

    #[test]
    fn with_an_identity_hessian_it_is_magnitude_per_block() {
        let cols = 300;
        let w = random(8 * cols, 1);
        let mut pruned = w.clone();
        prune(
            &mut pruned,
            cols,
            &identity(cols),
            RowTarget::Sparsity(0.5),
            0.01,
        );
        assert_eq!(pruned, block_magnitude(&w, cols, 0.5));
    }

    #[test]
    fn every_row_reaches_its_sparsity_exactly_and_n_of_m_holds() {
        let cols = 256;
        let h = hessian(&random(512 * cols, 2), cols);
        for s in [0.3, 0.5, 0.77] {
            let mut w = random(16 * cols, 3);
            prune(&mut w, cols, &h, RowTarget::Sparsity(s), 0.01);
            for row in w.chunks(cols) {
                let zeros = row.iter().filter(|v| **v == 0.0).count();
                assert_eq!(zeros, (s * cols as f64).floor() as usize, "s={s}");
            }
        }
        let mut w = random(16 * cols, 4);
        prune(&mut w, cols, &h, RowTarget::NofM { n: 2, m: 4 }, 0.01);
        for g in w.chunks(4) {
            assert_eq!(g.iter().filter(|v| **v != 0.0).count(), 2, "{g:?}");
        }
    }

    #[test]
    fn it_reconstructs_better_than_magnitude_on_correlated_inputs() {
        let (cols, rows, tokens) = (64, 32, 2048);
        let (x, h) = correlated_inputs(tokens, cols, 5);
        let w = random(rows * cols, 6);
        let error = |p: &[f32]| output_error(&x, &w, p, cols);
        let mut ours = w.clone();
        prune(&mut ours, cols, &h, RowTarget::Sparsity(0.5), 0.01);
        let magnitude = block_magnitude(&w, cols, 0.5);
        let mut with_norms = w.clone();
        let squares: Vec<f64> = (0..cols).map(|j| h[j * cols + j]).collect();
        wanda::prune(&mut with_norms, cols, &squares, RowTarget::Sparsity(0.5));
        let (e_ours, e_mag, e_wanda) = (error(&ours), error(&magnitude), error(&with_norms));
        assert!(
            e_ours < e_wanda && e_wanda < e_mag,
            "{e_ours} {e_wanda} {e_mag}"
        );
    }

    #[test]
    fn a_singular_hessian_falls_back_to_magnitude_and_says_so() {
        let cols = 4;
        // Indefinite: no damping up to 10× its mean diagonal makes it positive.
        let mut h = vec![0f64; 16];
        h[1] = 100.0;
        h[4] = 100.0;
        h[0] = 1.0;
        h[5] = 1.0;
        let mut w = vec![0.1, -2.0, 0.3, 4.0];
        let out = prune(&mut w, cols, &h, RowTarget::Sparsity(0.5), 0.01);
        assert!(out.fallback.is_some_and(|f| f.contains("magnitude")));
        assert_eq!(w, vec![0.0, -2.0, 0.0, 4.0]);
    }
}
