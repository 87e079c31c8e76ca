//! The `export` step: the model as a GGUF file for llama.cpp and other ggml readers.

use serde::{Deserialize, Serialize};

use super::{Operation, StepNeeds};

use crate::selection::{NamePattern, TensorSelection};

/// GGUF block types that `export` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum GgufType {
    #[serde(rename = "Q8_0")]
    Q8_0,
    #[serde(rename = "Q4_0")]
    Q4_0,
    #[serde(rename = "Q4_1")]
    Q4_1,
    #[serde(rename = "Q5_0")]
    Q5_0,
    #[serde(rename = "Q5_1")]
    Q5_1,
    #[serde(rename = "Q2_K")]
    Q2K,
    #[serde(rename = "Q3_K")]
    Q3K,
    #[serde(rename = "Q4_K")]
    Q4K,
    #[serde(rename = "Q5_K")]
    Q5K,
    #[serde(rename = "Q6_K")]
    Q6K,
}

impl GgufType {
    /// The name ggml and llama.cpp give the type (and requests use).
    pub fn name(self) -> &'static str {
        match self {
            GgufType::Q8_0 => "Q8_0",
            GgufType::Q4_0 => "Q4_0",
            GgufType::Q4_1 => "Q4_1",
            GgufType::Q5_0 => "Q5_0",
            GgufType::Q5_1 => "Q5_1",
            GgufType::Q2K => "Q2_K",
            GgufType::Q3K => "Q3_K",
            GgufType::Q4K => "Q4_K",
            GgufType::Q5K => "Q5_K",
            GgufType::Q6K => "Q6_K",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    Gguf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ExportWire", into = "ExportWire")]
pub struct ExportStep {
    pub format: ExportFormat,
    pub ggml_type: GgufType,
    pub selection: TensorSelection,
}

/// The JSON form of an `export` step.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExportWire {
    pub format: ExportFormat,
    /// Block type for selected tensors whose rows the block tiles; the others stay F32/F16.
    #[serde(rename = "type")]
    pub ggml_type: GgufType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<String>>))]
    pub include: Option<Vec<NamePattern>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub exclude: Vec<NamePattern>,
}

impl TryFrom<ExportWire> for ExportStep {
    type Error = crate::ParseError;
    fn try_from(w: ExportWire) -> Result<Self, Self::Error> {
        Ok(ExportStep {
            format: w.format,
            ggml_type: w.ggml_type,
            selection: TensorSelection::new(w.include, w.exclude)?,
        })
    }
}

impl From<ExportStep> for ExportWire {
    fn from(s: ExportStep) -> Self {
        ExportWire {
            format: s.format,
            ggml_type: s.ggml_type,
            include: s.selection.include,
            exclude: s.selection.exclude,
        }
    }
}

impl StepNeeds for ExportStep {
    fn writes_dense(&self) -> bool {
        false
    }
    fn selects(&self) -> Option<super::Selects<'_>> {
        Some(super::Selects {
            selection: &self.selection,
            scheme: None,
        })
    }
    fn needs_architecture(&self) -> bool {
        false
    }
    fn needs_dataset(&self) -> bool {
        false
    }
}

impl Operation for ExportStep {
    const OP: &'static str = "export";
}
