//! `train`: the training recipe (also what `finetune`, a prune schedule, `distill`, `qat` and
//! `auto` fine-tune with).

use serde::{Deserialize, Serialize};

use super::{Operation, StepNeeds};

use crate::ParseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Sgd,
    Adam,
    Adamw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Start from the model's weights.
    Weights,
    /// Start from a fresh initialisation drawn with `seed` (PyTorch's default scheme).
    Architecture,
}

/// The JSON form of a training recipe (`train`, `finetune`, and a prune schedule's fine-tuning).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TrainWire {
    #[serde(default = "default_optimizer")]
    pub optimizer: OptimizerKind,
    /// Learning rate; default 0.01 for SGD, 0.001 for Adam/AdamW.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// SGD momentum (default 0.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// L2 penalty for SGD/Adam, decoupled decay for AdamW.
    #[serde(default)]
    pub weight_decay: f64,
    /// L1 penalty on linear/conv weights: drives weights toward zero before threshold pruning.
    #[serde(default)]
    pub l1: f64,
    #[serde(default)]
    pub seed: u64,
    /// `train` only: `weights` (default) or `architecture` (fresh initialisation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<Init>,
}

fn default_optimizer() -> OptimizerKind {
    OptimizerKind::Sgd
}
fn default_batch() -> usize {
    64
}
pub(crate) fn default_epochs() -> usize {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TrainWire", into = "TrainWire")]
pub struct TrainStep {
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub momentum: f64,
    pub batch_size: usize,
    pub epochs: usize,
    pub weight_decay: f64,
    pub l1: f64,
    pub seed: u64,
    pub init: Init,
}

pub const MAX_EPOCHS: usize = 1000;
pub const MAX_BATCH: usize = 65536;

impl TryFrom<TrainWire> for TrainStep {
    type Error = ParseError;

    fn try_from(w: TrainWire) -> Result<Self, ParseError> {
        let lr = w.lr.unwrap_or(match w.optimizer {
            OptimizerKind::Sgd => 0.01,
            _ => 0.001,
        });
        let momentum = w.momentum.unwrap_or(0.9);
        if !(lr.is_finite() && lr > 0.0 && lr <= 10.0) {
            return Err(ParseError(format!("lr must be in (0, 10], got {lr}")));
        }
        if w.momentum.is_some() && w.optimizer != OptimizerKind::Sgd {
            return Err(ParseError(
                "momentum applies to sgd only (Adam has its own moment estimates)".into(),
            ));
        }
        if !(0.0..1.0).contains(&momentum) {
            return Err(ParseError(format!(
                "momentum must be in [0, 1), got {momentum}"
            )));
        }
        if w.batch_size == 0 || w.batch_size > MAX_BATCH {
            return Err(ParseError(format!(
                "batch_size must be between 1 and {MAX_BATCH}, got {}",
                w.batch_size
            )));
        }
        if w.epochs > MAX_EPOCHS {
            return Err(ParseError(format!(
                "epochs must be at most {MAX_EPOCHS}, got {}",
                w.epochs
            )));
        }
        for (v, what) in [(w.weight_decay, "weight_decay"), (w.l1, "l1")] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(ParseError(format!("{what} must be in [0, 1], got {v}")));
            }
        }
        Ok(TrainStep {
            optimizer: w.optimizer,
            lr,
            momentum: if w.optimizer == OptimizerKind::Sgd {
                momentum
            } else {
                0.0
            },
            batch_size: w.batch_size,
            epochs: w.epochs,
            weight_decay: w.weight_decay,
            l1: w.l1,
            seed: w.seed,
            init: w.init.unwrap_or(Init::Weights),
        })
    }
}

impl From<TrainStep> for TrainWire {
    fn from(s: TrainStep) -> Self {
        TrainWire {
            optimizer: s.optimizer,
            lr: Some(s.lr),
            momentum: (s.optimizer == OptimizerKind::Sgd).then_some(s.momentum),
            batch_size: s.batch_size,
            epochs: s.epochs,
            weight_decay: s.weight_decay,
            l1: s.l1,
            seed: s.seed,
            init: Some(s.init),
        }
    }
}

impl StepNeeds for TrainStep {
    fn compresses(&self) -> bool {
        false
    }
    fn writes_dense(&self) -> bool {
        true
    }
    fn trains(&self) -> bool {
        true
    }
    fn batch_size(&self) -> usize {
        self.batch_size
    }
}

impl Operation for TrainStep {
    const OP: &'static str = "train";
}
