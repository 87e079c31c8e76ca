//! compressd: model compression as a service.

pub mod api;
pub mod compress;
pub mod config;
pub mod domain;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod worker;
