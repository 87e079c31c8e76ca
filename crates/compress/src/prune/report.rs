//! What a step did, in numbers a user can check: per tensor and for the whole model (the types
//! are the domain's; this fills them from the file's index).

use crate::format::safetensors_index::TensorEntry;
pub use domain::results::prune::PruneReport;
pub use domain::results::tensors::{TensorStats, Totals};

/// A tensor's counts before and after a step.
pub fn tensor_stats(
    t: &TensorEntry,
    pruned: bool,
    nonzero_before: u64,
    nonzero_after: u64,
) -> TensorStats {
    TensorStats::new(
        t.name.clone(),
        t.dtype.name(),
        t.shape.clone(),
        pruned,
        nonzero_before,
        nonzero_after,
    )
}
