//! compressd's domain: the values that flow from a request to the worker and back (pipelines
//! and their steps, jobs, problems), each parsed once into a form that is valid by
//! construction. Nothing here knows about HTTP, SQL or tensors.
//!
//! Its own crate, beside the compression core rather than inside it, because both sides read
//! it: the service parses requests into these types and documents them (the `openapi` feature
//! derives their schemas), the core runs them. The core depends on this crate without that
//! feature, so building `compressd-compress` alone pulls in no utoipa, and the compiler keeps
//! HTTP and SQL out of both.

mod architecture;
mod code;
mod job;
mod parse_error;
mod pipeline;
mod problem;
pub mod results;
mod selection;
pub mod steps;

pub use architecture::{
    kind_name, volume, Architecture, ArchitectureWire, Layer, LayerKind, LayerWire, ParamRole,
    ParamSpec, Size2,
};
pub use code::Code;
pub use job::{JobStatus, UnknownStatus};
pub use parse_error::ParseError;
pub use pipeline::{Pipeline, MAX_STEPS};
pub use problem::Problem;
pub use selection::{NamePattern, TensorSelection, MAX_PATTERNS};
#[cfg(feature = "openapi")]
pub use steps::PipelineStepDoc;
pub use steps::{
    auto::{AutoStep, AutoWire, Budget, Objective},
    calibration::{Calibration, CalibrationWire},
    distill::{DistillStep, DistillWire, FeaturePair, Student},
    entropy::{Codec, EntropyStep},
    evaluate::EvaluateStep,
    export::{ExportFormat, ExportStep, ExportWire, GgufType},
    finetune::FinetuneStep,
    prune::{
        Criterion, PruneMethod, PruneStep, PruneTarget, PruneWire, Scope, Sparsity, Threshold,
    },
    qat::{QatStep, QatWire},
    quantize::{Granularity, QuantMethod, QuantizeStep, QuantizeWire, Scheme, Storage},
    schedule::{Ramp, Schedule},
    sensitivity::SensitivityStep,
    train::{Init, OptimizerKind, TrainStep, TrainWire},
    Operation, Selects, Step, StepNeeds, SUPPORTED_OPS,
};
