//! `auto`: a search for the smallest (or fastest) model within an accuracy budget
//! (crate::nn::auto does the search); the winner, when there is one, is the job's model.

use domain::{AutoStep, Objective};

use crate::nn::auto::{auto_latency, auto_step, AutoInput};
use crate::steps::{Format, StepContext, StepOutput, StepReport};
use crate::CompressError;

pub fn run(step: &AutoStep, cx: &mut StepContext) -> Result<StepOutput, CompressError> {
    let output = cx.output("safetensors");
    let state = &mut *cx.state;
    let (Some(arch), Some(data)) = (&state.arch, &state.data) else {
        return Err(CompressError::InvalidRequest(
            "auto needs a model architecture and a dataset".into(),
        ));
    };
    let input = AutoInput {
        arch,
        data,
        data_label: &state.data_label,
        input: cx.input,
        output: &output,
        workdir: cx.workdir,
        step,
        control: cx.control,
    };
    let (report, arch) = match step.objective {
        Objective::Size => auto_step(&input)?,
        Objective::Latency => auto_latency(&input)?,
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
