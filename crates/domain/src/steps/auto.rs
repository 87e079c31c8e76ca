//! The `auto` step: the smallest model within an accuracy budget, found by search.

use serde::{Deserialize, Serialize};

use super::{Operation, StepNeeds};

use super::train::{TrainStep, TrainWire};
use crate::ParseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Bytes on disk of the artifact.
    Size,
    /// CPU inference time: whole filters and neurons removed (structured pruning), so the
    /// dense kernels really do less work; the throughput at batch 256 is what is maximised.
    Latency,
}

/// How much search `auto` may spend; whichever runs out first ends it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Budget {
    #[serde(default = "default_trials")]
    pub trials: usize,
    #[serde(default = "default_seconds")]
    pub seconds: f64,
}

fn default_trials() -> usize {
    24
}
fn default_seconds() -> f64 {
    600.0
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            trials: default_trials(),
            seconds: default_seconds(),
        }
    }
}

/// The JSON form of an `auto` step.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AutoWire {
    /// Largest accuracy drop allowed against the model the step starts from (a fraction:
    /// 0.01 = one point).
    pub max_accuracy_drop: f64,
    #[serde(default = "default_objective")]
    pub objective: Objective,
    #[serde(default)]
    pub budget: Budget,
    /// k-means widths to try, widest first (default 8, 6, 5, 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits: Option<Vec<u32>>,
    /// Fine-tuning after pruning, each trial (default: SGD, lr 0.01, batch 64, 2 epochs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune: Option<TrainWire>,
    /// Size objective: when budget is left, also distil a half-width student from the model
    /// and search it the same way, against the same baseline.
    #[serde(default)]
    pub distill: bool,
}

fn default_objective() -> Objective {
    Objective::Size
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "AutoWire", into = "AutoWire")]
pub struct AutoStep {
    pub max_accuracy_drop: f64,
    pub objective: Objective,
    pub budget: Budget,
    pub bits: Vec<u32>,
    pub finetune: TrainStep,
    pub distill: bool,
}

impl TryFrom<AutoWire> for AutoStep {
    type Error = ParseError;

    fn try_from(w: AutoWire) -> Result<Self, ParseError> {
        if !(0.0..1.0).contains(&w.max_accuracy_drop) {
            return Err(ParseError(format!(
                "max_accuracy_drop is a fraction in [0, 1) (0.01 = one point), got {}",
                w.max_accuracy_drop
            )));
        }
        let trials_ok = (1..=1000).contains(&w.budget.trials);
        let seconds_ok =
            w.budget.seconds.is_finite() && w.budget.seconds > 0.0 && w.budget.seconds <= 86_400.0;
        if !(trials_ok && seconds_ok) {
            return Err(ParseError(
                "budget.trials must be 1–1000 and budget.seconds in (0, 86400]".into(),
            ));
        }
        let bits = w.bits.unwrap_or_else(|| vec![8, 6, 5, 4]);
        if bits.is_empty() || bits.len() > 7 || bits.iter().any(|b| !(2..=8).contains(b)) {
            return Err(ParseError("bits lists 1–7 k-means widths, each 2–8".into()));
        }
        let finetune = match w.finetune {
            Some(t) => TrainStep::try_from(t)?,
            None => serde_json::from_value(serde_json::json!({"epochs": 2}))
                .map_err(|e| ParseError(e.to_string()))?,
        };
        Ok(AutoStep {
            max_accuracy_drop: w.max_accuracy_drop,
            objective: w.objective,
            budget: w.budget,
            bits,
            finetune,
            distill: w.distill,
        })
    }
}

impl From<AutoStep> for AutoWire {
    fn from(s: AutoStep) -> Self {
        AutoWire {
            max_accuracy_drop: s.max_accuracy_drop,
            objective: s.objective,
            budget: s.budget,
            bits: Some(s.bits),
            finetune: Some(TrainWire::from(s.finetune)),
            distill: s.distill,
        }
    }
}

impl StepNeeds for AutoStep {
    fn writes_dense(&self) -> bool {
        false
    }
    fn trains(&self) -> bool {
        true
    }
    fn batch_size(&self) -> usize {
        self.finetune.batch_size
    }
}

impl Operation for AutoStep {
    const OP: &'static str = "auto";
}
