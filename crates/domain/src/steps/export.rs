//! The `export` step: the model as a GGUF file for llama.cpp and other ggml readers.

use serde::{Deserialize, Serialize};

use super::calibration::{Calibration, CalibrationWire};
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
    /// Half precision: a transformer's 2-D weights in F16, the rest F32 (llama.cpp's converter
    /// with --outtype f16).
    F16,
    /// llama.cpp's Q4_K_M mixture: Q4_K, with attn_v and ffn_down in Q6_K in the layers
    /// llama.cpp gives more bits (transformer models; otherwise as Q4_K).
    #[serde(rename = "Q4_K_M")]
    Q4KM,
    /// llama.cpp's Q5_K_M mixture: Q5_K, with attn_v and ffn_down in Q6_K where llama.cpp puts
    /// them (transformer models; otherwise as Q5_K).
    #[serde(rename = "Q5_K_M")]
    Q5KM,
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
            GgufType::F16 => "F16",
            GgufType::Q4KM => "Q4_K_M",
            GgufType::Q5KM => "Q5_K_M",
        }
    }

    /// The block type a mixture is made of mostly (itself for the plain types).
    pub fn block(self) -> GgufType {
        match self {
            GgufType::Q4KM => GgufType::Q4K,
            GgufType::Q5KM => GgufType::Q5K,
            other => other,
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
    /// Weight each block's scale search by an importance matrix (llama.cpp's imatrix) made on
    /// the calibration split.
    pub imatrix: bool,
    pub calibration: Calibration,
}

impl GgufType {
    /// Whether llama-quantize's importance-weighted search exists for every type the choice
    /// can put a block linear in (Q2_K and Q3_K, and their fallbacks, are left out).
    pub fn takes_imatrix(self) -> bool {
        matches!(
            self,
            GgufType::Q4_0
                | GgufType::Q4_1
                | GgufType::Q5_0
                | GgufType::Q5_1
                | GgufType::Q4K
                | GgufType::Q5K
                | GgufType::Q6K
                | GgufType::Q4KM
                | GgufType::Q5KM
        )
    }
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
    /// Transformers with a text dataset: an importance matrix (llama.cpp's imatrix: mean x² of
    /// every block linear's input columns over the calibration split) weights the blocks'
    /// scale search, as `llama-quantize --imatrix` does; the matrix comes back too, in
    /// llama.cpp's GGUF imatrix format. Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K and the
    /// Q4_K_M/Q5_K_M mixtures.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub imatrix: bool,
    /// With `imatrix`: calibration tokens read and their window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationWire>,
}

impl TryFrom<ExportWire> for ExportStep {
    type Error = crate::ParseError;
    fn try_from(w: ExportWire) -> Result<Self, Self::Error> {
        if w.imatrix && !w.ggml_type.takes_imatrix() {
            return Err(crate::ParseError(format!(
                "imatrix weights the search of Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, Q4_K_M and Q5_K_M; {} does not use one",
                w.ggml_type.name()
            )));
        }
        if w.calibration.is_some() && !w.imatrix {
            return Err(crate::ParseError(
                "calibration applies to an export with imatrix: true".into(),
            ));
        }
        Ok(ExportStep {
            format: w.format,
            ggml_type: w.ggml_type,
            selection: TensorSelection::new(w.include, w.exclude)?,
            imatrix: w.imatrix,
            calibration: w
                .calibration
                .map(Calibration::try_from)
                .transpose()?
                .unwrap_or_default(),
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
            imatrix: s.imatrix,
            calibration: s.imatrix.then(|| s.calibration.into()),
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
    fn calibrates(&self) -> Option<&'static str> {
        self.imatrix.then_some("imatrix")
    }
}

impl Operation for ExportStep {
    const OP: &'static str = "export";
}
