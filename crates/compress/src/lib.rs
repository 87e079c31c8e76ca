//! The compression core: tensors in, tensors and metrics out. Synchronous and free of any
//! server, database or async runtime, so that every piece runs on tiny inputs in a unit test.
//! Its own crate so that the compiler keeps it that way: nothing here can reach tokio, sqlx,
//! axum or utoipa, because none of them is a dependency.

pub mod budget;
pub mod control;
pub mod format;
pub mod nn;
pub mod obs;
pub mod pipeline;
pub mod prune;
pub mod quant;
pub mod steps;
pub mod transformer;

pub use control::{Control, Interrupt};
pub use format::safetensors_index::{FormatError, OpenError, SafetensorsIndex, TensorEntry};
pub use pipeline::{run_pipeline, Evaluation, PipelineRun};
pub use prune::prune_file;
pub use prune::report::{PruneReport, TensorStats, Totals};
pub use steps::{Format, OutputFile, StepReport};

#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    /// The model file itself is unusable; retrying cannot help.
    #[error("{0}")]
    InvalidModel(String),
    /// The step cannot apply to this model as asked; retrying cannot help.
    #[error("{0}")]
    InvalidRequest(String),
    #[error("stopped: {0:?}")]
    Interrupted(Interrupt),
    /// Reading or writing failed; a retry may succeed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<OpenError> for CompressError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Format(f) => CompressError::InvalidModel(f.0),
            OpenError::Io(io) => CompressError::Io(io),
        }
    }
}

/// Refuses a tensor holding NaN or infinite values: no step can rank, scale or round them.
pub(crate) fn non_finite_error(tensor: &TensorEntry, count: u64, op: &str) -> CompressError {
    CompressError::InvalidModel(format!(
        "tensor '{}' holds {count} NaN or infinite values, which {op} cannot handle; fix the model or exclude the tensor",
        tensor.name
    ))
}

/// `Err` naming the tensor when any of its values is NaN or infinite.
pub(crate) fn require_finite(
    tensor: &TensorEntry,
    values: &[f32],
    op: &str,
) -> Result<(), CompressError> {
    use rayon::prelude::*;
    match values
        .par_chunks(1 << 16)
        .map(|c| c.iter().filter(|v| !v.is_finite()).count())
        .sum::<usize>()
    {
        0 => Ok(()),
        bad => Err(non_finite_error(tensor, bad as u64, op)),
    }
}
