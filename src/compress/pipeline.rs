//! Runs a pipeline's steps in order, each reading the previous step's output, and names the
//! files the run leaves for the caller to keep.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::chunked_io::map_chunk;
use super::control::Control;
use super::entropy::{compress_file, EntropyReport};
use super::gguf::{export_gguf, GgufReport};
use super::nn::auto::{auto_latency, auto_step, AutoReport};
use super::nn::steps::{
    distill_step, evaluate_step, prune_step as model_prune_step, qat_step, sensitivity_step,
    train_step, DistillReport, EvaluateStepReport, ModelPruneReport, ModelState, QatReport,
    SensitivityReport, TrainStepReport,
};
use super::nn::{EvalReport, Network};
use super::prune::{prune_file, select_tensors};
use super::quantize::{quantize_file, QuantizeReport};
use super::reader::read_dense;
use super::report::PruneReport;
use super::safetensors_index::SafetensorsIndex;
use super::sparse::write_sparse;
use super::st_writer::SpooledWriter;
use super::CompressError;
use crate::domain::{EvaluateStep, Objective, Pipeline, PruneStep, QatStep, Step, Storage};

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum StepReport {
    Prune(PruneReport),
    Quantize(QuantizeReport),
    Export(GgufReport),
    ModelPrune(ModelPruneReport),
    Train(TrainStepReport),
    Evaluate(EvaluateStepReport),
    Sensitivity(SensitivityReport),
    Entropy(EntropyReport),
    Distill(DistillReport),
    Qat(QatReport),
    Auto(AutoReport),
}

impl StepReport {
    pub fn seconds(&self) -> f64 {
        match self {
            StepReport::Prune(p) => p.seconds,
            StepReport::Quantize(q) => q.seconds,
            StepReport::Export(e) => e.seconds,
            StepReport::ModelPrune(p) => p.seconds,
            StepReport::Train(t) => t.train.seconds,
            StepReport::Evaluate(e) => e.seconds,
            StepReport::Sensitivity(s) => s.seconds,
            StepReport::Entropy(e) => e.seconds,
            StepReport::Distill(d) => d.seconds,
            StepReport::Qat(q) => q.seconds,
            StepReport::Auto(a) => a.seconds,
        }
    }
}

/// The model measured on the evaluation split before the first step and after the last.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub before: EvalReport,
    pub after: Option<EvalReport>,
    /// Why `after` is missing, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_note: Option<String>,
}

/// A file the run produced, and what it is.
#[derive(Debug, Clone)]
pub struct OutputFile {
    /// `model` (the compressed model) or `model_dequantized`.
    pub kind: &'static str,
    pub path: PathBuf,
    /// Appended to the model's name to make the file name.
    pub suffix: String,
    pub format: String,
    pub read_with: &'static [&'static str],
}

pub struct PipelineRun {
    pub outputs: Vec<OutputFile>,
    pub steps: Vec<StepReport>,
    pub evaluation: Option<Evaluation>,
    /// Weight distributions before and after, for the layers that changed most.
    pub histograms: Vec<Histogram>,
}

/// Counts of non-zero weights in equal bins; zeros are counted apart (pruning piles them up).
#[derive(Debug, Clone, Serialize)]
pub struct Histogram {
    pub tensor: String,
    pub low: f32,
    pub high: f32,
    pub before: Vec<u64>,
    pub after: Vec<u64>,
    pub zeros_before: u64,
    pub zeros_after: u64,
}

/// Histograms are drawn for models up to this size (they read both files whole).
const HISTOGRAM_MAX_BYTES: u64 = 256 << 20;
const BINS: usize = 40;

fn histograms(input: &Path, result: &Path) -> Vec<Histogram> {
    let small = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.len() <= HISTOGRAM_MAX_BYTES);
    if !(small(input) && small(result)) {
        return Vec::new();
    }
    let (Ok(before), Ok(after)) = (read_dense(input), read_dense(result)) else {
        return Vec::new();
    };
    let mut changed: Vec<(f64, &String)> = before
        .iter()
        .filter(|(_, (shape, _))| shape.len() >= 2)
        .filter_map(|(name, (_, b))| {
            let (_, a) = after.get(name)?;
            let zeros =
                |v: &[f32]| v.iter().filter(|x| **x == 0.0).count() as f64 / v.len().max(1) as f64;
            let moved = if a.len() == b.len() {
                let d: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
                let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
                (d / n.max(1e-30)).sqrt()
            } else {
                1.0
            };
            Some(((zeros(a) - zeros(b)).abs() + moved, name))
        })
        .collect();
    changed.sort_by(|x, y| y.0.total_cmp(&x.0));
    changed
        .into_iter()
        .take(3)
        .map(|(_, name)| {
            let (b, a) = (&before[name].1, &after[name].1);
            let nonzero = |v: &[f32]| v.iter().copied().filter(|x| *x != 0.0).collect::<Vec<_>>();
            let (nb, na) = (nonzero(b), nonzero(a));
            let low = nb.iter().chain(&na).copied().fold(f32::MAX, f32::min);
            let high = nb.iter().chain(&na).copied().fold(f32::MIN, f32::max);
            let (low, high) = if low < high { (low, high) } else { (-1.0, 1.0) };
            let count = |v: &[f32]| {
                let mut c = vec![0u64; BINS];
                for x in v {
                    let i = (((x - low) / (high - low)) * BINS as f32) as usize;
                    c[i.min(BINS - 1)] += 1;
                }
                c
            };
            Histogram {
                tensor: name.clone(),
                low,
                high,
                before: count(&nb),
                after: count(&na),
                zeros_before: (b.len() - nb.len()) as u64,
                zeros_after: (a.len() - na.len()) as u64,
            }
        })
        .collect()
}

const ANY_SAFETENSORS_READER: &[&str] = &[
    "safetensors (Python, Rust)",
    "PyTorch via safetensors.torch.load_file",
    "candle",
    "transformers",
];
const COMPRESSED_TENSORS: &[&str] = &[
    "vLLM and llm-compressor (compressed-tensors 0.9 layout)",
    "compressd's reader (docs/formats.md)",
    "any safetensors reader, as raw tensors",
];
const GGUF_READERS: &[&str] = &[
    "llama.cpp",
    "gguf (Python reference reader)",
    "candle (quantized::gguf_file)",
];
const ZSTD_READERS: &[&str] = &[
    "zstd -d (any zstd library), then the readers of the restored format",
    "compressd's reader (docs/formats.md), directly",
];
const SPARSE_READERS: &[&str] = &[
    "compressd's reader (docs/formats.md)",
    "any safetensors reader, as raw mask/values tensors",
];

pub fn run_pipeline(
    input: &Path,
    workdir: &Path,
    pipeline: &Pipeline,
    model_name: &str,
    state: &mut ModelState,
    control: &Control,
) -> Result<PipelineRun, CompressError> {
    let count = pipeline.steps().len();
    let mut current = input.to_path_buf();
    let mut reports = Vec::with_capacity(count);
    let mut outputs = Vec::new();
    let measured = state.arch.is_some() && state.data.is_some();
    let before = if measured {
        Some(state.evaluate(&state.load(input)?, &EvaluateStep::default())?)
    } else {
        None
    };
    // The dense weights the final model dequantizes to, when a step writes another format.
    let mut dense_twin: Option<PathBuf> = None;
    for (i, step) in pipeline.steps().iter().enumerate() {
        control.begin_step(i, count);
        let extension = match step {
            Step::Export(_) => "gguf",
            Step::Entropy(_) => "zst",
            _ => "safetensors",
        };
        let output = workdir.join(format!("step-{i}.{extension}"));
        let (report, wrote) = match step {
            Step::Export(e) => (
                export_gguf(&current, &output, e, model_name, control).map(StepReport::Export),
                true,
            ),
            Step::Prune(p) if p.in_memory() => {
                let dense = workdir.join(format!("step-{i}.dense.safetensors"));
                let report = model_prune_step(state, &current, &dense, p, i, control);
                let report = match (report, p.store) {
                    (Ok(r), Storage::Sparse) => sparsify(&dense, &output, p).map(|_| r),
                    (Ok(r), Storage::Dense) => std::fs::rename(&dense, &output)
                        .map(|_| r)
                        .map_err(Into::into),
                    (Err(e), _) => Err(e),
                };
                if p.store == Storage::Sparse && measured {
                    dense_twin = Some(dense);
                }
                (report.map(StepReport::ModelPrune), true)
            }
            Step::Prune(p) => (
                prune_step(&current, &output, workdir, i, p, control).map(StepReport::Prune),
                true,
            ),
            Step::Train(r) | Step::Finetune(r) => {
                let finetune = matches!(step, Step::Finetune(_));
                (
                    train_step(state, &current, &output, r, finetune, i, control)
                        .map(StepReport::Train),
                    true,
                )
            }
            Step::Entropy(e) => (
                compress_file(&current, &output, e, control).map(StepReport::Entropy),
                true,
            ),
            Step::Qat(q) => {
                let dequantized = q
                    .quantize
                    .dequantized_copy
                    .then(|| workdir.join(format!("step-{i}.dequantized.safetensors")));
                let scratch = workdir.join(format!("step-{i}.qat"));
                let report = qat_step(
                    state,
                    &current,
                    &output,
                    dequantized.as_deref(),
                    &scratch,
                    q,
                    i,
                    control,
                );
                if let Some(path) = dequantized {
                    outputs.push(OutputFile {
                        kind: "model_dequantized",
                        path,
                        suffix: ".dequantized.safetensors".into(),
                        format: "safetensors, dense: the input's layout with the quantization error baked in".into(),
                        read_with: ANY_SAFETENSORS_READER,
                    });
                }
                (report.map(StepReport::Qat), true)
            }
            Step::Auto(a) => {
                let report = match (&state.arch, &state.data, a.objective) {
                    (Some(arch), Some(data), Objective::Size) => auto_step(
                        arch,
                        data,
                        &state.data_label,
                        &current,
                        &output,
                        workdir,
                        a,
                        control,
                    )
                    .map(|(report, arch)| {
                        if arch.is_some() {
                            state.arch = arch;
                        }
                        report
                    }),
                    (Some(arch), Some(data), Objective::Latency) => {
                        auto_latency(arch, data, &state.data_label, &current, &output, a, control)
                            .map(|(report, arch)| {
                                if arch.is_some() {
                                    state.arch = arch;
                                }
                                report
                            })
                    }
                    _ => Err(CompressError::InvalidRequest(
                        "auto needs a model architecture and a dataset".into(),
                    )),
                };
                (report.map(StepReport::Auto), true)
            }
            Step::Distill(d) => (
                distill_step(state, &current, &output, d, i, control).map(StepReport::Distill),
                true,
            ),
            Step::Evaluate(e) => (
                evaluate_step(state, &current, e).map(StepReport::Evaluate),
                false,
            ),
            Step::Sensitivity(s) => (
                sensitivity_step(state, &current, s, control).map(StepReport::Sensitivity),
                false,
            ),
            Step::Quantize(q) => {
                let dequantized = q
                    .dequantized_copy
                    .then(|| workdir.join(format!("step-{i}.dequantized.safetensors")));
                let report = quantize_file(&current, &output, dequantized.as_deref(), q, control);
                if let Some(path) = dequantized {
                    outputs.push(OutputFile {
                        kind: "model_dequantized",
                        path,
                        suffix: ".dequantized.safetensors".into(),
                        format: "safetensors, dense: the input's layout with the quantization error baked in".into(),
                        read_with: ANY_SAFETENSORS_READER,
                    });
                }
                (report.map(StepReport::Quantize), true)
            }
        };
        if wrote && i > 0 && current != input {
            let _ = std::fs::remove_file(&current);
        }
        reports.push(report?);
        if wrote {
            current = output;
        }
    }
    let evaluation = match before {
        Some(before) => Some(evaluate_after(
            state,
            pipeline,
            &current,
            dense_twin.as_deref(),
            before,
        )?),
        None => None,
    };
    if let Some(arch) = &state.arch {
        let path = workdir.join("architecture.json");
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&arch.to_json()).map_err(std::io::Error::other)?,
        )?;
        outputs.push(OutputFile {
            kind: "architecture",
            path,
            suffix: ".architecture.json".into(),
            format: "compressd architecture JSON (the model's layers after every step)".into(),
            read_with: &["compressd (POST /v1/models with an architecture part)"],
        });
    }
    control.begin_step(count, count);
    let entropy = matches!(pipeline.steps().last(), Some(Step::Entropy(_)));
    let written = pipeline
        .steps()
        .iter()
        .rev()
        .find(|s| !matches!(s, Step::Entropy(_)));
    let (format, read_with, suffix) = match written {
        Some(Step::Export(_)) => ("GGUF v3 (ggml block types)", GGUF_READERS, ".gguf"),
        Some(Step::Quantize(q) | Step::Qat(QatStep { quantize: q, .. }))
            if q.store == Storage::Sparse =>
        {
            (
                "safetensors with bitmask-v1 sparse tensors and quantized codes",
                SPARSE_READERS,
                ".compressed.safetensors",
            )
        }
        Some(Step::Quantize(_) | Step::Qat(_)) => (
            "safetensors, quantized (compressed-tensors conventions)",
            COMPRESSED_TENSORS,
            ".compressed.safetensors",
        ),
        Some(Step::Prune(p)) if p.store == Storage::Sparse => (
            "safetensors with bitmask-v1 sparse tensors",
            SPARSE_READERS,
            ".compressed.safetensors",
        ),
        _ => (
            "safetensors, dense: same names, shapes, dtypes and metadata as the input",
            ANY_SAFETENSORS_READER,
            ".compressed.safetensors",
        ),
    };
    let auto_won = matches!(reports.last(),
        Some(StepReport::Auto(a)) if a.winner.is_some() && a.objective == "size");
    let (format, read_with, suffix) = if auto_won {
        (
            "zstd-compressed safetensors with bitmask-v1 sparse k-means codes (the winner of auto)",
            ZSTD_READERS,
            ".compressed.safetensors",
        )
    } else {
        (format, read_with, suffix)
    };
    let (format, read_with, suffix) = if entropy || auto_won {
        (
            format!("zstd-compressed file; restored, it is {format}"),
            ZSTD_READERS,
            format!("{suffix}.zst"),
        )
    } else {
        (format.to_owned(), read_with, suffix.to_owned())
    };
    outputs.insert(
        0,
        OutputFile {
            kind: "model",
            path: current,
            suffix,
            format,
            read_with,
        },
    );
    let histograms = if matches!(written, Some(Step::Export(_))) {
        Vec::new()
    } else {
        histograms(input, &outputs[0].path)
    };
    Ok(PipelineRun {
        outputs,
        steps: reports,
        evaluation,
        histograms,
    })
}

fn evaluate_after(
    state: &ModelState,
    pipeline: &Pipeline,
    current: &Path,
    dense_twin: Option<&Path>,
    before: EvalReport,
) -> Result<Evaluation, CompressError> {
    if matches!(pipeline.steps().last(), Some(Step::Export(_))) {
        return Ok(Evaluation {
            before,
            after: None,
            after_note: Some("GGUF files are measured by the tools that read them; add an evaluate step before export".into()),
        });
    }
    let source = dense_twin.unwrap_or(current);
    let arch = state
        .arch
        .clone()
        .expect("measured runs have an architecture");
    let net = Network::from_dense(
        arch,
        read_dense(source)?,
        Default::default(),
        Default::default(),
    )?;
    let after = state.evaluate(&net, &EvaluateStep::default())?;
    if let Some(twin) = dense_twin {
        let _ = std::fs::remove_file(twin);
    }
    Ok(Evaluation {
        before,
        after: Some(after),
        after_note: None,
    })
}

fn prune_step(
    input: &Path,
    output: &Path,
    workdir: &Path,
    i: usize,
    step: &PruneStep,
    control: &Control,
) -> Result<PruneReport, CompressError> {
    if step.store == Storage::Dense {
        return prune_file(input, output, step, control);
    }
    let dense = workdir.join(format!("step-{i}.dense.safetensors"));
    let mut report = prune_file(input, &dense, step, control)?;
    let written = sparsify(&dense, output, step);
    let _ = std::fs::remove_file(&dense);
    report.file_bytes_after = written?;
    Ok(report)
}

/// Rewrites the pruned tensors of a dense file in bitmask-v1 form.
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
