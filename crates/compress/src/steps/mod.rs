//! One module per operation: each runs its step on the file the previous step wrote and says
//! what it wrote ([`StepOutput`]). [`run_step`] is the list; `crate::pipeline` folds a
//! pipeline through it. Adding an operation: its request type in `domain::steps`, its run in a
//! module here, one line in each list (see docs/architecture.md).

use crate::CompressError;
use domain::Step;

mod artifact;
mod auto;
mod calibrated;
mod context;
mod distill;
mod entropy;
mod evaluate;
mod export;
mod finetune;
mod prune;
mod prune_calibrated;
mod prune_model;
mod qat;
mod quantize;
mod quantize_calibrated;
mod sensitivity;
mod train;

pub use artifact::Format;
pub use context::{OutputFile, StepContext, StepOutput};
pub use distill::{DistillReport, ModelFigures};
pub use domain::results::metrics::StepReport;
pub use evaluate::EvaluateStepReport;
pub use prune_model::{CurvePoint, ModelPruneReport};
pub use qat::QatReport;
pub use sensitivity::{LayerSensitivity, SensitivityPoint, SensitivityReport};
pub use train::TrainStepReport;

/// Runs one step of a pipeline.
pub fn run_step(step: &Step, cx: &mut StepContext) -> Result<StepOutput, CompressError> {
    match step {
        Step::Prune(s) => prune::run(s, cx),
        Step::Quantize(s) => quantize::run(s, cx),
        Step::Export(s) => export::run(s, cx),
        Step::Train(s) => train::run(s, cx),
        Step::Finetune(s) => finetune::run(s, cx),
        Step::Evaluate(s) => evaluate::run(s, cx),
        Step::Sensitivity(s) => sensitivity::run(s, cx),
        Step::Entropy(s) => entropy::run(s, cx),
        Step::Distill(s) => distill::run(s, cx),
        Step::Qat(s) => qat::run(s, cx),
        Step::Auto(s) => auto::run(s, cx),
    }
}
