//! Iterative pruning schedules: reach the target over several prunes, fine-tuning after each.

use serde::{Deserialize, Serialize};

use super::train::{default_epochs, Init, OptimizerKind, TrainStep, TrainWire, MAX_EPOCHS};
use crate::ParseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Ramp {
    /// Zhu & Gupta 2017: s_t = s_f + (s_0 − s_f)(1 − t/k)³, fast early, gentle late.
    Polynomial,
    Linear,
}

/// Iterative pruning: reach the target over `steps` prunes, fine-tuning after each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    #[cfg_attr(feature = "openapi", schema(value_type = Option<TrainWire>))]
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
