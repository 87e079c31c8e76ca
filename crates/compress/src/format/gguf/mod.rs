//! GGUF export (llama.cpp's format, version 3), streamed: the header is written first from the
//! sizes each tensor will have, then tensors are quantized one at a time, their rows split
//! across all cores (candle's `QTensor::quantize` runs on one thread, and its
//! `gguf_file::write` wants every tensor in memory at once).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::control::Control;
use crate::format::chunked_io::map_chunk;
use crate::format::dtype::Dtype;
use crate::format::safetensors_index::{SafetensorsIndex, TensorEntry};
use crate::prune::select_tensors;
use crate::quant::file::{as_f32, load_f32};
use crate::quant::ggml_blocks::{self, Block};
use crate::quant::ErrorSums;
use crate::{require_finite, CompressError};
pub use domain::results::quantize::GgufReport;
pub use domain::results::quantize::GgufTensorStats;
use domain::{ExportStep, GgufType};
use header::{ggml_dims, header, Kv, TensorInfo};

pub(crate) const ALIGNMENT: u64 = 32;
pub(crate) const MAGIC: u32 = 0x4655_4747;

pub fn ggml_dtype(t: GgufType) -> GgmlDType {
    match t {
        GgufType::Q8_0 => GgmlDType::Q8_0,
        GgufType::Q4_0 => GgmlDType::Q4_0,
        GgufType::Q4_1 => GgmlDType::Q4_1,
        GgufType::Q5_0 => GgmlDType::Q5_0,
        GgufType::Q5_1 => GgmlDType::Q5_1,
        GgufType::Q2K => GgmlDType::Q2K,
        GgufType::Q3K => GgmlDType::Q3K,
        GgufType::Q4K => GgmlDType::Q4K,
        GgufType::Q5K => GgmlDType::Q5K,
        GgufType::Q6K => GgmlDType::Q6K,
        GgufType::F16 => GgmlDType::F16,
        GgufType::Q4KM => GgmlDType::Q4K,
        GgufType::Q5KM => GgmlDType::Q5K,
    }
}

/// ggml's type ids (ggml.h `enum ggml_type`).
pub(crate) fn type_id(t: Stored) -> u32 {
    match t {
        Stored::F32 => 0,
        Stored::F16 => 1,
        Stored::Quant(q) => match q {
            GgufType::Q4_0 => 2,
            GgufType::Q4_1 => 3,
            GgufType::Q5_0 => 6,
            GgufType::Q5_1 => 7,
            GgufType::Q8_0 => 8,
            GgufType::Q2K => 10,
            GgufType::Q3K => 11,
            GgufType::Q4K => 12,
            GgufType::Q5K => 13,
            GgufType::Q6K => 14,
            GgufType::F16 => 1,
            GgufType::Q4KM => 12,
            GgufType::Q5KM => 13,
        },
        Stored::Int(Dtype::I8) => 24,
        Stored::Int(Dtype::I16) => 25,
        Stored::Int(Dtype::I32) => 26,
        Stored::Int(Dtype::I64) => 27,
        Stored::Int(_) => 28,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Stored {
    F32,
    F16,
    Quant(GgufType),
    /// I8, I16, I32, I64 and F64 are stored as they are.
    Int(Dtype),
}

struct Planned<'a> {
    entry: &'a TensorEntry,
    stored: Stored,
    bytes: u64,
    why: Option<String>,
}

fn plan<'a>(
    index: &'a SafetensorsIndex,
    selected: &[bool],
    target: GgufType,
) -> (Vec<Planned<'a>>, Vec<String>) {
    let q = ggml_dtype(target);
    let mut planned = Vec::new();
    let mut skipped = Vec::new();
    for (t, &sel) in index.tensors.iter().zip(selected) {
        let n = t.numel();
        let float_fallback = |why: Option<String>| {
            let stored = if t.dtype == Dtype::F16 {
                Stored::F16
            } else {
                Stored::F32
            };
            let width = if stored == Stored::F16 { 2 } else { 4 };
            Planned {
                entry: t,
                stored,
                bytes: n * width,
                why,
            }
        };
        let p = match t.dtype {
            Dtype::F32 | Dtype::F16 | Dtype::BF16 => {
                let cols = t.shape.last().copied().unwrap_or(1);
                if !sel {
                    float_fallback(Some("not selected (1-D, or excluded)".into()))
                } else if cols % q.block_size() as u64 != 0 {
                    float_fallback(Some(format!(
                        "row length {cols} is not a multiple of the {}-value block",
                        q.block_size()
                    )))
                } else {
                    let bytes = n / q.block_size() as u64 * q.type_size() as u64;
                    Planned {
                        entry: t,
                        stored: Stored::Quant(target),
                        bytes,
                        why: None,
                    }
                }
            }
            Dtype::I8 | Dtype::I16 | Dtype::I32 | Dtype::I64 | Dtype::F64 => Planned {
                entry: t,
                stored: Stored::Int(t.dtype),
                bytes: t.byte_len(),
                why: Some("integer or F64 tensor".into()),
            },
            other => {
                skipped.push(format!("{} ({} has no GGUF type)", t.name, other.name()));
                continue;
            }
        };
        planned.push(p);
    }
    (planned, skipped)
}

pub(crate) fn stored_name(s: Stored) -> String {
    match s {
        Stored::F32 => "F32".into(),
        Stored::F16 => "F16".into(),
        Stored::Quant(q) => q.name().into(),
        Stored::Int(d) => d.name().into(),
    }
}

pub(crate) fn write_str(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

pub(crate) fn padding(len: u64) -> usize {
    ((ALIGNMENT - len % ALIGNMENT) % ALIGNMENT) as usize
}

pub fn export_gguf(
    input: &Path,
    output: &Path,
    step: &ExportStep,
    model_name: &str,
    control: &Control,
) -> Result<GgufReport, CompressError> {
    let started = Instant::now();
    let index = SafetensorsIndex::open(input)?;
    let selected = select_tensors(&index.tensors, &step.selection, "export")?;
    let (planned, skipped) = plan(&index, &selected, step.ggml_type.block());
    control.add_work(planned.iter().map(|p| p.entry.byte_len()).sum());

    let mut out = BufWriter::with_capacity(8 << 20, File::create(output)?);
    out.write_all(&candle_header(&planned, model_name)?)?;

    let file = File::open(input)?;
    let mut stats = Vec::with_capacity(planned.len());
    let mut model_error = ErrorSums::default();
    for p in &planned {
        control.checkpoint()?;
        let t = p.entry;
        let window = map_chunk(&file, &index, (t.begin, t.byte_len() as usize))?;
        let (bytes, sums) = tensor_bytes(p, &window)?;
        if let Some(sums) = &sums {
            model_error.merge(sums);
        }
        let error = sums.map(|s| s.stats());
        debug_assert_eq!(bytes.len() as u64, p.bytes);
        out.write_all(&bytes)?;
        out.write_all(&vec![0u8; padding(bytes.len() as u64)])?;
        control.advance(t.byte_len());
        stats.push(GgufTensorStats {
            name: t.name.clone(),
            stored_as: stored_name(p.stored),
            parameters: t.numel(),
            bytes_before: t.byte_len(),
            bytes_after: p.bytes,
            bits_per_weight: p.bytes as f64 * 8.0 / t.numel().max(1) as f64,
            error,
            kept_because: p.why.clone(),
            imatrix: false,
        });
    }
    out.flush()?;
    drop(out);
    let file_bytes_after = std::fs::metadata(output)?.len();
    let mut report = totals(step, stats, skipped, model_error.stats());
    report.file_bytes_before = index.file_len;
    report.file_bytes_after = file_bytes_after;
    report.compression_ratio = index.file_len as f64 / file_bytes_after.max(1) as f64;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// A tensor's values in block type `q`, with the error of what ggml restores from them.
pub(crate) fn encode(
    q: GgufType,
    values: &[f32],
    cols: usize,
) -> Result<(Vec<u8>, ErrorSums), CompressError> {
    Ok(match q {
        GgufType::Q8_0 => ggml_blocks::encode(Block::Q8_0, values),
        GgufType::Q4_0 => ggml_blocks::encode(Block::Q4_0, values),
        GgufType::F16 => {
            let bytes: Vec<u8> = values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect();
            let restored: Vec<f32> = values
                .iter()
                .map(|v| half::f16::from_f32(*v).to_f32())
                .collect();
            let mut sums = ErrorSums::default();
            sums.add(values, &restored);
            (bytes, sums)
        }
        _ => quantize_rows(values, cols, ggml_dtype(q))?,
    })
}

/// Quantizes a row-major matrix with `cols` per row, rows split across cores, and measures
/// the error of the blocks as ggml would dequantize them.
fn quantize_rows(
    values: &[f32],
    cols: usize,
    dtype: GgmlDType,
) -> Result<(Vec<u8>, ErrorSums), CompressError> {
    let rows_per_chunk = ((256 << 10) / cols.max(1)).max(1);
    let parts: Vec<Result<(Vec<u8>, ErrorSums), candle_core::Error>> = values
        .par_chunks(rows_per_chunk * cols)
        .map(|chunk| {
            let rows = chunk.len() / cols;
            let t = Tensor::from_slice(chunk, (rows, cols), &Device::Cpu)?;
            let q = QTensor::quantize(&t, dtype)?;
            let restored = q
                .dequantize(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let mut sums = ErrorSums::default();
            sums.add(chunk, &restored);
            Ok((q.data()?.into_owned(), sums))
        })
        .collect();
    let mut bytes = Vec::new();
    let mut sums = ErrorSums::default();
    for part in parts {
        let (b, s) = part
            .map_err(|e| CompressError::InvalidRequest(format!("GGUF quantization failed: {e}")))?;
        bytes.extend_from_slice(&b);
        sums.merge(&s);
    }
    Ok((bytes, sums))
}

/// The header of a file for candle: its metadata names the model.
fn candle_header(planned: &[Planned], model_name: &str) -> std::io::Result<Vec<u8>> {
    let kvs = [
        ("general.architecture", Kv::Str("compressd".into())),
        ("general.name", Kv::Str(model_name.into())),
        ("general.alignment", Kv::U32(ALIGNMENT as u32)),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let tensors: Vec<TensorInfo> = planned
        .iter()
        .map(|p| TensorInfo {
            name: &p.entry.name,
            dims: ggml_dims(&p.entry.shape),
            type_id: type_id(p.stored),
            bytes: p.bytes,
        })
        .collect();
    header(&kvs, &tensors)
}

/// A tensor's bytes as stored, and for a quantized one the error sums.
fn tensor_bytes(p: &Planned, window: &[u8]) -> Result<(Vec<u8>, Option<ErrorSums>), CompressError> {
    let t = p.entry;
    Ok(match p.stored {
        Stored::Quant(q) => {
            let values = as_f32(window, t.dtype);
            require_finite(t, &values, "GGUF export")?;
            let cols = *t.shape.last().expect("rank ≥ 1") as usize;
            let (bytes, sums) = encode(q, &values, cols)?;
            (bytes, Some(sums))
        }
        Stored::F32 => (
            load_f32(window, t.dtype)
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            None,
        ),
        Stored::F16 | Stored::Int(_) => (window.to_vec(), None),
    })
}

/// The step's report over its tensors (file sizes and time filled in by the caller).
pub(crate) fn totals(
    step: &ExportStep,
    stats: Vec<GgufTensorStats>,
    skipped: Vec<String>,
    error: crate::quant::ErrorStats,
) -> GgufReport {
    let quantized: Vec<&GgufTensorStats> = stats.iter().filter(|s| s.error.is_some()).collect();
    let (params, bytes): (u64, u64) = (
        quantized.iter().map(|s| s.parameters).sum(),
        quantized.iter().map(|s| s.bytes_after).sum(),
    );
    GgufReport {
        op: "export",
        format: "gguf",
        ggml_type: step.ggml_type,
        quantized_tensors: quantized.len() as u64,
        kept_tensors: stats
            .iter()
            .filter_map(|s| {
                s.kept_because
                    .as_ref()
                    .map(|why| format!("{} as {}: {why}", s.name, s.stored_as))
            })
            .collect(),
        skipped_tensors: skipped,
        bits_per_weight: bytes as f64 * 8.0 / params.max(1) as f64,
        error,
        file_bytes_before: 0,
        file_bytes_after: 0,
        compression_ratio: 0.0,
        tensors: stats,
        seconds: 0.0,
        calibration: None,
    }
}

mod header;
pub mod imatrix;
pub mod llama;
pub mod reader;

#[cfg(test)]
mod tests;
