//! Quantization primitives: fewer bits per weight, with the error they cost measured.
//! Each scheme maps one row-major f32 tensor to codes plus parameters and back; the file
//! formats that carry them are built on top.

pub mod encode;
pub mod error;
pub mod fp8;
pub mod ggml_blocks;
pub mod int;
pub mod kmeans;

pub use error::{ErrorStats, ErrorSums};
