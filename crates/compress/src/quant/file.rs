//! The `quantize` step: selected weights become compressed-tensors style quantized tensors
//! (or our sparse form); a second file holds the dequantized weights in the original layout,
//! for tools that read no quantized format. One tensor is in memory at a time.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::time::Instant;

use serde_json::json;

use crate::control::Control;
use crate::format::chunked_io::{copy_header, map_chunk, PipelinedWriter};
use crate::format::dtype::Dtype;
use crate::format::safetensors_index::{SafetensorsIndex, TensorEntry};
use crate::format::sparse::write_sparse;
use crate::format::st_writer::SpooledWriter;
use crate::prune::select_tensors;
use crate::quant::encode::{encode, Encoded};
use crate::quant::{ErrorStats, ErrorSums};
use crate::{require_finite, CompressError};
pub use domain::results::quantize::QuantTensorStats;
pub use domain::results::quantize::QuantizeReport;
use domain::{Granularity, QuantizeStep, Scheme, Storage};

/// A tensor's values as f32: F32 read in place from the mapped file when aligned, other
/// dtypes converted on every core.
pub fn as_f32(bytes: &[u8], dtype: Dtype) -> std::borrow::Cow<'_, [f32]> {
    match bytemuck::try_cast_slice::<u8, f32>(bytes) {
        Ok(v) if dtype == Dtype::F32 && cfg!(target_endian = "little") => v.into(),
        _ => load_f32(bytes, dtype).into(),
    }
}

/// Reads a tensor as f32 values, on every core.
pub fn load_f32(bytes: &[u8], dtype: Dtype) -> Vec<f32> {
    use rayon::prelude::*;
    let width = dtype.size();
    let mut out = vec![0f32; bytes.len() / width.max(1)];
    out.par_chunks_mut(1 << 16)
        .zip(bytes.par_chunks(width << 16))
        .for_each(|(o, b)| o.copy_from_slice(&load_f32_serial(b, dtype)));
    out
}

fn load_f32_serial(bytes: &[u8], dtype: Dtype) -> Vec<f32> {
    match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => unreachable!("selection admits F32/F16/BF16 only, got {}", other.name()),
    }
}

/// Writes f32 values back in `dtype`.
pub fn store_f32(values: &[f32], dtype: Dtype, out: &mut Vec<u8>) {
    out.clear();
    match dtype {
        Dtype::F32 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        Dtype::F16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes())),
        Dtype::BF16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&half::bf16::from_f32(*v).to_le_bytes())),
        other => unreachable!("selection admits F32/F16/BF16 only, got {}", other.name()),
    }
}

/// Refuses, before any work, tensors whose rows the scheme's groups cannot tile.
pub fn check_groups(
    tensors: &[TensorEntry],
    selected: &[bool],
    scheme: Scheme,
) -> Result<(), CompressError> {
    let Some(group) = scheme.group_size() else {
        return Ok(());
    };
    for (t, _) in tensors.iter().zip(selected).filter(|(_, s)| **s) {
        let cols: u64 = t.shape.iter().skip(1).product();
        if !cols.is_multiple_of(group as u64) {
            return Err(CompressError::InvalidRequest(format!(
                "group_size {group} does not divide the row length {cols} of tensor '{}' (shape {:?}); choose a divisor or exclude the tensor",
                t.name, t.shape
            )));
        }
    }
    Ok(())
}

pub fn quantize_file(
    input: &Path,
    output: &Path,
    dequantized: Option<&Path>,
    step: &QuantizeStep,
    control: &Control,
) -> Result<QuantizeReport, CompressError> {
    let started = Instant::now();
    let index = SafetensorsIndex::open(input)?;
    let selected = select_tensors(&index.tensors, &step.selection, "quantize")?;
    check_groups(&index.tensors, &selected, step.scheme)?;
    let file = File::open(input)?;
    control.add_work(index.tensors.iter().map(TensorEntry::byte_len).sum());

    // Large dense outputs are written in place behind a reserved header: no second copy.
    let data_bytes: u64 = index.tensors.iter().map(TensorEntry::byte_len).sum();
    let mut out = if step.store == Storage::Dense && data_bytes >= 64 << 20 {
        SpooledWriter::in_place(output, 6 * index.header_len() + (16 << 10))?
    } else {
        SpooledWriter::new(&output.with_extension("spool"))?
    };
    let mut deq = match dequantized {
        Some(path) => {
            let mut w = PipelinedWriter::new(File::create(path)?);
            w.write(copy_header(&file, &index)?)?;
            Some(w)
        }
        None => None,
    };
    let mut model_error = ErrorSums::default();
    let mut stats = Vec::with_capacity(index.tensors.len());
    for (t, &sel) in index.tensors.iter().zip(&selected) {
        control.checkpoint()?;
        let window = map_chunk(&file, &index, (t.begin, t.byte_len() as usize))?;
        if !sel {
            out.add(&t.name, t.dtype.name(), &t.shape, &window)?;
            if let Some(deq) = deq.as_mut() {
                let mut buf = deq.buffer(0);
                buf.extend_from_slice(&window);
                deq.write(buf)?;
            }
            stats.push(passthrough(t));
            control.advance(t.byte_len());
            continue;
        }
        let values = as_f32(&window, t.dtype);
        require_finite(t, &values, "quantization")?;
        let enc = encode(&values, &t.shape, step.scheme, deq.is_some());
        let bytes_after = write_parts(&mut out, t, &enc, step.store)?;
        model_error.merge(&enc.error);
        let error = enc.error.stats();
        if let Some(deq) = deq.as_mut() {
            let mut buf = deq.buffer(0);
            store_f32(&enc.restored, t.dtype, &mut buf);
            deq.write(buf)?;
        }
        stats.push(quantized_stats(t, &enc, bytes_after, error));
        control.advance(t.byte_len());
    }
    if let Some(deq) = deq {
        deq.finish()?;
    }
    let metadata = output_metadata(&index, &selected, step);
    let file_bytes_after = out.finish(&metadata, output)?;
    let dequantized_file_bytes = dequantized
        .map(|p| std::fs::metadata(p).map(|m| m.len()))
        .transpose()?;
    let mut report = totals(step, stats, model_error.stats());
    report.file_bytes_before = index.file_len;
    report.file_bytes_after = file_bytes_after;
    report.dequantized_file_bytes = dequantized_file_bytes;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Writes an encoded tensor's parts (the codes sparse when asked); returns the bytes written.
pub(crate) fn write_parts(
    out: &mut SpooledWriter,
    t: &TensorEntry,
    enc: &Encoded,
    store: Storage,
) -> Result<u64, CompressError> {
    let mut bytes_after = 0u64;
    for (i, part) in enc.parts.iter().enumerate() {
        let name = format!("{}{}", t.name, part.suffix);
        bytes_after += if i == 0 && store == Storage::Sparse {
            let width = Dtype::parse(part.dtype).map_or(1, Dtype::size);
            write_sparse(out, &name, part.dtype, width, &part.shape, &part.bytes)?
        } else {
            out.add(&name, part.dtype, &part.shape, &part.bytes)?;
            part.bytes.len() as u64
        };
    }
    Ok(bytes_after)
}

pub(crate) fn quantized_stats(
    t: &TensorEntry,
    enc: &Encoded,
    bytes_after: u64,
    error: ErrorStats,
) -> QuantTensorStats {
    let n = t.numel();
    QuantTensorStats {
        name: t.name.clone(),
        dtype_before: t.dtype.name(),
        quantized: true,
        parameters: n,
        bytes_before: t.byte_len(),
        bytes_after,
        bits_per_weight: bytes_after as f64 * 8.0 / n.max(1) as f64,
        compression_ratio: t.byte_len() as f64 / bytes_after.max(1) as f64,
        error: Some(error),
        codebook_size: enc.codebook_size,
        overflowed: enc.overflowed,
        flushed_to_zero: enc.flushed_to_zero,
    }
}

/// The step's report over its quantized tensors (file sizes and time filled in by the caller).
pub(crate) fn totals(
    step: &QuantizeStep,
    stats: Vec<QuantTensorStats>,
    error: ErrorStats,
) -> QuantizeReport {
    let q: Vec<&QuantTensorStats> = stats.iter().filter(|s| s.quantized).collect();
    let (before, after): (u64, u64) = (
        q.iter().map(|s| s.bytes_before).sum(),
        q.iter().map(|s| s.bytes_after).sum(),
    );
    let parameters: u64 = q.iter().map(|s| s.parameters).sum();
    QuantizeReport {
        op: "quantize",
        scheme: serde_json::to_value(domain::QuantizeWire::from(step.clone())).unwrap_or_default(),
        store: step.store,
        quantized_tensors: q.len() as u64,
        parameters,
        bytes_before: before,
        bytes_after: after,
        bits_per_weight: after as f64 * 8.0 / parameters.max(1) as f64,
        compression_ratio: before as f64 / after.max(1) as f64,
        error,
        file_bytes_before: 0,
        file_bytes_after: 0,
        dequantized_file_bytes: None,
        tensors: stats,
        seconds: 0.0,
        calibration: None,
        layers: Vec::new(),
        scaled: Vec::new(),
    }
}

pub(crate) fn passthrough(t: &TensorEntry) -> QuantTensorStats {
    QuantTensorStats {
        name: t.name.clone(),
        dtype_before: t.dtype.name(),
        quantized: false,
        parameters: t.numel(),
        bytes_before: t.byte_len(),
        bytes_after: t.byte_len(),
        bits_per_weight: t.dtype.size() as f64 * 8.0,
        compression_ratio: 1.0,
        error: None,
        codebook_size: None,
        overflowed: 0,
        flushed_to_zero: 0,
    }
}

/// The input's metadata plus a compressed-tensors `quantization_config` (compressed-tensors
/// 0.9 layout) or, for schemes it has no name for, compressd's own description.
pub(crate) fn output_metadata(
    index: &SafetensorsIndex,
    selected: &[bool],
    step: &QuantizeStep,
) -> BTreeMap<String, String> {
    let mut meta = index.metadata.clone();
    let layer = |n: &str| n.strip_suffix(".weight").unwrap_or(n).to_owned();
    let targets: Vec<String> = index
        .tensors
        .iter()
        .zip(selected)
        .filter(|(_, s)| **s)
        .map(|(t, _)| layer(&t.name))
        .collect();
    let ignore: Vec<String> = index
        .tensors
        .iter()
        .zip(selected)
        .filter(|(t, s)| !**s && t.shape.len() >= 2)
        .map(|(t, _)| layer(&t.name))
        .collect();
    let weights = |bits: u32, kind: &str, symmetric: bool, strategy: &str, group: Option<usize>| {
        // Static act-order ("weight"): the columns were rounded out of order but every group
        // keeps its natural columns, so no g_idx is stored.
        let actorder = step.act_order.then_some("weight");
        json!({"num_bits": bits, "type": kind, "symmetric": symmetric, "strategy": strategy,
               "group_size": group, "dynamic": false, "observer": "minmax", "actorder": actorder})
    };
    let (format, scheme) = match step.scheme {
        Scheme::Int8 {
            symmetric,
            granularity,
        } => {
            let (strategy, group) = match granularity {
                Granularity::Tensor => ("tensor", None),
                Granularity::Channel => ("channel", None),
                Granularity::Group(n) => ("group", Some(n)),
            };
            (
                "int-quantized",
                Some(weights(8, "int", symmetric, strategy, group)),
            )
        }
        Scheme::Int4 {
            symmetric,
            group_size,
        } => (
            "pack-quantized",
            Some(weights(4, "int", symmetric, "group", Some(group_size))),
        ),
        Scheme::Fp8E4m3 { per_channel } => (
            "float-quantized",
            Some(weights(
                8,
                "float",
                true,
                if per_channel { "channel" } else { "tensor" },
                None,
            )),
        ),
        Scheme::Fp16 | Scheme::Bf16 => ("dense", None),
        Scheme::Kmeans { .. } => ("compressd-kmeans-v1", None),
    };
    if let Some(weights) = scheme {
        let config = json!({
            "quant_method": "compressed-tensors",
            "format": format,
            "version": "0.9.0",
            "quantization_status": "compressed",
            "config_groups": {"group_0": {"targets": targets, "weights": weights, "input_activations": null, "output_activations": null}},
            "ignore": ignore,
        });
        meta.insert("quantization_config".into(), config.to_string());
    }
    meta.insert("compressd.format".into(), format.into());
    if step.method.calibrates() {
        meta.insert("compressd.method".into(), step.method.name().into());
    }
    if let Scheme::Kmeans { bits } = step.scheme {
        meta.insert("compressd.kmeans_bits".into(), bits.to_string());
    }
    if step.store == Storage::Sparse {
        meta.insert("compressd.sparse".into(), "bitmask-v1".into());
    }
    meta
}
