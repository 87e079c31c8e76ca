//! `entropy`: the finished file coded as a whole with zstd (always the last step).

use domain::EntropyStep;

use crate::format::entropy::compress_file;
use crate::steps::{Format, StepContext, StepOutput, StepReport};
use crate::CompressError;

pub fn run(step: &EntropyStep, cx: &mut StepContext) -> Result<StepOutput, CompressError> {
    let output = cx.output("zst");
    let report = compress_file(cx.input, &output, step, cx.control)?;
    Ok(StepOutput::wrote(
        output,
        Format::zstd(cx.input_format),
        StepReport::Entropy(report),
    ))
}
