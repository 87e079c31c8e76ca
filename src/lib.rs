//! compressd: model compression as a service.

// The compression core and the request types are crates of their own (crates/compress,
// crates/domain); re-exported under their old paths so `compressd::compress::…` keeps working.
pub use compress;
pub use domain;

pub mod api;
pub mod cli;
pub mod config;
#[doc(hidden)]
pub mod fuzz_checks;
pub mod notify;
pub mod otlp;
pub mod report;
pub mod serve;
pub mod startup;
pub mod storage_health;
pub mod store;
pub mod sweeper;
pub mod telemetry;
pub mod worker;
