//! Runs a pipeline's steps in order, each reading the previous step's output, and names the
//! files the run leaves for the caller to keep.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::chunked_io::map_chunk;
use super::control::Control;
use super::gguf::{export_gguf, GgufReport};
use super::prune::{prune_file, select_tensors};
use super::quantize::{quantize_file, QuantizeReport};
use super::report::PruneReport;
use super::safetensors_index::SafetensorsIndex;
use super::sparse::write_sparse;
use super::st_writer::SpooledWriter;
use super::CompressError;
use crate::domain::{Pipeline, PruneStep, Step, Storage};

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum StepReport {
    Prune(PruneReport),
    Quantize(QuantizeReport),
    Export(GgufReport),
}

impl StepReport {
    pub fn seconds(&self) -> f64 {
        match self {
            StepReport::Prune(p) => p.seconds,
            StepReport::Quantize(q) => q.seconds,
            StepReport::Export(e) => e.seconds,
        }
    }
}

/// A file the run produced, and what it is.
#[derive(Debug, Clone)]
pub struct OutputFile {
    /// `model` (the compressed model) or `model_dequantized`.
    pub kind: &'static str,
    pub path: PathBuf,
    /// Appended to the model's name to make the file name.
    pub suffix: &'static str,
    pub format: &'static str,
    pub read_with: &'static [&'static str],
}

pub struct PipelineRun {
    pub outputs: Vec<OutputFile>,
    pub steps: Vec<StepReport>,
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
const SPARSE_READERS: &[&str] = &[
    "compressd's reader (docs/formats.md)",
    "any safetensors reader, as raw mask/values tensors",
];

pub fn run_pipeline(
    input: &Path,
    workdir: &Path,
    pipeline: &Pipeline,
    model_name: &str,
    control: &Control,
) -> Result<PipelineRun, CompressError> {
    let count = pipeline.steps().len();
    let mut current = input.to_path_buf();
    let mut reports = Vec::with_capacity(count);
    let mut outputs = Vec::new();
    for (i, step) in pipeline.steps().iter().enumerate() {
        control.begin_step(i, count);
        let extension = if matches!(step, Step::Export(_)) {
            "gguf"
        } else {
            "safetensors"
        };
        let output = workdir.join(format!("step-{i}.{extension}"));
        let report = match step {
            Step::Export(e) => {
                export_gguf(&current, &output, e, model_name, control).map(StepReport::Export)
            }
            Step::Prune(p) => {
                prune_step(&current, &output, workdir, i, p, control).map(StepReport::Prune)
            }
            Step::Quantize(q) => {
                let dequantized = q
                    .dequantized_copy
                    .then(|| workdir.join(format!("step-{i}.dequantized.safetensors")));
                let report = quantize_file(&current, &output, dequantized.as_deref(), q, control);
                if let Some(path) = dequantized {
                    outputs.push(OutputFile {
                        kind: "model_dequantized",
                        path,
                        suffix: ".dequantized.safetensors",
                        format: "safetensors, dense: the input's layout with the quantization error baked in",
                        read_with: ANY_SAFETENSORS_READER,
                    });
                }
                report.map(StepReport::Quantize)
            }
        };
        if i > 0 {
            let _ = std::fs::remove_file(&current);
        }
        reports.push(report?);
        current = output;
    }
    control.begin_step(count, count);
    let (format, read_with, suffix) = match pipeline.steps().last() {
        Some(Step::Export(_)) => ("GGUF v3 (ggml block types)", GGUF_READERS, ".gguf"),
        Some(Step::Quantize(q)) if q.store == Storage::Sparse => (
            "safetensors with bitmask-v1 sparse tensors and quantized codes",
            SPARSE_READERS,
            ".compressed.safetensors",
        ),
        Some(Step::Quantize(_)) => (
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
    Ok(PipelineRun {
        outputs,
        steps: reports,
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
