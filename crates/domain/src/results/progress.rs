//! What a running job says it is doing, beside its progress fraction: the step, and where
//! training, a pruning schedule or a search has got to. Every field is optional; each kind of
//! work fills in its own.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProgressDetail {
    /// The step's position in the pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// Training: the epoch just finished, of `epochs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_loss: Option<f64>,
    /// On the evaluation split, after the epoch, round or trial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// A pruning schedule: the round, of `rounds`, and the sparsity reached or aimed at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounds: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparsity: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_sparsity: Option<f64>,
    /// `distill`: the label-only baseline student is training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<bool>,
    /// `auto`: the student is being distilled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distilling: Option<bool>,
    /// `auto`: the trial, its width in bits, its pruning level and what it measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<String>,
    /// `auto` for latency: the fraction of units removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// Calibrated methods on a transformer: the block just finished, of `blocks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<usize>,
}

impl ProgressDetail {
    /// The detail of step `step`, operation `op`.
    pub fn step(step: usize, op: &str) -> Self {
        ProgressDetail {
            step: Some(step),
            op: Some(op.to_owned()),
            ..Default::default()
        }
    }

    /// Work of operation `op` that is not tied to a step index.
    pub fn op(op: &str) -> Self {
        ProgressDetail {
            op: Some(op.to_owned()),
            ..Default::default()
        }
    }
}
