//! Validated values that flow from a request to the worker: pipelines, jobs, ids.
//! Nothing here knows about HTTP, SQL or tensors.

mod export;
mod job;
mod pipeline;
mod problem;
mod quantize;
mod selection;

pub use export::{ExportFormat, ExportStep, ExportWire, GgufType};
pub use job::{JobStatus, UnknownStatus};
pub use pipeline::{
    ParseError, Pipeline, PipelineStepDoc, PruneMethod, PruneStep, PruneTarget, PruneWire, Scope,
    Sparsity, Step, Threshold,
};
pub use problem::Problem;
pub use quantize::{Granularity, QuantizeStep, QuantizeWire, Scheme, Storage};
pub use selection::{NamePattern, TensorSelection};
