//! Quantization primitives: fewer bits per weight, with the error they cost measured.
//! Each scheme maps one row-major f32 tensor to codes plus parameters and back; the file
//! formats that carry them are built on top.

pub mod awq;
pub mod encode;
pub mod error;
pub mod file;
pub mod fp8;
pub mod ggml_blocks;
pub mod ggml_weighted;
pub mod int;
pub mod kmeans;

pub use error::{ErrorStats, ErrorSums};

/// Runs `kernel(start, weights, codes, restored)` over consecutive chunks of a tensor on every
/// core and adds up the error sums each chunk returns. `restored`, when given, is split
/// alongside.
pub fn in_chunks<C: Send>(
    values: &[f32],
    codes: &mut [C],
    restored: Option<&mut [f32]>,
    kernel: impl Fn(usize, &[f32], &mut [C], Option<&mut [f32]>) -> ErrorSums + Sync,
) -> ErrorSums {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 16;
    let merge = |mut a: ErrorSums, b: ErrorSums| {
        a.merge(&b);
        a
    };
    match restored {
        Some(out) => codes
            .par_chunks_mut(CHUNK)
            .zip(values.par_chunks(CHUNK))
            .zip(out.par_chunks_mut(CHUNK))
            .enumerate()
            .map(|(n, ((c, v), r))| kernel(n * CHUNK, v, c, Some(r)))
            .reduce(ErrorSums::default, merge),
        None => codes
            .par_chunks_mut(CHUNK)
            .zip(values.par_chunks(CHUNK))
            .enumerate()
            .map(|(n, (c, v))| kernel(n * CHUNK, v, c, None))
            .reduce(ErrorSums::default, merge),
    }
}
