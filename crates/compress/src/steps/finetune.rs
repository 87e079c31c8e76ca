//! `finetune`: training from the model's weights with every pruned weight held at zero.

use domain::FinetuneStep;

use crate::steps::train::train_step;
use crate::steps::{Format, StepContext, StepOutput, StepReport};
use crate::CompressError;

pub fn run(step: &FinetuneStep, cx: &mut StepContext) -> Result<StepOutput, CompressError> {
    let output = cx.output("safetensors");
    let report = train_step(
        cx.state, cx.input, &output, step, true, cx.index, cx.control,
    )?;
    Ok(StepOutput::wrote(
        output,
        Format::dense(),
        StepReport::Train(report),
    ))
}
