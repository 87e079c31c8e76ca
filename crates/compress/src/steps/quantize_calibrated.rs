//! `quantize` with `method: gptq | awq | awq_gptq`: a transformer's block linears rounded to
//! int4 or int8 on the calibration split of its text dataset, a block at a time
//! (transformer::calibration). AWQ first searches per-channel scales for each foldable pair
//! and folds them into the preceding norm or layer; then each layer is rounded, by GPTQ or to
//! nearest. The file is the compressed-tensors layout plain quantization writes, with the
//! rescaled norms (and biases) beside it, so vLLM and compressd's own reader load it as any
//! other.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

use domain::results::prune::LayerReconstruction;
use domain::results::quantize::ScaledPair;
use domain::{Granularity, QuantizeStep, Scheme};

use crate::obs::gptq::{self, GptqSpec};
use crate::quant::awq;
use crate::quant::encode::{int_parts, Encoded};
use crate::quant::file::{output_metadata, passthrough, quantized_stats, totals, write_parts};
use crate::quant::int::{self, IntSpec, Quantized};
use crate::quant::ErrorSums;
use crate::steps::calibrated::{selected_layers, sequences, transformer_job, BlockWriter};
use crate::steps::{Format, StepContext, StepOutput, StepReport};
use crate::transformer::calibration::{calibrate, BlockResult, InputStats, Rewrite};
use crate::transformer::SafetensorsWeights;
use crate::{CompressError, SafetensorsIndex};

type R<T> = Result<T, CompressError>;

pub fn run(step: &QuantizeStep, cx: &mut StepContext) -> R<StepOutput> {
    let started = Instant::now();
    let name = step.method.name();
    let job = transformer_job(cx, name)?;
    let spec = int_spec(step.scheme)?;
    if step.dequantized_copy {
        return Err(CompressError::InvalidRequest(format!(
            "dequantized_copy is not written by method {name}: read the quantized model with compressd's reader, or quantize with method rtn"
        )));
    }
    let seqs = sequences(job, &step.calibration)?;
    let index = SafetensorsIndex::open(cx.input)?;
    let selected = selected_layers(&index, &step.selection, job, name, "quantize")?;
    crate::quant::file::check_groups(
        &index.tensors,
        &selection_mask(&index, &selected),
        step.scheme,
    )?;

    let output = cx.output("safetensors");
    let weights = SafetensorsWeights::open(cx.input)?;
    let mut writer = BlockWriter::new(&index, &output)?;
    let outcomes = RefCell::new(HashMap::new());
    let scaled = RefCell::new(Vec::new());
    let mut method = Rounder {
        spec,
        gptq: step
            .method
            .uses_gptq()
            .then_some((step.calibration.dampening, step.act_order)),
        awq: step.method.uses_awq(),
        outcomes: &outcomes,
        scaled: &scaled,
    };
    let mut stats = Vec::with_capacity(index.tensors.len());
    let mut layers = Vec::new();
    let mut pairs = Vec::new();
    let mut model_error = ErrorSums::default();
    let mut done = |block: usize, result: BlockResult| -> R<()> {
        for (tensor, values) in &result.tensors {
            writer.dense(tensor, values)?;
        }
        // Every pair searched in this block (scaled or left alone), in order.
        for (before, found) in scaled.borrow_mut().drain(..) {
            pairs.push(ScaledPair {
                before,
                block,
                ratio: found.ratio,
                error_before: found.error_before,
                error_after: found.error_after,
                scale_min: found.scales.iter().copied().fold(f32::INFINITY, f32::min),
                scale_max: found.scales.iter().copied().fold(0.0, f32::max),
            });
        }
        for r in result.layers {
            let t = writer.entry(&r.name)?;
            let outcome: Rounded = outcomes.borrow_mut().remove(&r.name).ok_or_else(|| {
                CompressError::InvalidModel(format!("{} was not rounded", r.name))
            })?;
            let enc = Encoded {
                parts: int_parts(outcome.quantized, &t.shape, step.scheme),
                restored: Vec::new(),
                error: outcome.error,
                overflowed: 0,
                flushed_to_zero: 0,
                codebook_size: None,
            };
            let bytes_after = write_parts(&mut writer.out, t, &enc, step.store)?;
            writer.wrote(&r.name);
            model_error.merge(&enc.error);
            stats.push(quantized_stats(t, &enc, bytes_after, enc.error.stats()));
            let zeros = r.weight.iter().filter(|v| **v == 0.0).count();
            layers.push(LayerReconstruction {
                name: r.name,
                block,
                sparsity: zeros as f64 / r.weight.len().max(1) as f64,
                reconstruction_error: r.reconstruction_error,
                seconds: r.seconds,
                dampening: outcome.dampening,
                fallback: outcome.fallback,
            });
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
    writer.copy_rest(cx.input, cx.control, |t, _| stats.push(passthrough(t)))?;
    let metadata = output_metadata(&index, &selection_mask(&index, &selected), step);
    let file_bytes_after = writer.out.finish(&metadata, &output)?;
    let mut report = totals(step, stats, model_error.stats());
    report.file_bytes_before = index.file_len;
    report.file_bytes_after = file_bytes_after;
    report.seconds = started.elapsed().as_secs_f64();
    report.calibration = Some(seqs.used);
    report.layers = layers;
    report.scaled = pairs;
    Ok(StepOutput::wrote(
        output,
        Format::quantized(step.store == domain::Storage::Sparse),
        StepReport::Quantize(report),
    ))
}

fn selection_mask(index: &SafetensorsIndex, selected: &HashSet<String>) -> Vec<bool> {
    index
        .tensors
        .iter()
        .map(|t| selected.contains(&t.name))
        .collect()
}

/// The integer grid of an int4 or int8 scheme (per channel or per group).
fn int_spec(scheme: Scheme) -> R<IntSpec> {
    let (bits, symmetric, granularity) = match scheme {
        Scheme::Int4 {
            symmetric,
            group_size,
        } => (4, symmetric, int::Granularity::Group(group_size)),
        Scheme::Int8 {
            symmetric,
            granularity: Granularity::Group(n),
        } => (8, symmetric, int::Granularity::Group(n)),
        Scheme::Int8 {
            symmetric,
            granularity: Granularity::Channel,
        } => (8, symmetric, int::Granularity::Channel),
        other => {
            return Err(CompressError::InvalidRequest(format!(
                "calibrated methods round to int4 or int8 per channel or group, not {other:?}"
            )))
        }
    };
    Ok(IntSpec {
        bits,
        symmetric,
        granularity,
    })
}

/// One layer's codes, and what happened on the way.
struct Rounded {
    quantized: Quantized,
    error: ErrorSums,
    dampening: Option<f64>,
    fallback: Option<String>,
}

struct Rounder<'a> {
    spec: IntSpec,
    /// GPTQ's damping and act-order; None rounds to nearest.
    gptq: Option<(f64, bool)>,
    awq: bool,
    outcomes: &'a RefCell<HashMap<String, Rounded>>,
    /// AWQ's searches in the order they ran, by the preceding tensor's name.
    scaled: &'a RefCell<Vec<(String, awq::Search)>>,
}

impl Rewrite for Rounder<'_> {
    fn op(&self) -> &'static str {
        "quantize"
    }

    fn needs_hessian(&self) -> bool {
        self.gptq.is_some() || self.awq
    }

    fn rescale(
        &mut self,
        before: &str,
        after: &[(String, Vec<f32>, [usize; 2])],
        input: &InputStats,
    ) -> R<Option<Vec<f32>>> {
        if !self.awq {
            return Ok(None);
        }
        let Some(h) = &input.hessian else {
            return Ok(None);
        };
        let layers: Vec<(&[f32], usize)> = after
            .iter()
            .map(|(_, w, [rows, _])| (&w[..], *rows))
            .collect();
        let found = awq::search(&layers, &input.mean_abs(), h, self.spec);
        let scales = found.ratio.is_some().then(|| found.scales.clone());
        self.scaled.borrow_mut().push((before.to_owned(), found));
        Ok(scales)
    }

    fn layer(
        &mut self,
        name: &str,
        w: &mut [f32],
        [rows, cols]: [usize; 2],
        input: &InputStats,
    ) -> R<()> {
        let original = w.to_vec();
        let mut rounded = match (self.gptq, &input.hessian) {
            (Some((dampening, act_order)), Some(h)) => {
                let group = self.spec.group_len(rows, cols);
                let spec = GptqSpec {
                    bits: self.spec.bits,
                    symmetric: self.spec.symmetric,
                    group,
                    act_order,
                };
                let out = gptq::quantize(w, cols, h, spec, dampening);
                Rounded {
                    quantized: out.quantized,
                    error: ErrorSums::default(),
                    dampening: out.dampening,
                    fallback: out.fallback,
                }
            }
            _ => {
                let (quantized, _) =
                    int::quantize_measured(&original, rows, cols, self.spec, Some(w));
                Rounded {
                    quantized,
                    error: ErrorSums::default(),
                    dampening: None,
                    fallback: None,
                }
            }
        };
        rounded.error.add(&original, w);
        self.outcomes.borrow_mut().insert(name.to_owned(), rounded);
        Ok(())
    }
}
