//! What the steps that run the model report: an evaluation, a training run, a sensitivity scan.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClassReport {
    pub class: usize,
    pub support: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Cost {
    pub parameters: u64,
    pub nonzero_parameters: u64,
    /// Multiply-accumulates of linear and conv layers for one sample.
    pub macs_dense: u64,
    /// The same, counting only non-zero weights (what a sparse kernel would do).
    pub macs_nonzero: u64,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Speed {
    /// Median over `runs` timed passes of one sample, after a warm-up.
    pub latency_ms_batch1: f64,
    pub throughput_batch: usize,
    /// Median over `runs` timed passes of one batch.
    pub throughput_samples_per_second: f64,
    pub runs: usize,
    pub threads: usize,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EvalReport {
    /// Which data the figures come from.
    pub data: String,
    pub samples: u64,
    pub accuracy: f64,
    pub precision_macro: f64,
    pub recall_macro: f64,
    pub f1_macro: f64,
    pub mean_loss: f64,
    pub per_class: Vec<ClassReport>,
    /// rows: true class, columns: predicted class; empty above 256 classes (it grows with the
    /// square of the classes; `per_class` has every class's figures).
    pub confusion_matrix: Vec<Vec<u64>>,
    pub cost: Cost,
    pub speed: Speed,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EpochReport {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    /// On the evaluation split.
    pub eval_accuracy: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrainReport {
    pub epochs: Vec<EpochReport>,
    pub samples_per_second: f64,
    pub seconds: f64,
    pub masked_tensors: usize,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrainStepReport {
    pub op: &'static str,
    #[serde(flatten)]
    pub train: TrainReport,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EvaluateStepReport {
    pub op: &'static str,
    #[serde(flatten)]
    pub report: EvalReport,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SensitivityPoint {
    pub sparsity: f64,
    pub accuracy: f64,
    /// Baseline accuracy minus this one.
    pub drop: f64,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LayerSensitivity {
    pub tensor: String,
    pub parameters: u64,
    pub points: Vec<SensitivityPoint>,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SensitivityReport {
    pub op: &'static str,
    pub data: String,
    pub baseline_accuracy: f64,
    pub layers: Vec<LayerSensitivity>,
    pub seconds: f64,
}
