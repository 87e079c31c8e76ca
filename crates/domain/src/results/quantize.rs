//! What the steps that store weights in fewer bits report: quantize, export (GGUF), entropy.

use serde::Serialize;

use super::prune::{CalibrationUse, LayerReconstruction};
use super::tensors::ErrorStats;
use crate::{GgufType, Storage};

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QuantTensorStats {
    pub name: String,
    pub dtype_before: &'static str,
    pub quantized: bool,
    pub parameters: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub bits_per_weight: f64,
    pub compression_ratio: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codebook_size: Option<usize>,
    pub overflowed: u64,
    pub flushed_to_zero: u64,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QuantizeReport {
    pub op: &'static str,
    pub scheme: serde_json::Value,
    pub store: Storage,
    pub quantized_tensors: u64,
    pub parameters: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub bits_per_weight: f64,
    pub compression_ratio: f64,
    /// Error over all quantized weights together.
    pub error: ErrorStats,
    pub file_bytes_before: u64,
    pub file_bytes_after: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dequantized_file_bytes: Option<u64>,
    pub tensors: Vec<QuantTensorStats>,
    pub seconds: f64,
    /// Calibrated methods: the calibration text read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationUse>,
    /// Calibrated methods: every layer they rounded, in the order they ran, with how far its
    /// outputs moved on the calibration inputs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerReconstruction>,
    /// AWQ: the scales searched for each pair, and the output error they leave.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scaled: Vec<ScaledPair>,
}

/// One AWQ pair: the operation whose output channels were divided by the scales (a norm or a
/// layer) and what the scales did to the following layers' output error on the calibration
/// inputs (Σ‖X(W − Ŵ)ᵀ‖², before and after; round to nearest).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScaledPair {
    pub before: String,
    pub block: usize,
    /// The exponent α of the scales x̄^α / w̄^(1−α); null when no scales beat none.
    pub ratio: Option<f64>,
    pub error_before: f64,
    pub error_after: f64,
    pub scale_min: f32,
    pub scale_max: f32,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GgufTensorStats {
    pub name: String,
    pub stored_as: String,
    pub parameters: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub bits_per_weight: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorStats>,
    /// Why a tensor was not block-quantized.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_because: Option<String>,
    /// Whether the blocks' search was weighted by the importance matrix.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub imatrix: bool,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GgufReport {
    pub op: &'static str,
    pub format: &'static str,
    #[serde(rename = "type")]
    pub ggml_type: GgufType,
    pub quantized_tensors: u64,
    /// Tensors left in F32/F16 (or their integer type), with the reason.
    pub kept_tensors: Vec<String>,
    /// Tensors GGUF has no type for, left out of the file.
    pub skipped_tensors: Vec<String>,
    pub bits_per_weight: f64,
    pub error: ErrorStats,
    pub file_bytes_before: u64,
    pub file_bytes_after: u64,
    pub compression_ratio: f64,
    pub tensors: Vec<GgufTensorStats>,
    pub seconds: f64,
    /// With `imatrix`: the calibration text the importance matrix was computed on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<super::prune::CalibrationUse>,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EntropyReport {
    pub op: &'static str,
    pub codec: &'static str,
    pub level: i32,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub compression_ratio: f64,
    /// Bits per byte of the input: 8 / ratio.
    pub bits_per_input_byte: f64,
    pub seconds: f64,
}
