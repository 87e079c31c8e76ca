//! compressd: model compression as a service.

pub mod api;
pub mod cli;
pub mod compress;
pub mod config;
pub mod domain;
#[doc(hidden)]
pub mod fuzz_checks;
pub mod notify;
pub mod serve;
pub mod startup;
pub mod store;
pub mod sweeper;
pub mod telemetry;
pub mod worker;
