//! The `qat` step: quantization-aware fine-tuning, then the quantized artifact.

use serde::{Deserialize, Serialize};

use super::{Operation, StepNeeds};

use super::quantize::{QuantizeStep, QuantizeWire, Scheme};
use super::train::{TrainStep, TrainWire};
use crate::ParseError;

/// The JSON form of a `qat` step.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QatWire {
    /// The scheme trained for and then applied, as in a `quantize` step: `int8` or `int4`.
    pub quantize: QuantizeWire,
    /// The fine-tuning recipe (default: SGD, lr 0.01, momentum 0.9, batch 64, 1 epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<TrainWire>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "QatWire", into = "QatWire")]
pub struct QatStep {
    pub quantize: QuantizeStep,
    pub train: TrainStep,
}

impl TryFrom<QatWire> for QatStep {
    type Error = ParseError;

    fn try_from(w: QatWire) -> Result<Self, ParseError> {
        let quantize = QuantizeStep::try_from(w.quantize)?;
        if !matches!(quantize.scheme, Scheme::Int8 { .. } | Scheme::Int4 { .. }) {
            return Err(ParseError(
                "qat trains for the int8 and int4 schemes; use quantize for the others".into(),
            ));
        }
        let train = match w.train {
            Some(t) => TrainStep::try_from(t)?,
            None => serde_json::from_value(serde_json::json!({}))
                .map_err(|e| ParseError(e.to_string()))?,
        };
        Ok(QatStep { quantize, train })
    }
}

impl From<QatStep> for QatWire {
    fn from(s: QatStep) -> Self {
        QatWire {
            quantize: QuantizeWire::from(s.quantize),
            train: Some(TrainWire::from(s.train)),
        }
    }
}

impl StepNeeds for QatStep {
    fn writes_dense(&self) -> bool {
        false
    }
    fn trains(&self) -> bool {
        true
    }
    fn batch_size(&self) -> usize {
        self.train.batch_size
    }
    fn selects(&self) -> Option<super::Selects<'_>> {
        self.quantize.selects()
    }
}

impl Operation for QatStep {
    const OP: &'static str = "qat";
}
