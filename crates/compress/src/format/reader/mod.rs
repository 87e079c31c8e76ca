//! Reads back what compressd writes: dense safetensors, compressed-tensors style quantized
//! tensors (int8, packed int4, fp8), k-means codebooks and bitmask-v1 sparse tensors, and
//! returns every weight as dense f32 values. This is the reference for docs/formats.md.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::Path;

use crate::format::chunked_io::map_chunk;
use crate::format::dtype::Dtype;
use crate::format::safetensors_index::SafetensorsIndex;
use crate::format::sparse::densify;
use crate::quant::file::load_f32;
use crate::quant::{fp8, int, kmeans};
use crate::CompressError;

struct Raw {
    dtype: Dtype,
    shape: Vec<u64>,
    bytes: Vec<u8>,
}

fn bad(msg: String) -> CompressError {
    CompressError::InvalidModel(msg)
}

/// Tensor name → (shape, values).
pub type DenseTensors = BTreeMap<String, (Vec<u64>, Vec<f32>)>;

/// Every logical tensor of the file, dequantized to f32, with its shape.
pub fn read_dense(path: &Path) -> Result<DenseTensors, CompressError> {
    if crate::format::entropy::is_zstd(path)? {
        let dir = tempfile::tempdir_in(path.parent().unwrap_or(Path::new(".")))?;
        let plain = dir.path().join("restored.safetensors");
        crate::format::entropy::decompress_file(path, &plain)
            .map_err(|e| bad(format!("the zstd stream is damaged: {e}")))?;
        return read_dense(&plain);
    }
    let index = SafetensorsIndex::open(path)?;
    let kmeans_bits = index
        .metadata
        .get("compressd.kmeans_bits")
        .and_then(|b| b.parse().ok());
    let file = File::open(path)?;
    let mut raw: HashMap<String, Raw> = HashMap::new();
    for t in &index.tensors {
        let bytes = map_chunk(&file, &index, (t.begin, t.byte_len() as usize))?.to_vec();
        raw.insert(
            t.name.clone(),
            Raw {
                dtype: t.dtype,
                shape: t.shape.clone(),
                bytes,
            },
        );
    }
    // Sparse tensors first: `N.mask` + `N.values` + `N.shape` become `N`.
    let sparse: Vec<String> = raw
        .keys()
        .filter_map(|k| k.strip_suffix(".mask").map(str::to_owned))
        .collect();
    for name in sparse {
        let (Some(mask), Some(values), Some(shape)) = (
            raw.remove(&format!("{name}.mask")),
            raw.remove(&format!("{name}.values")),
            raw.remove(&format!("{name}.shape")),
        ) else {
            return Err(bad(format!(
                "sparse tensor '{name}' lacks its mask, values or shape"
            )));
        };
        let shape = dims(&shape);
        // One mask bit per value: the mask's bytes bound how many values there can be.
        let n = count(&name, &shape, mask.bytes.len() as u64 * 8)?;
        let bytes = densify(&mask.bytes, &values.bytes, values.dtype.size(), n)
            .ok_or_else(|| bad(format!("sparse tensor '{name}': mask and values disagree")))?;
        raw.insert(
            name,
            Raw {
                dtype: values.dtype,
                shape,
                bytes,
            },
        );
    }
    let names: Vec<String> = raw.keys().cloned().collect();
    let mut out = BTreeMap::new();
    for name in names {
        if is_auxiliary(&name, &raw) {
            continue;
        }
        let value = decode_tensor(&name, &raw, kmeans_bits)?;
        out.insert(strip_code_suffix(&name).to_owned(), value);
    }
    Ok(out)
}

fn strip_code_suffix(name: &str) -> &str {
    name.strip_suffix("_packed")
        .or_else(|| name.strip_suffix("_indices"))
        .unwrap_or(name)
}

/// Scales, zero points, shapes and codebooks are read with the tensor they belong to.
fn is_auxiliary(name: &str, raw: &HashMap<String, Raw>) -> bool {
    ["_scale", "_zero_point", "_shape", "_codebook"]
        .iter()
        .any(|suffix| {
            name.strip_suffix(suffix).is_some_and(|base| {
                raw.contains_key(base)
                    || raw.contains_key(&format!("{base}_packed"))
                    || raw.contains_key(&format!("{base}_indices"))
            })
        })
}

/// The number of values `shape` holds, refused (before anything is allocated for them) when
/// the product overflows or exceeds `room`, the most the bytes that hold them can describe.
fn count(name: &str, shape: &[u64], room: u64) -> Result<usize, CompressError> {
    match shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d)) {
        Some(n) if n <= room => Ok(n as usize),
        _ => Err(bad(format!(
            "tensor '{name}': its stored shape {shape:?} holds more values than its data can describe ({room} at most); the file is damaged, or its tensor names only look like compressd's sparse or k-means layout"
        ))),
    }
}

/// An I64 shape tensor's values.
fn dims(r: &Raw) -> Vec<u64> {
    r.bytes
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as u64)
        .collect()
}

/// A float tensor's values; codebooks, scales and dense weights are float in every file
/// compressd writes, so any other dtype means a damaged or foreign file.
fn f32s(name: &str, r: &Raw) -> Result<Vec<f32>, CompressError> {
    match r.dtype {
        Dtype::F32 | Dtype::F16 | Dtype::BF16 => Ok(load_f32(&r.bytes, r.dtype)),
        other => Err(bad(format!(
            "tensor '{name}' has dtype {}; compressd stores codebooks, scales and weights as F32, F16 or BF16",
            other.name()
        ))),
    }
}

/// How many values share one scale: the parameters must tile the values exactly, or the file
/// was not written by compressd.
fn group_len(name: &str, values: usize, params: usize) -> Result<usize, CompressError> {
    if values == 0 {
        return Ok(1);
    }
    if params == 0 || !values.is_multiple_of(params) {
        return Err(bad(format!(
            "tensor '{name}': {params} quantization scale(s) cannot cover its {values} values in equal groups; the file is damaged"
        )));
    }
    Ok(values / params)
}

fn decode_tensor(
    name: &str,
    raw: &HashMap<String, Raw>,
    kmeans_bits: Option<u32>,
) -> Result<(Vec<u64>, Vec<f32>), CompressError> {
    let t = &raw[name];
    let get = |suffix: &str| raw.get(&format!("{}{suffix}", strip_code_suffix(name)));
    if let Some(base) = name.strip_suffix("_indices") {
        let book =
            get("_codebook").ok_or_else(|| bad(format!("'{base}' has indices but no codebook")))?;
        let book = f32s(&format!("{base}_codebook"), book)?;
        let shape =
            get("_shape").ok_or_else(|| bad(format!("'{base}' has indices but no _shape")))?;
        let shape = dims(shape);
        let bits = kmeans_bits.filter(|b| (1..=8).contains(b)).ok_or_else(|| {
            bad(format!(
                "'{base}' has indices but the file names no compressd.kmeans_bits from 1 to 8"
            ))
        })?;
        // `bits` per value: the packed indices bound how many values there can be.
        let n = count(base, &shape, t.bytes.len() as u64 * 8 / u64::from(bits))?;
        let codes = kmeans::unpack_bits(&t.bytes, bits, n);
        let values = codes
            .iter()
            .map(|&c| book.get(c as usize).copied().unwrap_or(f32::NAN))
            .collect();
        return Ok((shape, values));
    }
    if name.ends_with("_packed") {
        let shape = get("_shape").ok_or_else(|| bad(format!("'{name}' has no _shape")))?;
        let shape = dims(shape);
        let packed: Vec<i32> = t
            .bytes
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let codes = int::unpack_int4(&packed);
        // compressd packs whole rows of whole groups: eight codes to a word, none left over.
        if count(name, &shape, codes.len() as u64)? != codes.len() {
            return Err(bad(format!(
                "tensor '{name}': its stored shape {shape:?} does not hold the {} codes its packed data does; the file is damaged",
                codes.len()
            )));
        }
        let base = strip_code_suffix(name);
        let values = grouped(base, &codes, get("_scale"), get("_zero_point"))?;
        return Ok((shape, values));
    }
    match (t.dtype, get("_scale")) {
        (Dtype::I8, Some(scale)) => {
            let codes: Vec<i8> = t.bytes.iter().map(|b| *b as i8).collect();
            let values = grouped(name, &codes, Some(scale), get("_zero_point"))?;
            Ok((t.shape.clone(), values))
        }
        (Dtype::F8E4M3, Some(scale)) => {
            let scales = f32s(&format!("{name}_scale"), scale)?;
            let group = group_len(name, t.bytes.len(), scales.len())?;
            let values = t
                .bytes
                .iter()
                .enumerate()
                .map(|(i, &c)| fp8::decode(c) * scales[i / group])
                .collect();
            Ok((t.shape.clone(), values))
        }
        (Dtype::F32 | Dtype::F16 | Dtype::BF16, _) => Ok((t.shape.clone(), f32s(name, t)?)),
        // Counters such as PyTorch's `num_batches_tracked` ride along as numbers.
        (Dtype::I64, None) => Ok((
            t.shape.clone(),
            t.bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                .collect(),
        )),
        (other, _) => Err(bad(format!(
            "tensor '{name}' has dtype {} and no quantization parameters",
            other.name()
        ))),
    }
}

/// Integer codes with one scale (and zero point) per group; groups tile the rows.
fn grouped(
    name: &str,
    codes: &[i8],
    scale: Option<&Raw>,
    zero: Option<&Raw>,
) -> Result<Vec<f32>, CompressError> {
    let scale = scale.ok_or_else(|| bad(format!("'{name}' has integer codes but no _scale")))?;
    let scales = f32s(&format!("{name}_scale"), scale)?;
    let zeros: Vec<i8> = zero
        .map(|z| z.bytes.iter().map(|b| *b as i8).collect())
        .unwrap_or_default();
    if !zeros.is_empty() && zeros.len() != scales.len() {
        return Err(bad(format!(
            "tensor '{name}': {} zero points for {} scales; the file is damaged",
            zeros.len(),
            scales.len()
        )));
    }
    let group = group_len(name, codes.len(), scales.len())?;
    let q = int::Quantized {
        codes: codes.to_vec(),
        scales,
        zero_points: zeros,
    };
    Ok(int::dequantize(&q, group))
}

#[cfg(test)]
mod tests;
