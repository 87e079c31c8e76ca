//! GPTQ (Frantar et al. 2023, "Accurate Post-Training Quantization for Generative Pre-trained
//! Transformers"): columns are rounded left to right to the integer grid, and each rounding
//! error, divided by the inverse Hessian factor's diagonal, is pushed onto the columns not yet
//! rounded. A group's scale and zero point are chosen when the sweep reaches the group, from
//! its values as updated so far.
//!
//! Act-order rounds the columns with the largest inputs first. Its "static groups" form keeps
//! every group's parameters those of the original weights' natural groups (chosen before the
//! sweep), so the result is an ordinary group-quantized tensor: no `g_idx` at inference.

use super::hessian::{act_order, inverse_factor, permuted, Singular};
use super::sweep::{sweep, Rounding};
use crate::quant::int::{self, IntSpec, Quantized};

/// Columns decided together before their error reaches the rest (the paper's 128).
pub const BLOCK: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GptqSpec {
    pub bits: u32,
    pub symmetric: bool,
    /// Weights per scale along a row; `cols` for one scale per output channel.
    pub group: usize,
    pub act_order: bool,
}

/// What became of one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Codes and parameters, row-major, groups in natural order.
    pub quantized: Quantized,
    /// Σ over rows of the OBS loss estimate, halved as in the paper.
    pub loss: f64,
    /// The damping used; None when round-to-nearest ran instead.
    pub dampening: Option<f64>,
    pub fallback: Option<String>,
}

/// Quantizes `w` (rows × cols, row-major): on return `w` holds the dequantized values.
pub fn quantize(w: &mut [f32], cols: usize, h: &[f64], spec: GptqSpec, dampening: f64) -> Outcome {
    assert!(cols.is_multiple_of(spec.group), "groups tile the rows");
    let rows = w.len() / cols;
    let int_spec = IntSpec {
        bits: spec.bits,
        symmetric: spec.symmetric,
        granularity: int::Granularity::Group(spec.group),
    };
    let order = if spec.act_order {
        act_order(h, cols)
    } else {
        (0..cols).collect()
    };
    let h = if spec.act_order {
        permuted(h, cols, &order)
    } else {
        h.to_vec()
    };
    let factor = match inverse_factor(&h, cols, dampening) {
        Ok(f) => f,
        Err(Singular { last_dampening }) => {
            let original = w.to_vec();
            let (q, _) = int::quantize_measured(&original, rows, cols, int_spec, Some(w));
            return Outcome {
                quantized: q,
                loss: 0.0,
                dampening: None,
                fallback: Some(format!(
                    "the Hessian stayed singular up to a damping of {last_dampening} × its mean diagonal; rounded to nearest"
                )),
            };
        }
    };
    // Columns by sweep position; dead ones (no calibration input) are zero, as in the paper.
    let mut swept: Vec<f32> = w
        .chunks(cols)
        .flat_map(|row| order.iter().map(move |&j| row[j]))
        .collect();
    for row in swept.chunks_mut(cols) {
        for (x, _) in row.iter_mut().zip(&factor.dead).filter(|(_, d)| **d) {
            *x = 0.0;
        }
    }
    let groups = cols / spec.group;
    // Static groups (act-order, or one group per row): parameters from the weights as they are.
    let fixed: Option<Vec<Vec<(f32, i32)>>> = (spec.act_order || groups == 1).then(|| {
        swept
            .chunks(cols)
            .map(|row| {
                let mut natural = vec![0f32; cols];
                for (p, &j) in order.iter().enumerate() {
                    natural[j] = row[p];
                }
                natural
                    .chunks(spec.group)
                    .map(|g| int::params_for(g, int_spec))
                    .collect()
            })
            .collect()
    });
    let rounding = Rounder {
        spec: int_spec,
        group: spec.group,
        order: &order,
        fixed: fixed.as_deref(),
        groups,
        cols,
    };
    // A group chosen during the sweep must lie inside one block.
    let block = if fixed.is_some() {
        BLOCK
    } else {
        BLOCK.div_ceil(spec.group) * spec.group
    };
    let states = sweep(&rounding, &mut swept, cols, &factor.u, block);
    let mut codes = vec![0i8; rows * cols];
    let mut scales = Vec::with_capacity(rows * groups);
    let mut zero_points = Vec::new();
    for (r, (state, _)) in states.iter().enumerate() {
        for (p, &j) in order.iter().enumerate() {
            w[r * cols + j] = swept[r * cols + p];
            codes[r * cols + j] = state.codes[p] as i8;
        }
        scales.extend(state.params.iter().map(|p| p.0));
        if !spec.symmetric {
            zero_points.extend(state.params.iter().map(|p| p.1 as i8));
        }
    }
    Outcome {
        quantized: Quantized {
            codes,
            scales,
            zero_points,
        },
        loss: states.iter().map(|(_, l)| l / 2.0).sum(),
        dampening: Some(factor.dampening),
        fallback: None,
    }
}

struct Rounder<'a> {
    spec: IntSpec,
    group: usize,
    /// Sweep position → natural column.
    order: &'a [usize],
    /// Per row, per natural group: parameters chosen before the sweep.
    fixed: Option<&'a [Vec<(f32, i32)>]>,
    groups: usize,
    cols: usize,
}

struct RowCodes {
    /// Per natural group.
    params: Vec<(f32, i32)>,
    /// By sweep position; within the spec's range.
    codes: Vec<i32>,
}

impl Rounding for Rounder<'_> {
    type Row = RowCodes;

    fn row_state(&self, row: usize) -> RowCodes {
        RowCodes {
            params: match self.fixed {
                Some(f) => f[row].clone(),
                None => vec![(0.0, 0); self.groups],
            },
            codes: vec![0; self.cols],
        }
    }

    fn prepare(&self, state: &mut RowCodes, j: usize, ahead: &[f32], _: &[f32]) {
        // Without act-order the sweep runs in natural order and a group starts every `group`.
        if self.fixed.is_none() && j.is_multiple_of(self.group) {
            state.params[j / self.group] = int::params_for(&ahead[..self.group], self.spec);
        }
    }

    fn decide(&self, state: &mut RowCodes, j: usize, w: f32) -> f32 {
        let (scale, zp) = state.params[self.order[j] / self.group];
        let (lo, hi) = self.spec.range();
        let inv = if scale == 0.0 { 0.0 } else { 1.0 / scale };
        let q = (int::round_even(w * inv) as i32 + zp).clamp(lo, hi);
        state.codes[j] = q;
        (q - zp) as f32 * scale
    }
}

#[cfg(test)]
mod tests;
