//! One module per operation: its request type, the checks that make it valid, its OpenAPI
//! schema, and what a pipeline needs to know of it to order and schedule it.
//!
//! Adding an operation: write `steps/<op>.rs` with a type that implements [`Operation`], and add
//! one line to the `operations!` list below. The compression core runs it from its own
//! `steps/<op>.rs` (see docs/architecture.md).

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::ParseError;

pub mod auto;
pub mod calibration;
pub mod distill;
pub mod entropy;
pub mod evaluate;
pub mod export;
pub mod finetune;
pub mod prune;
pub mod qat;
pub mod quantize;
pub mod schedule;
pub mod sensitivity;
pub mod train;

/// What a pipeline needs to know of a step to check its place in the list and to check the
/// model and dataset a job brings.
pub trait StepNeeds {
    /// Whether the step leaves a plain dense safetensors file that another step can read.
    fn writes_dense(&self) -> bool;
    /// Whether the step needs the model's architecture (to build and run it).
    fn needs_architecture(&self) -> bool {
        true
    }
    /// Whether the step needs a dataset.
    fn needs_dataset(&self) -> bool {
        true
    }
    /// Whether the step computes gradients.
    fn trains(&self) -> bool {
        false
    }
    /// Whether the step compresses the model (rather than train or measure it): the model as it
    /// was before the first such step is the baseline that a job's before/after compares.
    fn compresses(&self) -> bool {
        true
    }
    /// The tensors the step works on by name, checked against the model's before the job is
    /// queued (with the quantization scheme, whose group sizes must divide the rows).
    fn selects(&self) -> Option<Selects<'_>> {
        None
    }
    /// The largest batch the step runs the model with (0 when it does not run the model).
    fn batch_size(&self) -> usize {
        0
    }
    /// The method's name when the step runs a transformer over the calibration split of a
    /// text dataset.
    fn calibrates(&self) -> Option<&'static str> {
        None
    }
}

/// A step's tensor selection, and the scheme it stores them with, if it quantizes.
pub struct Selects<'a> {
    pub selection: &'a crate::TensorSelection,
    pub scheme: Option<quantize::Scheme>,
}

/// An operation as it is named and parsed in a pipeline.
pub trait Operation: StepNeeds + DeserializeOwned + Sized {
    /// The `op` value that names it.
    const OP: &'static str;

    /// Checks that span several fields, run after deserializing.
    fn check(self) -> Result<Self, ParseError> {
        Ok(self)
    }

    /// Parses the step's fields (the JSON object less its `op`).
    fn from_fields(fields: Value) -> Result<Self, ParseError> {
        serde_json::from_value::<Self>(fields)
            .map_err(|e| ParseError(e.to_string()))
            .and_then(Self::check)
    }
}

macro_rules! operations {
    ($($variant:ident($ty:ty) documented as $wire:ty),* $(,)?) => {
        /// One step of a pipeline, valid by construction.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(tag = "op", rename_all = "snake_case")]
        pub enum Step {
            $($variant($ty)),*
        }

        /// Documents the shape of one pipeline step in the OpenAPI description.
        #[cfg(feature = "openapi")]
        #[derive(utoipa::ToSchema)]
        #[serde(tag = "op", rename_all = "snake_case")]
        #[allow(dead_code)]
        pub enum PipelineStepDoc {
            $($variant($wire)),*
        }

        /// Every operation's name, in the order the list gives them.
        pub const SUPPORTED_OPS: &[&str] = &[$(<$ty as Operation>::OP),*];

        impl Step {
            /// Parses the fields of a step named `op`; `None` when no operation has that name.
            pub fn parse_op(op: &str, fields: Value) -> Option<Result<Step, ParseError>> {
                $(
                    if op == <$ty as Operation>::OP {
                        return Some(<$ty as Operation>::from_fields(fields).map(Step::$variant));
                    }
                )*
                None
            }

            pub fn op(&self) -> &'static str {
                match self {
                    $(Step::$variant(_) => <$ty as Operation>::OP),*
                }
            }

            pub fn needs(&self) -> &dyn StepNeeds {
                match self {
                    $(Step::$variant(s) => s),*
                }
            }
        }
    };
}

operations! {
    Prune(prune::PruneStep) documented as prune::PruneWire,
    Quantize(quantize::QuantizeStep) documented as quantize::QuantizeWire,
    Export(export::ExportStep) documented as export::ExportWire,
    Train(train::TrainStep) documented as train::TrainWire,
    Finetune(finetune::FinetuneStep) documented as train::TrainWire,
    Evaluate(evaluate::EvaluateStep) documented as evaluate::EvaluateStep,
    Sensitivity(sensitivity::SensitivityStep) documented as sensitivity::SensitivityStep,
    Entropy(entropy::EntropyStep) documented as entropy::EntropyStep,
    Distill(distill::DistillStep) documented as distill::DistillWire,
    Qat(qat::QatStep) documented as qat::QatWire,
    Auto(auto::AutoStep) documented as auto::AutoWire,
}

impl Step {
    /// The same step with `f` applied to the tensors it selects (a transformer's default
    /// selection is its blocks' linear layers).
    pub fn map_selection(
        &self,
        f: impl Fn(&crate::TensorSelection) -> crate::TensorSelection,
    ) -> Step {
        let mut step = self.clone();
        match &mut step {
            Step::Prune(s) => s.selection = f(&s.selection),
            Step::Quantize(s) => s.selection = f(&s.selection),
            Step::Export(s) => s.selection = f(&s.selection),
            _ => {}
        }
        step
    }

    pub fn writes_dense(&self) -> bool {
        self.needs().writes_dense()
    }

    pub fn needs_architecture(&self) -> bool {
        self.needs().needs_architecture()
    }

    pub fn needs_dataset(&self) -> bool {
        self.needs().needs_dataset()
    }

    pub fn calibrates(&self) -> Option<&'static str> {
        self.needs().calibrates()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// One valid example of every operation: each must serialize under the name it parses by
    /// and parse back from what it serializes to (the worker reads queued pipelines that way).
    #[test]
    fn every_operation_round_trips_under_its_own_name() {
        let examples = [
            json!({"op":"prune","sparsity":0.5}),
            json!({"op":"prune","method":"nm","n":2,"m":4,"criterion":"taylor","batches":3}),
            json!({"op":"prune","sparsity":0.8,"schedule":{"steps":3}}),
            json!({"op":"quantize","scheme":"int8"}),
            json!({"op":"export","format":"gguf","type":"Q8_0"}),
            json!({"op":"train","epochs":2,"init":"architecture"}),
            json!({"op":"finetune","epochs":1,"optimizer":"adam"}),
            json!({"op":"evaluate"}),
            json!({"op":"sensitivity","sparsities":[0.5]}),
            json!({"op":"entropy","codec":"zstd"}),
            json!({"op":"distill","shrink":0.5,"features":[]}),
            json!({"op":"qat","quantize":{"scheme":"int8"}}),
            json!({"op":"auto","max_accuracy_drop":0.01,"budget":{"trials":3}}),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for example in examples {
            let mut fields = example.as_object().unwrap().clone();
            let op = fields.remove("op").unwrap();
            let step = Step::parse_op(op.as_str().unwrap(), Value::Object(fields))
                .unwrap()
                .unwrap_or_else(|e| panic!("{example}: {e}"));
            assert_eq!(step.op(), op.as_str().unwrap());
            let written = serde_json::to_value(&step).unwrap();
            assert_eq!(written["op"], op, "{written}");
            let mut fields = written.as_object().unwrap().clone();
            fields.remove("op");
            let again = Step::parse_op(step.op(), Value::Object(fields))
                .unwrap()
                .unwrap_or_else(|e| panic!("{written} does not parse back: {e}"));
            assert_eq!(again, step);
            seen.insert(step.op());
        }
        assert_eq!(
            seen.len(),
            SUPPORTED_OPS.len(),
            "an example for every operation"
        );
    }
}
