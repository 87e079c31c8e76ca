//! What the `auto` search reports: every trial, the frontier, the winner.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Trial {
    /// A trial on the distilled student rather than the model itself.
    pub student: bool,
    pub level: f64,
    /// Objective latency: samples per second at batch 256 on this machine, and parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throughput: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<u64>,
    pub bits: u32,
    /// Sparsity per weight tensor, as applied.
    pub sparsities: Vec<(String, f64)>,
    pub overall_sparsity: f64,
    /// On the search's half of the evaluation split.
    pub validation_accuracy: f64,
    /// On the held-out half, which the search never saw; measured for the trials that were
    /// candidates to win (within budget on validation, and not larger than a verified winner).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holdout_accuracy: Option<f64>,
    pub bytes: u64,
    pub compression_ratio: f64,
    /// Within the accuracy budget on the validation half.
    pub within_budget: bool,
    /// No other accepted trial is both at least as good on the objective (smaller, or faster)
    /// and at least as accurate. Accepted: within budget on validation and not refused on the
    /// held-out half; so the winner is always on the frontier.
    pub on_frontier: bool,
    /// Why this trial did not win, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Winner {
    pub trial: usize,
    /// Re-measured on the held-out half of the evaluation split.
    pub test_accuracy: f64,
    /// baseline_test_accuracy − test_accuracy.
    pub test_accuracy_drop: f64,
    pub bytes: u64,
    pub compression_ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AutoReport {
    pub op: &'static str,
    pub objective: &'static str,
    pub max_accuracy_drop: f64,
    pub data: String,
    /// The search measures trials on the first half of the evaluation split…
    pub validation_samples: usize,
    /// …and verifies candidates on the second half, which it never saw.
    pub holdout_samples: usize,
    pub baseline_validation_accuracy: f64,
    /// The model the step started from, on the held-out half.
    pub baseline_test_accuracy: f64,
    /// All parameters as f32: what the ratio divides.
    pub dense_f32_bytes: u64,
    /// Per weight tensor: (sparsity, validation accuracy drop) pruned alone.
    pub sensitivity: Vec<(String, Vec<(f64, f64)>)>,
    pub trials: Vec<Trial>,
    pub winner: Option<Winner>,
    pub trials_used: usize,
    pub seconds_used: f64,
    pub budget_exhausted: bool,
    pub note: String,
    pub seconds: f64,
}
