//! Steps that run the model on a dataset: train, finetune, evaluate, sensitivity, and the
//! training recipe that iterative pruning fine-tunes with.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::pipeline::ParseError;
use super::selection::{NamePattern, TensorSelection};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Sgd,
    Adam,
    Adamw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Start from the model's weights.
    Weights,
    /// Start from a fresh initialisation drawn with `seed` (PyTorch's default scheme).
    Architecture,
}

/// The JSON form of a training recipe (`train`, `finetune`, and a prune schedule's fine-tuning).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
fn default_epochs() -> usize {
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

/// `evaluate`: accuracy and friends on the evaluation split, compute cost, CPU latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateStep {
    /// Batch size for the throughput figure.
    #[serde(default = "default_eval_batch")]
    pub batch_size: usize,
    /// Timed runs behind each latency/throughput median.
    #[serde(default = "default_runs")]
    pub runs: usize,
}

impl Default for EvaluateStep {
    fn default() -> Self {
        EvaluateStep {
            batch_size: default_eval_batch(),
            runs: default_runs(),
        }
    }
}

impl EvaluateStep {
    pub fn check(self) -> Result<Self, ParseError> {
        if self.batch_size == 0 || self.batch_size > MAX_BATCH || !(1..=100).contains(&self.runs) {
            return Err(ParseError(format!(
                "batch_size must be 1–{MAX_BATCH} and runs 1–100"
            )));
        }
        Ok(self)
    }
}

fn default_eval_batch() -> usize {
    256
}
fn default_runs() -> usize {
    5
}

/// `sensitivity`: each prunable layer pruned alone at several sparsities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SensitivityStep {
    #[serde(default = "default_sparsities")]
    pub sparsities: Vec<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub include: Option<Vec<NamePattern>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub exclude: Vec<NamePattern>,
}

fn default_sparsities() -> Vec<f64> {
    vec![0.5, 0.7, 0.8, 0.9, 0.95, 0.99]
}

impl SensitivityStep {
    pub fn check(self) -> Result<Self, ParseError> {
        if self.sparsities.is_empty()
            || self.sparsities.len() > 32
            || self
                .sparsities
                .iter()
                .any(|s| !(s.is_finite() && (0.0..=1.0).contains(s)))
        {
            return Err(ParseError(
                "sparsities must list 1–32 fractions in [0, 1]".into(),
            ));
        }
        Ok(self)
    }

    pub fn selection(&self) -> TensorSelection {
        TensorSelection {
            include: self.include.clone(),
            exclude: self.exclude.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Ramp {
    /// Zhu & Gupta 2017: s_t = s_f + (s_0 − s_f)(1 − t/k)³, fast early, gentle late.
    Polynomial,
    Linear,
}

/// Iterative pruning: reach the target over `steps` prunes, fine-tuning after each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub steps: usize,
    #[serde(default = "default_epochs")]
    pub finetune_epochs: usize,
    #[serde(default = "default_ramp")]
    pub ramp: Ramp,
    /// The fine-tuning recipe (epochs come from `finetune_epochs`). Default: SGD, lr 0.01,
    /// momentum 0.9, batch 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<TrainWire>)]
    pub finetune: Option<TrainStep>,
}

fn default_ramp() -> Ramp {
    Ramp::Polynomial
}

impl Schedule {
    pub fn check(self) -> Result<Self, ParseError> {
        if !(1..=100).contains(&self.steps) || self.finetune_epochs > MAX_EPOCHS {
            return Err(ParseError(format!(
                "schedule.steps must be 1–100 and finetune_epochs at most {MAX_EPOCHS}"
            )));
        }
        Ok(self)
    }

    /// Sparsity to reach after step `t` of `steps` (1-based), starting from `start`.
    pub fn target_at(&self, t: usize, start: f64, end: f64) -> f64 {
        let f = t as f64 / self.steps as f64;
        match self.ramp {
            Ramp::Polynomial => end + (start - end) * (1.0 - f).powi(3),
            Ramp::Linear => start + (end - start) * f,
        }
    }

    pub fn recipe(&self) -> TrainStep {
        let mut r = self.finetune.clone().unwrap_or_else(|| {
            TrainStep::try_from(TrainWire {
                optimizer: OptimizerKind::Sgd,
                lr: None,
                momentum: None,
                batch_size: 64,
                epochs: 1,
                weight_decay: 0.0,
                l1: 0.0,
                seed: 0,
                init: None,
            })
            .expect("the default recipe is valid")
        });
        r.epochs = self.finetune_epochs;
        r.init = Init::Weights;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polynomial_ramp_starts_fast_and_ends_on_target() {
        let s = Schedule {
            steps: 4,
            finetune_epochs: 1,
            ramp: Ramp::Polynomial,
            finetune: None,
        };
        let pts: Vec<f64> = (1..=4).map(|t| s.target_at(t, 0.0, 0.9)).collect();
        assert!((pts[3] - 0.9).abs() < 1e-12);
        assert!(
            pts[0] > 0.9 / 4.0,
            "first step prunes more than linear: {pts:?}"
        );
        assert!(pts.windows(2).all(|w| w[0] < w[1]));
    }
}
