//! What jobs report: each step's figures and the job's metrics, typed so that the API documents
//! them field by field and the report page reads fields, not string keys. The compression core
//! fills them in; nothing here computes anything beyond sums and ratios.

pub mod auto;
pub mod distill;
pub mod fidelity;
pub mod metrics;
pub mod model;
pub mod progress;
pub mod prune;
pub mod quantize;
pub mod tensors;

pub use fidelity::{Fidelity, FidelityComparison, ModelFidelity, PerplexityProtocol};
pub use metrics::{Evaluation, Histogram, JobMetrics, StepReport, Summary};
pub use progress::ProgressDetail;
