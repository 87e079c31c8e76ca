//! `train`: the model trained on the dataset's training split, from its weights or from a
//! fresh initialisation.

use domain::results::ProgressDetail;
use std::path::Path;

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::control::Control;
use crate::nn::network::Network;
use crate::nn::train::{masks_of, train, TrainContext};
use crate::nn::ModelState;
use crate::steps::{Format, StepContext, StepOutput, StepReport};
use crate::CompressError;
pub use domain::results::model::TrainStepReport;
use domain::{Init, TrainStep};

pub fn train_step(
    state: &ModelState,
    input: &Path,
    output: &Path,
    recipe: &TrainStep,
    finetune: bool,
    index: usize,
    control: &Control,
) -> Result<TrainStepReport, CompressError> {
    let data = state.data()?;
    let net = if recipe.init == Init::Architecture {
        let mut rng = StdRng::seed_from_u64(recipe.seed);
        let mut fresh = Network::initialise(state.arch()?, &mut rng)?;
        fresh.metadata = state.load(input)?.metadata;
        fresh
    } else {
        state.load(input)?
    };
    let masks = if finetune {
        Some(masks_of(&net, &net.weight_names())?)
    } else {
        None
    };
    let op = if finetune { "finetune" } else { "train" };
    let ctx = TrainContext::on_labels(control, ProgressDetail::step(index, op));
    let report = train(&net, data, recipe, masks.as_ref(), None, &ctx)?;
    net.save(output)?;
    Ok(TrainStepReport { op, train: report })
}

pub fn run(step: &TrainStep, cx: &mut StepContext) -> Result<StepOutput, CompressError> {
    let output = cx.output("safetensors");
    let report = train_step(
        cx.state, cx.input, &output, step, false, cx.index, cx.control,
    )?;
    Ok(StepOutput::wrote(
        output,
        Format::dense(),
        StepReport::Train(report),
    ))
}
