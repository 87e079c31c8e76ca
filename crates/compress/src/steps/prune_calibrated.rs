//! `prune` with `criterion: wanda` or `sparsegpt`: a transformer's block linears pruned on the
//! calibration split of its text dataset, a block at a time (transformer::calibration), each
//! block's weights written out as soon as they are done and the rest copied after. Wanda
//! scores |w|·‖x‖₂; SparseGPT chooses by w² / [H⁻¹]_jj² and updates the weights it keeps.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use domain::results::prune::LayerReconstruction;
use domain::{Criterion, PruneMethod, PruneStep, PruneTarget};

use crate::format::dtype::count_nonzero;
use crate::format::safetensors_index::SafetensorsIndex;
use crate::obs::sparsegpt;
use crate::prune::report::{tensor_stats, PruneReport, Totals};
use crate::prune::wanda::{self, RowTarget};
use crate::steps::calibrated::{
    require_rows_of, selected_layers, sequences, transformer_job, BlockWriter,
};
use crate::steps::StepContext;
use crate::transformer::calibration::{calibrate, BlockResult, InputStats, Rewrite};
use crate::transformer::SafetensorsWeights;
use crate::CompressError;

type R<T> = Result<T, CompressError>;

/// Writes the pruned model, dense, to `output`.
pub fn run(step: &PruneStep, cx: &mut StepContext, output: &Path) -> R<PruneReport> {
    let started = Instant::now();
    let name = step.criterion.name();
    let job = transformer_job(cx, name)?;
    let target = match (step.method, step.target) {
        (PruneMethod::Nm, PruneTarget::NofM { n, m }) => RowTarget::NofM { n, m },
        (PruneMethod::Magnitude, PruneTarget::Sparsity { sparsity, .. }) => {
            RowTarget::Sparsity(sparsity.get())
        }
        _ => {
            return Err(CompressError::InvalidRequest(format!(
                "{name} takes a sparsity (per output row) or an N:M pattern"
            )))
        }
    };
    let seqs = sequences(job, &step.calibration)?;
    let index = SafetensorsIndex::open(cx.input)?;
    let selected = selected_layers(&index, &step.selection, job, name, "prune")?;
    if let RowTarget::NofM { m, .. } = target {
        require_rows_of(&index, &selected, m, "m")?;
    }

    let weights = SafetensorsWeights::open(cx.input)?;
    let mut writer = BlockWriter::new(&index, output)?;
    let mut stats = Vec::with_capacity(index.tensors.len());
    let mut layers = Vec::new();
    // What SparseGPT reports per layer, read back as each block is written.
    let outcomes = RefCell::new(HashMap::new());
    let mut method = Pruner {
        target,
        sparsegpt: (step.criterion == Criterion::Sparsegpt).then_some(step.calibration.dampening),
        outcomes: &outcomes,
    };
    let mut done = |block: usize, result: BlockResult| -> R<()> {
        for r in result.layers {
            writer.dense(&r.name, &r.weight)?;
            let t = writer.entry(&r.name)?;
            let after = r.weight.iter().filter(|v| **v != 0.0).count() as u64;
            let s = tensor_stats(t, true, r.nonzero_before, after);
            let outcome = outcomes.borrow_mut().remove(&r.name);
            layers.push(LayerReconstruction {
                name: r.name,
                block,
                sparsity: s.sparsity_after,
                reconstruction_error: r.reconstruction_error,
                seconds: r.seconds,
                dampening: outcome.as_ref().and_then(|o| o.dampening),
                fallback: outcome.and_then(|o| o.fallback),
            });
            stats.push(s);
        }
        Ok(())
    };
    calibrate(
        &job.config,
        &weights,
        &seqs.ids,
        &|n| selected.contains(n),
        &mut method,
        &mut done,
        cx.control,
    )?;
    writer.copy_rest(cx.input, cx.control, |t, window| {
        let nz = if t.dtype.is_prunable() {
            count_nonzero(t.dtype, window)
        } else {
            t.shape.iter().product()
        };
        stats.push(tensor_stats(t, false, nz, nz));
    })?;
    let file_bytes_after = writer.out.finish(&index.metadata, output)?;
    let (pattern, target_sparsity) = match target {
        RowTarget::Sparsity(s) => (None, s),
        RowTarget::NofM { n, m } => (Some(format!("{n}:{m}")), 1.0 - n as f64 / m as f64),
    };
    Ok(PruneReport {
        op: "prune",
        method: name,
        scope: Some("row"),
        target_sparsity: Some(target_sparsity),
        threshold: None,
        cut_magnitude: None,
        selected: Totals::of(stats.iter().filter(|s| s.pruned)),
        model: Totals::of(&stats),
        tensors: stats,
        file_bytes_before: index.file_len,
        file_bytes_after,
        seconds: started.elapsed().as_secs_f64(),
        pattern,
        calibration: Some(seqs.used),
        layers,
    })
}

/// Wanda, or SparseGPT with its damping.
struct Pruner<'a> {
    target: RowTarget,
    sparsegpt: Option<f64>,
    outcomes: &'a RefCell<HashMap<String, sparsegpt::Outcome>>,
}

impl Rewrite for Pruner<'_> {
    fn op(&self) -> &'static str {
        "prune"
    }

    fn needs_hessian(&self) -> bool {
        self.sparsegpt.is_some()
    }

    fn layer(
        &mut self,
        name: &str,
        w: &mut [f32],
        [_, cols]: [usize; 2],
        input: &InputStats,
    ) -> R<()> {
        match (self.sparsegpt, &input.hessian) {
            (Some(dampening), Some(h)) => {
                let outcome = sparsegpt::prune(w, cols, h, self.target, dampening);
                self.outcomes.borrow_mut().insert(name.to_owned(), outcome);
            }
            _ => {
                wanda::prune(w, cols, &input.column_squares, self.target);
            }
        }
        Ok(())
    }
}
