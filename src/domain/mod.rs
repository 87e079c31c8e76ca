//! Validated values that flow from a request to the worker: pipelines, jobs, ids.
//! Nothing here knows about HTTP, SQL or tensors.

mod job;
mod pipeline;
mod problem;
mod selection;

pub use job::{JobStatus, UnknownStatus};
pub use pipeline::{
    ParseError, Pipeline, PipelineStepDoc, PruneMethod, PruneStep, PruneTarget, PruneWire, Scope,
    Sparsity, Step, Threshold,
};
pub use problem::Problem;
pub use selection::{NamePattern, TensorSelection};
