//! What the steps that store weights in fewer bits report: quantize, export (GGUF), entropy.

use serde::Serialize;

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
