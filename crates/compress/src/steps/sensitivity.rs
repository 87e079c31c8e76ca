//! `sensitivity`: each selected layer pruned alone at several sparsities and the model
//! measured after each; writes nothing.

use std::path::Path;
use std::time::Instant;

use crate::control::Control;
use crate::nn::evaluate::quick_accuracy;
use crate::nn::importance::solo_accuracy;
use crate::nn::state::selected;
use crate::nn::ModelState;
use crate::steps::{StepContext, StepOutput, StepReport};
use crate::CompressError;
pub use domain::results::model::LayerSensitivity;
pub use domain::results::model::SensitivityPoint;
pub use domain::results::model::SensitivityReport;
use domain::SensitivityStep;

pub fn sensitivity_step(
    state: &ModelState,
    input: &Path,
    step: &SensitivityStep,
    control: &Control,
) -> Result<SensitivityReport, CompressError> {
    let started = Instant::now();
    let net = state.load(input)?;
    let data = state.data()?;
    let names = selected(&net, &step.selection())?;
    let baseline = quick_accuracy(&net, &data.test, 512)?;
    control.add_work((names.len() * step.sparsities.len()) as u64);
    let mut layers = Vec::new();
    for name in &names {
        let original = net.values(name)?;
        let mut points = Vec::new();
        for &s in &step.sparsities {
            control.checkpoint()?;
            let accuracy = solo_accuracy(&net, name, &original, s, &data.test)?;
            points.push(SensitivityPoint {
                sparsity: s,
                accuracy,
                drop: baseline - accuracy,
            });
            control.advance(1);
        }
        layers.push(LayerSensitivity {
            tensor: name.clone(),
            parameters: original.len() as u64,
            points,
        });
    }
    Ok(SensitivityReport {
        op: "sensitivity",
        data: state.data_label.clone(),
        baseline_accuracy: baseline,
        layers,
        seconds: started.elapsed().as_secs_f64(),
    })
}

pub fn run(step: &SensitivityStep, cx: &mut StepContext) -> Result<StepOutput, CompressError> {
    let report = sensitivity_step(cx.state, cx.input, step, cx.control)?;
    Ok(StepOutput::measured(cx, StepReport::Sensitivity(report)))
}
