//! What the calibration pass records about every linear layer's input, and how far a
//! rewritten layer's outputs moved: the two observers of the block driver.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{Tensor, TensorId};

use crate::transformer::nn_error;
use crate::transformer::observer::Observer;
use crate::CompressError;

/// What a layer's input looked like over the calibration tokens.
#[derive(Debug, Clone, Default)]
pub struct InputStats {
    /// Σ x_j² per input column j.
    pub column_squares: Vec<f64>,
    /// Σ |x_j| per input column j.
    pub column_abs: Vec<f64>,
    /// Tokens (rows of input) seen.
    pub tokens: u64,
    /// H = Σ xᵀx (in × in, row-major), when asked for; layers that read the same input (q, k
    /// and v; gate and up) share one.
    pub hessian: Option<Arc<Vec<f64>>>,
}

impl InputStats {
    /// Mean |x_j| per column (AWQ's activation scale).
    pub fn mean_abs(&self) -> Vec<f64> {
        let n = self.tokens.max(1) as f64;
        self.column_abs.iter().map(|a| a / n).collect()
    }

    /// The statistics of the input `x / s` (columns divided by `s`), when the layer's
    /// preceding operation is rescaled by 1/s.
    pub fn divided_by(&self, s: &[f32]) -> InputStats {
        let n = s.len();
        InputStats {
            column_squares: self
                .column_squares
                .iter()
                .zip(s)
                .map(|(q, s)| q / f64::from(s * s))
                .collect(),
            column_abs: self
                .column_abs
                .iter()
                .zip(s)
                .map(|(a, s)| a / f64::from(*s))
                .collect(),
            tokens: self.tokens,
            hessian: self.hessian.as_ref().map(|h| {
                Arc::new(
                    h.iter()
                        .enumerate()
                        .map(|(k, v)| v / (f64::from(s[k / n]) * f64::from(s[k % n])))
                        .collect(),
                )
            }),
        }
    }
}

/// Collects `InputStats` of every linear layer; the Hessian is computed once per distinct
/// input tensor and shared by the layers that read it.
#[derive(Default)]
pub struct Collector {
    pub hessians: bool,
    pub stats: HashMap<String, InputStats>,
    /// Layer → the layer whose Hessian it shares.
    owners: HashMap<String, String>,
    sums: HashMap<String, Vec<f64>>,
    last: Option<(TensorId, String)>,
    pub failed: Option<CompressError>,
}

impl Collector {
    pub fn new(hessians: bool) -> Collector {
        Collector {
            hessians,
            ..Collector::default()
        }
    }

    /// The statistics by layer, Hessians attached.
    pub fn finish(self) -> Result<HashMap<String, InputStats>, CompressError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let shared: HashMap<String, Arc<Vec<f64>>> = self
            .sums
            .into_iter()
            .map(|(owner, h)| (owner, Arc::new(h)))
            .collect();
        let mut stats = self.stats;
        for (layer, s) in stats.iter_mut() {
            if let Some(owner) = self.owners.get(layer) {
                s.hessian = shared.get(owner).cloned();
            }
        }
        Ok(stats)
    }

    fn add(&mut self, weight: &str, input: &Tensor) -> Result<(), CompressError> {
        let e = nn_error;
        let (rows, cols) = input.dims2().map_err(e)?;
        let column_sums = |t: candle_core::Result<Tensor>| {
            t.and_then(|t| t.sum(0))
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(e)
        };
        let squares = column_sums(input.sqr())?;
        let abs = column_sums(input.abs())?;
        let entry = self
            .stats
            .entry(weight.to_owned())
            .or_insert_with(|| InputStats {
                column_squares: vec![0.0; squares.len()],
                column_abs: vec![0.0; abs.len()],
                ..InputStats::default()
            });
        entry
            .column_squares
            .iter_mut()
            .zip(&squares)
            .for_each(|(a, s)| *a += f64::from(*s));
        entry
            .column_abs
            .iter_mut()
            .zip(&abs)
            .for_each(|(a, s)| *a += f64::from(*s));
        entry.tokens += rows as u64;
        if !self.hessians {
            return Ok(());
        }
        match &self.last {
            Some((id, owner)) if *id == input.id() => {
                self.owners.insert(weight.to_owned(), owner.clone());
            }
            _ => {
                let owner = self
                    .owners
                    .get(weight)
                    .cloned()
                    .unwrap_or_else(|| weight.to_owned());
                if !self.sums.contains_key(&owner) {
                    self.reserve(weight, cols)?;
                }
                let product = input
                    .t()
                    .and_then(|t| t.matmul(input))
                    .and_then(|p| p.flatten_all())
                    .and_then(|p| p.to_vec1::<f32>())
                    .map_err(e)?;
                let sum = self
                    .sums
                    .entry(owner.clone())
                    .or_insert_with(|| vec![0.0; product.len()]);
                sum.iter_mut()
                    .zip(&product)
                    .for_each(|(a, p)| *a += f64::from(*p));
                self.owners.insert(weight.to_owned(), owner.clone());
                self.last = Some((input.id(), owner));
            }
        }
        Ok(())
    }
}

impl Collector {
    /// Refuses, before it is made, a Hessian the job's memory budget cannot hold beside those
    /// of the block's other inputs (f64, and the f32 product it is summed from).
    fn reserve(&self, weight: &str, cols: usize) -> Result<(), CompressError> {
        let held: u64 = self.sums.values().map(|h| h.len() as u64 * 8).sum();
        let needed = (cols as u64).saturating_mul(cols as u64).saturating_mul(12);
        crate::budget::check(
            &format!("the input Hessian of {weight} ({cols} × {cols}, f64)"),
            held.saturating_add(needed),
        )
    }
}

impl Observer for Collector {
    fn linear_input(&mut self, weight: &str, input: &Tensor) {
        if self.failed.is_none() {
            if let Err(e) = self.add(weight, input) {
                self.failed = Some(e);
            }
        }
    }
}

/// ‖X(W − Ŵ)ᵀ‖² and ‖XWᵀ‖² per rewritten layer, on the inputs the rewritten model gives it
/// (`originals`: W and W − Ŵ by name).
pub struct Reconstruction<'a> {
    pub originals: &'a HashMap<String, (Tensor, Tensor)>,
    pub sums: HashMap<String, (f64, f64)>,
    pub failed: Option<CompressError>,
}

impl Observer for Reconstruction<'_> {
    fn linear_input(&mut self, weight: &str, input: &Tensor) {
        let Some((original, delta)) = self.originals.get(weight) else {
            return;
        };
        let squared = |w: &Tensor| -> candle_core::Result<f64> {
            let y = input.matmul(&w.t()?)?;
            Ok(y.sqr()?.sum_all()?.to_scalar::<f32>()? as f64)
        };
        match squared(delta).and_then(|m| Ok((m, squared(original)?))) {
            Ok((moved, total)) => {
                let sums = self.sums.entry(weight.to_owned()).or_default();
                sums.0 += moved;
                sums.1 += total;
            }
            Err(e) => self.failed = Some(nn_error(e)),
        }
    }
}
