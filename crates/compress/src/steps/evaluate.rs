//! `evaluate`: the model measured on the evaluation split; writes nothing.

use std::path::Path;
use std::time::Instant;

use crate::nn::ModelState;
use crate::steps::{StepContext, StepOutput, StepReport};
use crate::CompressError;
use domain::results::metrics::TextEvaluateReport;
pub use domain::results::model::EvaluateStepReport;
use domain::EvaluateStep;

pub fn evaluate_step(
    state: &ModelState,
    input: &Path,
    opts: &EvaluateStep,
) -> Result<EvaluateStepReport, CompressError> {
    let started = Instant::now();
    let net = state.load(input)?;
    let report = state.evaluate(&net, opts)?;
    Ok(EvaluateStepReport {
        op: "evaluate",
        report,
        seconds: started.elapsed().as_secs_f64(),
    })
}

pub fn run(step: &EvaluateStep, cx: &mut StepContext) -> Result<StepOutput, CompressError> {
    if let Some(t) = &cx.state.transformer {
        let started = Instant::now();
        let fidelity = t.fidelity(&[cx.input], &step.text_protocol(), cx.control)?;
        let report = TextEvaluateReport {
            op: "evaluate",
            fidelity,
            seconds: started.elapsed().as_secs_f64(),
        };
        return Ok(StepOutput::measured(cx, StepReport::TextEvaluate(report)));
    }
    let report = evaluate_step(cx.state, cx.input, step)?;
    Ok(StepOutput::measured(cx, StepReport::Evaluate(report)))
}
