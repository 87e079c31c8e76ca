//! What a step did, in numbers a user can check: per tensor and for the whole model.

use serde::Serialize;

use super::safetensors_index::TensorEntry;

#[derive(Debug, Clone, Serialize)]
pub struct TensorStats {
    pub name: String,
    pub dtype: &'static str,
    pub shape: Vec<u64>,
    /// Whether this step selected the tensor for pruning.
    pub pruned: bool,
    pub parameters: u64,
    pub nonzero_before: u64,
    pub nonzero_after: u64,
    /// ρ = non-zeros / parameters.
    pub density_before: f64,
    pub density_after: f64,
    /// 1 − ρ.
    pub sparsity_before: f64,
    pub sparsity_after: f64,
}

impl TensorStats {
    pub fn new(t: &TensorEntry, pruned: bool, nonzero_before: u64, nonzero_after: u64) -> Self {
        let n = t.numel();
        TensorStats {
            name: t.name.clone(),
            dtype: t.dtype.name(),
            shape: t.shape.clone(),
            pruned,
            parameters: n,
            nonzero_before,
            nonzero_after,
            density_before: density(nonzero_before, n),
            density_after: density(nonzero_after, n),
            sparsity_before: sparsity(nonzero_before, n),
            sparsity_after: sparsity(nonzero_after, n),
        }
    }
}

/// Sums over a set of tensors.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Totals {
    pub tensors: u64,
    pub parameters: u64,
    pub nonzero_before: u64,
    pub nonzero_after: u64,
    pub density_before: f64,
    pub density_after: f64,
    pub sparsity_before: f64,
    pub sparsity_after: f64,
}

impl Totals {
    pub fn of<'a>(stats: impl IntoIterator<Item = &'a TensorStats>) -> Self {
        let (mut tensors, mut n, mut before, mut after) = (0, 0, 0, 0);
        for s in stats {
            tensors += 1;
            n += s.parameters;
            before += s.nonzero_before;
            after += s.nonzero_after;
        }
        Totals {
            tensors,
            parameters: n,
            nonzero_before: before,
            nonzero_after: after,
            density_before: density(before, n),
            density_after: density(after, n),
            sparsity_before: sparsity(before, n),
            sparsity_after: sparsity(after, n),
        }
    }
}

/// ρ = non-zeros / parameters; an empty tensor counts as dense.
fn density(nonzero: u64, n: u64) -> f64 {
    if n == 0 {
        1.0
    } else {
        nonzero as f64 / n as f64
    }
}

/// 1 − ρ, computed from the zero count so that it is exact where ρ is.
fn sparsity(nonzero: u64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        (n - nonzero) as f64 / n as f64
    }
}

/// The outcome of one `prune` step.
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub op: &'static str,
    pub method: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_sparsity: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// With a global sparsity target: the magnitude at which the cut fell (every selected
    /// weight below it is zero, and as many equal to it as the target needs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cut_magnitude: Option<f32>,
    /// The tensors this step selected.
    pub selected: Totals,
    /// Every tensor in the model.
    pub model: Totals,
    pub tensors: Vec<TensorStats>,
    pub file_bytes_before: u64,
    pub file_bytes_after: u64,
    pub seconds: f64,
}
