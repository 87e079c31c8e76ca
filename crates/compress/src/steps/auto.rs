//! `auto`: a search for the smallest (or fastest) model within an accuracy budget
//! (crate::nn::auto does the search); the winner, when there is one, is the job's model.

use domain::{AutoStep, Objective};

use super::{Format, StepContext, StepOutput, StepReport};
use crate::nn::auto::{auto_latency, auto_step};
use crate::CompressError;

pub fn run(step: &AutoStep, cx: &mut StepContext) -> Result<StepOutput, CompressError> {
    let output = cx.output("safetensors");
    let state = &mut *cx.state;
    let (Some(arch), Some(data)) = (&state.arch, &state.data) else {
        return Err(CompressError::InvalidRequest(
            "auto needs a model architecture and a dataset".into(),
        ));
    };
    let (report, arch) = match step.objective {
        Objective::Size => auto_step(
            arch,
            data,
            &state.data_label,
            cx.input,
            &output,
            cx.workdir,
            step,
            cx.control,
        )?,
        Objective::Latency => auto_latency(
            arch,
            data,
            &state.data_label,
            cx.input,
            &output,
            step,
            cx.control,
        )?,
    };
    if arch.is_some() {
        state.arch = arch;
    }
    // The size search's winner is written as zstd-coded sparse k-means codes; the latency
    // search's (or no winner) as a dense model.
    let format = if report.winner.is_some() && step.objective == Objective::Size {
        Format::zstd(&Format {
            description: "safetensors with bitmask-v1 sparse k-means codes (the winner of auto)"
                .into(),
            ..Format::sparse()
        })
    } else {
        Format::dense()
    };
    Ok(StepOutput::wrote(output, format, StepReport::Auto(report)))
}
