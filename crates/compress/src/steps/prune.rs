//! `prune`: magnitude pruning streamed tensor by tensor (crate::prune), or in memory when the
//! step needs the model run (steps::prune_model); either result stored dense or as bitmask-v1.

use std::fs::File;
use std::path::Path;

use domain::{PruneStep, StepNeeds, Storage};

use crate::format::chunked_io::map_chunk;
use crate::format::safetensors_index::SafetensorsIndex;
use crate::format::sparse::write_sparse;
use crate::format::st_writer::SpooledWriter;
use crate::prune::{prune_file, select_tensors};
use crate::steps::prune_calibrated;
use crate::steps::prune_model::prune_step as model_prune;
use crate::steps::{Format, StepContext, StepOutput, StepReport};
use crate::CompressError;

pub fn run(step: &PruneStep, cx: &mut StepContext) -> Result<StepOutput, CompressError> {
    let output = cx.output("safetensors");
    let sparse = step.store == Storage::Sparse;
    let format = if step.writes_dense() {
        Format::dense()
    } else {
        Format::sparse()
    };
    if step.calibrates() || !step.in_memory() {
        let dense = cx.output("dense.safetensors");
        let target = if sparse { &dense } else { &output };
        let mut report = if step.calibrates() {
            prune_calibrated::run(step, cx, target)?
        } else {
            prune_file(cx.input, target, step, cx.control)?
        };
        if sparse {
            let written = sparsify(&dense, &output, step);
            let _ = std::fs::remove_file(&dense);
            report.file_bytes_after = written?;
        }
        return Ok(StepOutput::wrote(output, format, StepReport::Prune(report)));
    }
    let dense = cx.output("dense.safetensors");
    let report = model_prune(cx.state, cx.input, &dense, step, cx.index, cx.control)?;
    let mut out = StepOutput::wrote(output.clone(), format, StepReport::ModelPrune(report));
    if sparse {
        sparsify(&dense, &output, step)?;
        if cx.measured() {
            out.dense_twin = Some(dense);
        } else {
            let _ = std::fs::remove_file(&dense);
        }
    } else {
        std::fs::rename(&dense, &output)?;
    }
    Ok(out)
}

/// Rewrites the pruned tensors of a dense file in bitmask-v1 form; returns the bytes written.
fn sparsify(dense: &Path, output: &Path, step: &PruneStep) -> Result<u64, CompressError> {
    let index = SafetensorsIndex::open(dense)?;
    let selected = select_tensors(&index.tensors, &step.selection, "prune")?;
    let file = File::open(dense)?;
    let mut out = SpooledWriter::new(&output.with_extension("spool"))?;
    for (t, &sel) in index.tensors.iter().zip(&selected) {
        let window = map_chunk(&file, &index, (t.begin, t.byte_len() as usize))?;
        if sel {
            write_sparse(
                &mut out,
                &t.name,
                t.dtype.name(),
                t.dtype.size(),
                &t.shape,
                &window,
            )?;
        } else {
            out.add(&t.name, t.dtype.name(), &t.shape, &window)?;
        }
    }
    let mut meta = index.metadata.clone();
    meta.insert("compressd.sparse".into(), "bitmask-v1".into());
    Ok(out.finish(&meta, output)?)
}
