//! Validated values that flow from a request to the worker: pipelines, jobs, ids.
//! Nothing here knows about HTTP, SQL or tensors.

mod architecture;
mod auto;
mod distill;
mod entropy;
mod export;
mod job;
mod pipeline;
mod problem;
mod qat;
mod quantize;
mod selection;
mod training;

pub use architecture::{
    kind_name, Architecture, ArchitectureWire, Layer, LayerKind, LayerWire, ParamRole, ParamSpec,
    Size2,
};
pub use auto::{AutoStep, AutoWire, Budget, Objective};
pub use distill::{DistillStep, DistillWire, FeaturePair, Student};
pub use entropy::{Codec, EntropyStep};
pub use export::{ExportFormat, ExportStep, ExportWire, GgufType};
pub use job::{JobStatus, UnknownStatus};
pub use pipeline::{
    Criterion, ParseError, Pipeline, PipelineStepDoc, PruneMethod, PruneStep, PruneTarget,
    PruneWire, Scope, Sparsity, Step, Threshold,
};
pub use problem::Problem;
pub use qat::{QatStep, QatWire};
pub use quantize::{Granularity, QuantizeStep, QuantizeWire, Scheme, Storage};
pub use selection::{NamePattern, TensorSelection};
pub use training::{
    EvaluateStep, Init, OptimizerKind, Ramp, Schedule, SensitivityStep, TrainStep, TrainWire,
};
