//! `evaluate`: accuracy and friends on the evaluation split, compute cost, CPU latency.

use serde::{Deserialize, Serialize};

use super::{Operation, StepNeeds};

use super::train::MAX_BATCH;
use crate::ParseError;

/// `evaluate`: accuracy and friends on the evaluation split, compute cost, CPU latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

fn default_eval_batch() -> usize {
    256
}
fn default_runs() -> usize {
    5
}

impl StepNeeds for EvaluateStep {
    fn compresses(&self) -> bool {
        false
    }
    fn writes_dense(&self) -> bool {
        true
    }
    fn batch_size(&self) -> usize {
        self.batch_size
    }
}

impl Operation for EvaluateStep {
    const OP: &'static str = "evaluate";

    fn check(self) -> Result<Self, ParseError> {
        if self.batch_size == 0 || self.batch_size > MAX_BATCH || !(1..=100).contains(&self.runs) {
            return Err(ParseError(format!(
                "batch_size must be 1–{MAX_BATCH} and runs 1–100"
            )));
        }
        Ok(self)
    }
}
