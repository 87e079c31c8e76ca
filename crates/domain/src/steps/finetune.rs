//! `finetune`: train the model from its current weights with every pruned weight held at zero.
//! The same recipe as `train`, less `init` (it always starts from the weights).

use serde::{Deserialize, Serialize};
use std::ops::Deref;

use super::train::{TrainStep, TrainWire};
use super::{Operation, StepNeeds};
use crate::ParseError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TrainWire", into = "TrainWire")]
pub struct FinetuneStep(pub TrainStep);

impl TryFrom<TrainWire> for FinetuneStep {
    type Error = ParseError;

    fn try_from(w: TrainWire) -> Result<Self, ParseError> {
        if w.init.is_some() {
            return Err(ParseError(
                "starts from the model's weights; init applies to train only".into(),
            ));
        }
        TrainStep::try_from(w).map(FinetuneStep)
    }
}

impl From<FinetuneStep> for TrainWire {
    fn from(s: FinetuneStep) -> Self {
        TrainWire {
            init: None,
            ..TrainWire::from(s.0)
        }
    }
}

impl Deref for FinetuneStep {
    type Target = TrainStep;

    fn deref(&self) -> &TrainStep {
        &self.0
    }
}

/// Needs what `train` needs.
impl StepNeeds for FinetuneStep {
    fn compresses(&self) -> bool {
        self.0.compresses()
    }
    fn writes_dense(&self) -> bool {
        self.0.writes_dense()
    }
    fn trains(&self) -> bool {
        self.0.trains()
    }
    fn batch_size(&self) -> usize {
        self.0.batch_size()
    }
}

impl Operation for FinetuneStep {
    const OP: &'static str = "finetune";
}
