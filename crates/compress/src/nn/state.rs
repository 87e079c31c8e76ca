//! The job's model state that steps share: its architecture (which structured pruning and
//! distillation may change) and dataset, and helpers over the weights a step selects.

use std::path::Path;

use crate::nn::data::Dataset;
use crate::nn::evaluate::{evaluate, EvalReport};
use crate::nn::network::Network;
use crate::CompressError;
pub use domain::results::tensors::TensorDensity;
use domain::{Architecture, EvaluateStep, TensorSelection};

/// The architecture (which structured pruning may change) and dataset a job runs with; for a
/// transformer, its config, tokenizer and evaluation text.
pub struct ModelState {
    pub arch: Option<Architecture>,
    pub data: Option<Dataset>,
    pub data_label: String,
    pub transformer: Option<crate::transformer::TransformerJob>,
}

impl ModelState {
    pub(crate) fn arch(&self) -> Result<&Architecture, CompressError> {
        self.arch.as_ref().ok_or_else(|| {
            CompressError::InvalidRequest(
                "this step runs the model, and the model has no architecture; upload one with the model or PUT /v1/models/{id}/architecture".into(),
            )
        })
    }

    pub(crate) fn data(&self) -> Result<&Dataset, CompressError> {
        self.data.as_ref().ok_or_else(|| {
            CompressError::InvalidRequest(
                "this step needs a dataset: give dataset_id with the job".into(),
            )
        })
    }

    /// Whether the model can be measured: it has an architecture and the job a dataset.
    pub fn measured(&self) -> bool {
        self.arch.is_some() && self.data.is_some()
    }

    /// Whether the model is a transformer the job can measure (tokenizer and text).
    pub fn measured_text(&self) -> bool {
        self.transformer.as_ref().is_some_and(|t| t.measurable())
    }

    pub fn load(&self, path: &Path) -> Result<Network, CompressError> {
        Network::load(path, self.arch()?)
    }

    pub fn evaluate(
        &self,
        net: &Network,
        opts: &EvaluateStep,
    ) -> Result<EvalReport, CompressError> {
        let data = self.data()?;
        evaluate(net, &data.test, data.num_classes, opts, &self.data_label)
    }
}

pub(crate) fn selected(
    net: &Network,
    selection: &TensorSelection,
) -> Result<Vec<String>, CompressError> {
    let names: Vec<String> = net
        .weight_names()
        .into_iter()
        .filter(|n| selection.selects(n, true))
        .collect();
    if names.is_empty() {
        return Err(CompressError::InvalidRequest(format!(
            "the step selects no linear or conv weight; the model's weights are {:?}",
            net.weight_names()
        )));
    }
    Ok(names)
}

pub(crate) fn densities(
    net: &Network,
    names: &[String],
) -> Result<Vec<TensorDensity>, CompressError> {
    names
        .iter()
        .map(|n| {
            let v = net.values(n)?;
            let nonzero = v.iter().filter(|x| **x != 0.0).count() as u64;
            Ok(TensorDensity {
                name: n.clone(),
                parameters: v.len() as u64,
                nonzero,
                density: nonzero as f64 / v.len().max(1) as f64,
                density_before: 0.0,
            })
        })
        .collect()
}
