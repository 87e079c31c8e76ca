//! Models that run: a sequential architecture built with candle, datasets, training,
//! evaluation, and the pruning methods that need the model in memory (gradient criteria,
//! iterative schedules with fine-tuning, N:M, structured filter pruning, sensitivity scans).
//! The pipeline steps that use them are in `crate::steps`.

pub mod auto;
pub mod data;
pub mod distill;
pub mod evaluate;
pub mod fake_quant;
mod forward;
pub mod importance;
pub mod init;
pub mod network;
pub mod state;
pub mod structured;
pub mod train;
pub mod unfold;

use std::path::Path;

use crate::format::safetensors_index::SafetensorsIndex;
use crate::format::st_writer::SpooledWriter;
use crate::quant::file::store_f32;
use crate::CompressError;
use domain::{PruneStep, PruneTarget};

pub use data::{check_fit, inspect_dataset, load_dataset, Dataset, DatasetSummary};
pub use evaluate::EvalReport;
pub use init::write_initial;
pub use network::{check_weights, Network};
pub use state::ModelState;

/// N:M on a model without an architecture: every selected weight, one tensor in memory at a
/// time, by magnitude. Returns the tensors skipped (row length not a multiple of m) and the
/// sparsity over the pruned ones.
pub fn nm_file(
    input: &Path,
    output: &Path,
    step: &PruneStep,
) -> Result<(Vec<String>, u64, u64), CompressError> {
    let PruneTarget::NofM { n, m } = step.target else {
        return Err(CompressError::InvalidRequest(
            "without an architecture only magnitude and nm pruning apply".into(),
        ));
    };
    let index = SafetensorsIndex::open(input)?;
    let selected = crate::prune::select_tensors(&index.tensors, &step.selection, "prune")?;
    let mut out = SpooledWriter::new(&output.with_extension("spool"))?;
    let (mut skipped, mut zeros, mut total) = (Vec::new(), 0u64, 0u64);
    let file = std::fs::File::open(input)?;
    let mut bytes = Vec::new();
    for (t, sel) in index.tensors.iter().zip(selected) {
        let raw =
            crate::format::chunked_io::map_chunk(&file, &index, (t.begin, t.byte_len() as usize))?;
        let row: u64 = t.shape.iter().skip(1).product();
        if !sel || !row.is_multiple_of(m as u64) {
            if sel {
                skipped.push(t.name.clone());
            }
            out.add(&t.name, t.dtype.name(), &t.shape, &raw)?;
            continue;
        }
        let mut w = crate::quant::file::load_f32(&raw, t.dtype);
        crate::require_finite(t, &w, "pruning")?;
        let scores: Vec<f32> = w.iter().map(|v| v.abs()).collect();
        importance::apply(&mut w, &importance::nm_mask(&scores, n, m));
        zeros += w.iter().filter(|v| **v == 0.0).count() as u64;
        total += w.len() as u64;
        store_f32(&w, t.dtype, &mut bytes);
        out.add(&t.name, t.dtype.name(), &t.shape, &bytes)?;
    }
    out.finish(&index.metadata, output)?;
    Ok((skipped, zeros, total))
}
