//! What distillation and quantization-aware training report.

use serde::Serialize;

use super::model::TrainReport;
use super::quantize::QuantizeReport;

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelFigures {
    pub parameters: u64,
    /// On the evaluation split.
    pub accuracy: f64,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DistillReport {
    pub op: &'static str,
    pub data: String,
    pub temperature: f64,
    pub alpha: f64,
    /// Matched layers whose outputs the student imitated, and the weight of that loss.
    pub features: Vec<crate::FeaturePair>,
    pub beta: f64,
    pub teacher: ModelFigures,
    pub student: ModelFigures,
    pub student_architecture: serde_json::Value,
    /// The same student, same initialisation and budget, trained on the labels alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<ModelFigures>,
    /// Student accuracy minus baseline accuracy, in points (when there is a baseline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gain_points: Option<f64>,
    pub train: TrainReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_train: Option<TrainReport>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QatReport {
    pub op: &'static str,
    pub data: String,
    /// Accuracy of the float model the step started from.
    pub accuracy_float: f64,
    /// The same scheme applied after training (post-training quantization).
    pub accuracy_ptq: f64,
    /// After quantization-aware fine-tuning, as stored.
    pub accuracy_qat: f64,
    /// QAT minus PTQ, in points.
    pub gain_points: f64,
    pub train: TrainReport,
    /// The quantized artifact the step wrote.
    pub quantize: QuantizeReport,
    pub seconds: f64,
}
