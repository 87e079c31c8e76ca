//! The model runtime without a server: layers against independent reference values, training
//! and pruning invariants, architecture and dataset validation.

mod auto;
#[path = "../common/blobs.rs"]
mod blobs;
mod data;
mod distill;
mod evaluate;
mod helpers;
mod layers;
mod pruning;
mod pytorch;
mod qat;
