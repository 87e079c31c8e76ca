//! Magnitude pruning of a safetensors file, streamed: find the cut (threshold, per-layer or
//! global sparsity), then copy the file chunk by chunk, zeroing what falls below the cut.
//! The output keeps the input's header byte for byte, so names, shapes, dtypes, offsets and
//! metadata are unchanged.

pub mod cut;
#[cfg(test)]
mod props;
pub mod report;
pub mod wanda;

use std::fs::File;
use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;

use crate::control::Control;
use crate::format::chunked_io::{chunks, copy_header, for_each_chunk, map_chunk, PipelinedWriter};
use crate::format::dtype::{count_nonzero, threshold_key, Key, KeyReader, INFINITY_KEY};
use crate::format::safetensors_index::{SafetensorsIndex, TensorEntry};
use crate::prune::report::{PruneReport, TensorStats, Totals};
use crate::{non_finite_error, CompressError};
use cut::{Cut, Histogram, BUCKETS};
use domain::{PruneStep, PruneTarget, Scope, TensorSelection};

const BLOCK_BYTES: usize = 64 << 10;

struct Plan<'a> {
    index: &'a SafetensorsIndex,
    file: &'a File,
    /// Per tensor, in file order: whether the step prunes it.
    selected: Vec<bool>,
    control: &'a Control,
}

pub fn prune_file(
    input: &Path,
    output: &Path,
    step: &PruneStep,
    control: &Control,
) -> Result<PruneReport, CompressError> {
    let started = Instant::now();
    let index = SafetensorsIndex::open(input)?;
    let file = File::open(input)?;
    let plan = Plan {
        selected: select_tensors(&index.tensors, &step.selection, "prune")?,
        index: &index,
        file: &file,
        control,
    };
    let all_bytes: u64 = index.tensors.iter().map(TensorEntry::byte_len).sum();
    let selected_bytes: u64 = plan.selected_tensors().map(TensorEntry::byte_len).sum();

    let cuts = match step.target {
        PruneTarget::Threshold(t) => {
            control.add_work(all_bytes);
            vec![(Cut::below(threshold_key(t.get())), Share::Own); index.tensors.len()]
        }
        PruneTarget::Sparsity { sparsity, scope } => {
            control.add_work(all_bytes + 2 * selected_bytes);
            match scope {
                Scope::Layer => plan.layer_cuts(sparsity.get())?,
                Scope::Global => plan.global_cut(sparsity.get())?,
            }
        }
        PruneTarget::NofM { .. } => {
            return Err(CompressError::InvalidRequest(
                "N:M pruning runs on the model in memory, not on the stream".into(),
            ))
        }
    };

    let result = plan.write_pruned(output, &cuts);
    let stats = match result {
        Ok(stats) => stats,
        Err(e) => {
            let _ = std::fs::remove_file(output);
            return Err(e);
        }
    };
    let selected = Totals::of(stats.iter().filter(|s| s.pruned));
    let global_cut = cuts
        .iter()
        .zip(&plan.selected)
        .find(|(c, &sel)| sel && c.1 == Share::Global)
        .map(|(c, _)| c.0.magnitude());
    let (scope, target_sparsity, threshold) = match step.target {
        PruneTarget::Threshold(t) => (None, None, Some(t.get())),
        PruneTarget::Sparsity { sparsity, scope } => (
            Some(match scope {
                Scope::Global => "global",
                Scope::Layer => "layer",
            }),
            Some(sparsity.get()),
            None,
        ),
        PruneTarget::NofM { .. } => (None, None, None),
    };
    Ok(PruneReport {
        op: "prune",
        method: "magnitude",
        scope,
        target_sparsity,
        threshold,
        cut_magnitude: global_cut,
        selected,
        model: Totals::of(&stats),
        tensors: stats,
        file_bytes_before: index.file_len,
        file_bytes_after: std::fs::metadata(output)?.len(),
        seconds: started.elapsed().as_secs_f64(),
        pattern: None,
        calibration: None,
        layers: Vec::new(),
    })
}

/// Whether a tensor's tie quota is its own or shared by every selected tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Share {
    Own,
    Global,
}

/// Which tensors the step prunes (per tensor, in the given order), or why it cannot apply.
/// Also used to refuse a job before it is queued.
pub fn select_tensors(
    tensors: &[TensorEntry],
    selection: &TensorSelection,
    op: &str,
) -> Result<Vec<bool>, CompressError> {
    // A tensor with a zero-length dimension holds no values: there is nothing to prune,
    // scale or round, and it is copied as it is.
    let selected: Vec<bool> = tensors
        .iter()
        .map(|t| t.numel() > 0 && selection.selects(&t.name, t.is_weight()))
        .collect();
    if let Some(t) = tensors
        .iter()
        .zip(&selected)
        .find(|(t, &s)| s && !t.dtype.is_prunable())
        .map(|(t, _)| t)
    {
        return Err(CompressError::InvalidRequest(format!(
            "tensor '{}' has dtype {}; {op} supports F32, F16 and BF16 tensors (narrow include or add it to exclude)",
            t.name,
            t.dtype.name()
        )));
    }
    if !selected.contains(&true) {
        let names: Vec<&str> = tensors.iter().take(5).map(|t| t.name.as_str()).collect();
        return Err(CompressError::InvalidRequest(format!(
            "the step selects no tensor (by default: F32/F16/BF16 tensors with two or more dimensions); the model has {} tensors, e.g. {}",
            tensors.len(),
            names.join(", ")
        )));
    }
    Ok(selected)
}

impl Plan<'_> {
    fn selected_tensors(&self) -> impl Iterator<Item = &TensorEntry> {
        self.index
            .tensors
            .iter()
            .zip(&self.selected)
            .filter(|(_, &s)| s)
            .map(|(t, _)| t)
    }

    fn reader(t: &TensorEntry) -> KeyReader {
        KeyReader::for_dtype(t.dtype).expect("selection admits prunable dtypes only")
    }

    /// Adds a tensor's high-bits histogram to `into`, refusing NaN and infinite weights.
    fn high_histogram(&self, t: &TensorEntry, into: &mut Histogram) -> Result<(), CompressError> {
        let mut own = vec![0u64; BUCKETS];
        let reader = Self::reader(t);
        for_each_chunk(self.file, self.index, t, self.control, |chunk| {
            cut::high_histogram(reader, chunk, &mut own)
        })?;
        let bad = cut::non_finite(&own);
        if bad > 0 {
            return Err(non_finite_error(t, bad, "magnitude pruning"));
        }
        into.iter_mut().zip(own).for_each(|(a, b)| *a += b);
        Ok(())
    }

    fn low_histogram(
        &self,
        t: &TensorEntry,
        high: u32,
        into: &mut Histogram,
    ) -> Result<(), CompressError> {
        let reader = Self::reader(t);
        for_each_chunk(self.file, self.index, t, self.control, |chunk| {
            cut::low_histogram(reader, chunk, high, into)
        })
    }

    fn layer_cuts(&self, sparsity: f64) -> Result<Vec<(Cut, Share)>, CompressError> {
        let mut cuts = Vec::with_capacity(self.index.tensors.len());
        for (t, &sel) in self.index.tensors.iter().zip(&self.selected) {
            let rank = cut::prune_count(sparsity, t.numel());
            if !sel || rank == 0 {
                if sel {
                    self.control.advance(2 * t.byte_len());
                }
                cuts.push((Cut::NONE, Share::Own));
                continue;
            }
            let mut high = vec![0u64; BUCKETS];
            self.high_histogram(t, &mut high)?;
            let (bucket, _) = cut::locate(&high, rank);
            let mut low = vec![0u64; BUCKETS];
            self.low_histogram(t, bucket, &mut low)?;
            cuts.push((cut::cut_from(&high, &low, rank), Share::Own));
        }
        Ok(cuts)
    }

    fn global_cut(&self, sparsity: f64) -> Result<Vec<(Cut, Share)>, CompressError> {
        let total: u64 = self.selected_tensors().map(TensorEntry::numel).sum();
        let rank = cut::prune_count(sparsity, total);
        let cut = if rank == 0 {
            self.control.advance(
                2 * self
                    .selected_tensors()
                    .map(TensorEntry::byte_len)
                    .sum::<u64>(),
            );
            Cut::NONE
        } else {
            let mut high = vec![0u64; BUCKETS];
            for t in self.selected_tensors() {
                self.high_histogram(t, &mut high)?;
            }
            let (bucket, _) = cut::locate(&high, rank);
            let mut low = vec![0u64; BUCKETS];
            for t in self.selected_tensors() {
                self.low_histogram(t, bucket, &mut low)?;
            }
            cut::cut_from(&high, &low, rank)
        };
        Ok(vec![(cut, Share::Global); self.index.tensors.len()])
    }

    fn write_pruned(
        &self,
        output: &Path,
        cuts: &[(Cut, Share)],
    ) -> Result<Vec<TensorStats>, CompressError> {
        let mut writer = PipelinedWriter::new(File::create(output)?);
        writer.write(copy_header(self.file, self.index)?)?;
        let mut global_ties = cuts.first().map_or(0, |c| c.0.ties);
        let mut stats = Vec::with_capacity(self.index.tensors.len());
        for ((t, &sel), &(cut, share)) in self.index.tensors.iter().zip(&self.selected).zip(cuts) {
            let mut own_ties = cut.ties;
            let ties = match share {
                Share::Own => &mut own_ties,
                Share::Global => &mut global_ties,
            };
            let (mut before, mut after, mut bad) = (0u64, 0u64, 0u64);
            for chunk in chunks(t) {
                self.control.checkpoint()?;
                let input = map_chunk(self.file, self.index, chunk)?;
                let mut buf = writer.buffer(input.len());
                if sel {
                    let s = prune_chunk(Self::reader(t), &input, &mut buf, cut.key, ties);
                    before += s.nonzero_before;
                    after += s.nonzero_after;
                    bad += s.non_finite;
                } else {
                    buf.copy_from_slice(&input);
                    let n = count_nonzero(t.dtype, &buf);
                    before += n;
                    after += n;
                }
                writer.write(buf)?;
                self.control.advance(chunk.1 as u64);
            }
            if bad > 0 {
                return Err(non_finite_error(t, bad, "magnitude pruning"));
            }
            stats.push(crate::prune::report::tensor_stats(t, sel, before, after));
        }
        writer.finish()?;
        Ok(stats)
    }
}

#[derive(Default, Clone, Copy)]
struct ChunkStats {
    nonzero_before: u64,
    nonzero_after: u64,
    non_finite: u64,
    ties: u64,
}

/// Zeroes every element with key < `cut`, then the first `ties` elements equal to it.
fn prune_chunk(
    reader: KeyReader,
    input: &[u8],
    buf: &mut [u8],
    cut: Key,
    ties: &mut u64,
) -> ChunkStats {
    let blocks: Vec<ChunkStats> = input
        .par_chunks(BLOCK_BYTES)
        .zip(buf.par_chunks_mut(BLOCK_BYTES))
        .map(|(input, block)| {
            let mut s = ChunkStats::default();
            reader.filter_into(input, block, |k| {
                s.nonzero_before += (k != 0) as u64;
                s.non_finite += (k >= INFINITY_KEY) as u64;
                s.ties += (k == cut) as u64;
                let keep = k >= cut;
                s.nonzero_after += (keep && k != 0) as u64;
                keep
            });
            s
        })
        .collect();
    let mut total = ChunkStats::default();
    for (block, s) in buf.chunks_mut(BLOCK_BYTES).zip(&blocks) {
        total.nonzero_before += s.nonzero_before;
        total.nonzero_after += s.nonzero_after;
        total.non_finite += s.non_finite;
        if *ties > 0 && s.ties > 0 {
            let mut quota = (*ties).min(s.ties);
            *ties -= quota;
            reader.retain(block, |k| {
                if k == cut && quota > 0 {
                    quota -= 1;
                    total.nonzero_after -= (k != 0) as u64;
                    false
                } else {
                    true
                }
            });
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn f32_values(bytes: &[u8]) -> Vec<f32> {
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn prunes_below_the_cut_and_exactly_the_tie_quota() {
        let input = f32_bytes(&[0.3, -0.1, 0.3, 0.0, -0.3, 0.9]);
        let mut buf = vec![0xff; input.len()];
        let mut ties = 2;
        let s = prune_chunk(
            KeyReader::F32,
            &input,
            &mut buf,
            0.3f32.to_bits(),
            &mut ties,
        );
        assert_eq!(f32_values(&buf), vec![0.0, 0.0, 0.0, 0.0, -0.3, 0.9]);
        assert_eq!(ties, 0);
        assert_eq!((s.nonzero_before, s.nonzero_after), (5, 2));
    }
}
