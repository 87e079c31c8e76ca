//! What a prune step reports: streamed magnitude pruning, in-memory pruning with its curve,
//! and structured pruning's removed units.

use serde::Serialize;

use super::model::TrainReport;
use super::tensors::{TensorDensity, TensorStats, Totals};
use crate::{Criterion, PruneMethod};

/// The outcome of one `prune` step.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// N:M patterns: `n:m` (kept of every m consecutive inputs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Calibration-based methods: what they read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationUse>,
    /// Calibration-based methods: every layer they rewrote, in the order they ran.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerReconstruction>,
}

/// The calibration text a step read.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CalibrationUse {
    /// The dataset and the part of it (its calibration split).
    pub data: String,
    pub windows: u64,
    pub tokens: u64,
    pub window: usize,
}

/// One layer of a calibration-based step, measured on the calibration inputs the compressed
/// blocks before it give it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LayerReconstruction {
    pub name: String,
    pub block: usize,
    /// 1 − ρ of the layer's weight after the step.
    pub sparsity: f64,
    /// ‖XWᵀ − XŴᵀ‖² / ‖XWᵀ‖²: how far the layer's outputs moved, relative to their size.
    pub reconstruction_error: f64,
    pub seconds: f64,
    /// Hessian methods (SparseGPT, GPTQ): the damping that made the Hessian invertible, as a
    /// fraction of its mean diagonal (more than asked when the factorisation failed first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dampening: Option<f64>,
    /// Why the layer was not rewritten the method's way (a Hessian that stayed singular),
    /// and what was done instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CurvePoint {
    pub step: usize,
    pub target_sparsity: f64,
    /// Over the selected tensors.
    pub sparsity: f64,
    pub accuracy_after_prune: Option<f64>,
    /// After fine-tuning (equal to the above without fine-tuning).
    pub accuracy: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelPruneReport {
    pub op: &'static str,
    pub method: PruneMethod,
    pub criterion: Criterion,
    /// Sparsity over the selected tensors before and after the step.
    pub sparsity_before: f64,
    pub sparsity_after: f64,
    pub curve: Vec<CurvePoint>,
    pub tensors: Vec<TensorDensity>,
    /// N:M: tensors whose row length is not a multiple of m, left alone.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub structured: Option<StructuredReport>,
    pub finetune: Vec<TrainReport>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LayerCut {
    pub layer: String,
    pub units_before: usize,
    pub units_after: usize,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StructuredReport {
    pub layers: Vec<LayerCut>,
    /// Selected layers left whole: the output layer, or layers nothing downstream reads.
    pub kept_whole: Vec<String>,
    pub parameters_before: u64,
    pub parameters_after: u64,
}
