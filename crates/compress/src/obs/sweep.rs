//! The column sweep SparseGPT and GPTQ share (Frantar & Alistarh 2022, 2023): columns are
//! decided left to right; each decision's error, divided by the inverse Hessian's Cholesky
//! diagonal, is pushed onto the columns not yet decided so that they compensate for it. Within
//! a block of columns the update is applied at once per row; the block's accumulated errors
//! reach the columns after it as one matrix product (the "lazy batch" update).
//!
//! With the inverse Hessian shared, every row is independent: rows run on every core and each
//! keeps its own state (a mask, its groups' scales).

use std::ops::Range;

use rayon::prelude::*;

use super::linalg::sub_matmul;

/// What a method decides per weight.
pub trait Rounding: Sync {
    /// Per-row state (a mask, the scales chosen so far).
    type Row: Send;

    fn row_state(&self, row: usize) -> Self::Row;

    /// Called before column `j` is decided, with the row's current values for `ahead` (from
    /// `j` to the end of the block) and the inverse Hessian factor's diagonal over the same
    /// columns: where a method chooses its mask or its group's parameters.
    fn prepare(&self, state: &mut Self::Row, j: usize, ahead: &[f32], diagonal: &[f32]);

    /// The value column `j` of this row takes (its current value is `w`).
    fn decide(&self, state: &mut Self::Row, j: usize, w: f32) -> f32;
}

/// Runs the sweep over `w` (rows × cols, row-major, changed in place) with `u`, the upper
/// Cholesky factor of the damped inverse Hessian (cols × cols, row-major). Returns each row's
/// state and its loss Σ (w − q)² / u_jj² (the OBS estimate of the output error it costs).
pub fn sweep<M: Rounding>(
    method: &M,
    w: &mut [f32],
    cols: usize,
    u: &[f32],
    block: usize,
) -> Vec<(M::Row, f64)> {
    assert_eq!(u.len(), cols * cols, "a square factor");
    assert!(cols > 0 && w.len().is_multiple_of(cols), "whole rows");
    let rows = w.len() / cols;
    let diagonal: Vec<f32> = (0..cols).map(|j| u[j * cols + j]).collect();
    let mut states: Vec<(M::Row, f64)> = (0..rows).map(|r| (method.row_state(r), 0.0)).collect();
    let block = block.max(1);
    let mut errors = vec![0f32; rows * block];
    let mut start = 0;
    while start < cols {
        let span = start..(start + block).min(cols);
        let width = span.len();
        w.par_chunks_mut(cols)
            .zip(errors.par_chunks_mut(block))
            .zip(states.par_iter_mut())
            .for_each(|((row, err), (state, loss))| {
                *loss += sweep_block(
                    method,
                    state,
                    row,
                    &mut err[..width],
                    span.clone(),
                    u,
                    cols,
                    &diagonal,
                );
            });
        if span.end < cols {
            // W[:, end..] −= E · U[span, end..]
            let rest = cols - span.end;
            sub_matmul(
                &mut w[span.end..],
                cols,
                &errors,
                block,
                &u[span.start * cols + span.end..],
                cols,
                rows,
                rest,
                width,
            );
        }
        start = span.end;
    }
    states
}

/// One row through one block of columns; returns the row's loss over the block.
#[allow(clippy::too_many_arguments)]
fn sweep_block<M: Rounding>(
    method: &M,
    state: &mut M::Row,
    row: &mut [f32],
    err: &mut [f32],
    span: Range<usize>,
    u: &[f32],
    cols: usize,
    diagonal: &[f32],
) -> f64 {
    let mut loss = 0.0;
    for j in span.clone() {
        method.prepare(state, j, &row[j..span.end], &diagonal[j..span.end]);
        let w = row[j];
        let q = method.decide(state, j, w);
        let d = diagonal[j];
        let e = (w - q) / d;
        loss += f64::from(e) * f64::from(e);
        row[j] = q;
        let factor = &u[j * cols + j + 1..j * cols + span.end];
        for (x, f) in row[j + 1..span.end].iter_mut().zip(factor) {
            *x -= e * f;
        }
        err[j - span.start] = e;
    }
    loss
}
