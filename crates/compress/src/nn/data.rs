//! Datasets: one safetensors file with a training split and an evaluation split, each an
//! inputs tensor (any numeric dtype, first dimension = samples) and an integer labels tensor.
//! Accepted names: `train_images`/`train_inputs` + `train_labels`, and `test_…` or `eval_…`
//! for the evaluation split, as in `../shared/data/mnist-10k.safetensors`.

use std::fs::File;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::format::chunked_io::map_chunk;
use crate::format::dtype::Dtype;
use crate::format::safetensors_index::{SafetensorsIndex, TensorEntry};
use crate::quant::file::load_f32;
use crate::CompressError;
use domain::Architecture;

pub const MAX_CLASSES: usize = 100_000;
/// Jobs hold a dataset in memory as f32: 2 GiB of values at most.
pub const MAX_VALUES: u64 = 1 << 29;

fn bad(msg: String) -> CompressError {
    CompressError::InvalidModel(msg)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SplitSummary {
    pub inputs: String,
    pub labels: String,
    pub samples: u64,
    pub class_counts: Vec<u64>,
}

/// What an upload holds; computed when it arrives and kept with the dataset.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DatasetSummary {
    pub sample_shape: Vec<u64>,
    pub input_dtype: String,
    pub num_classes: usize,
    pub train: SplitSummary,
    pub test: SplitSummary,
}

struct SplitNames<'a> {
    inputs: &'a TensorEntry,
    labels: &'a TensorEntry,
}

fn find_split<'a>(
    index: &'a SafetensorsIndex,
    prefixes: &[&str],
) -> Result<SplitNames<'a>, CompressError> {
    let get = |n: &str| index.tensors.iter().find(|t| t.name == n);
    for p in prefixes {
        let inputs = get(&format!("{p}_images")).or_else(|| get(&format!("{p}_inputs")));
        if let (Some(inputs), Some(labels)) = (inputs, get(&format!("{p}_labels"))) {
            return Ok(SplitNames { inputs, labels });
        }
    }
    let names: Vec<&str> = index.tensors.iter().map(|t| t.name.as_str()).collect();
    Err(bad(format!(
        "the dataset needs tensors {p}_images (or {p}_inputs) and {p}_labels; it has {names:?}",
        p = prefixes.join("|")
    )))
}

/// Any numeric element type as f32; `None` for non-numeric dtypes.
fn numbers(bytes: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    macro_rules! conv {
        ($t:ty, $w:expr) => {
            bytes
                .chunks_exact($w)
                .map(|b| <$t>::from_le_bytes(b.try_into().expect("width")) as f32)
                .collect()
        };
    }
    Some(match dtype {
        Dtype::F32 | Dtype::F16 | Dtype::BF16 => load_f32(bytes, dtype),
        Dtype::U8 => bytes.iter().map(|&b| b as f32).collect(),
        Dtype::I8 => bytes.iter().map(|&b| b as i8 as f32).collect(),
        Dtype::U16 => conv!(u16, 2),
        Dtype::I16 => conv!(i16, 2),
        Dtype::U32 => conv!(u32, 4),
        Dtype::I32 => conv!(i32, 4),
        Dtype::I64 => conv!(i64, 8),
        Dtype::U64 => conv!(u64, 8),
        Dtype::F64 => conv!(f64, 8),
        _ => return None,
    })
}

fn labels_of(bytes: &[u8], t: &TensorEntry) -> Result<Vec<i64>, CompressError> {
    macro_rules! conv {
        ($t:ty, $w:expr) => {
            bytes
                .chunks_exact($w)
                .map(|b| <$t>::from_le_bytes(b.try_into().expect("width")) as i64)
                .collect()
        };
    }
    Ok(match t.dtype {
        Dtype::U8 => bytes.iter().map(|&b| b as i64).collect(),
        Dtype::I8 => bytes.iter().map(|&b| b as i8 as i64).collect(),
        Dtype::U16 => conv!(u16, 2),
        Dtype::I16 => conv!(i16, 2),
        Dtype::U32 => conv!(u32, 4),
        Dtype::I32 => conv!(i32, 4),
        Dtype::I64 => conv!(i64, 8),
        Dtype::U64 => bytes
            .chunks_exact(8)
            .map(|b| i64::try_from(u64::from_le_bytes(b.try_into().expect("width"))).unwrap_or(-1))
            .collect(),
        other => {
            return Err(bad(format!(
                "'{}' has dtype {}; labels must be integers (U8, I8, U16, I16, U32, I32, I64, U64)",
                t.name,
                other.name()
            )))
        }
    })
}

struct RawSplit {
    inputs: Vec<f32>,
    labels: Vec<u32>,
    shape: Vec<u64>,
}

/// The split's inputs as f32 when `keep`; otherwise only checked, a slice at a time (an upload
/// is validated without holding the whole dataset in memory).
fn read_inputs(raw: &[u8], t: &TensorEntry, keep: bool) -> Result<Vec<f32>, CompressError> {
    let not_numeric = || {
        bad(format!(
            "'{}' has dtype {}; inputs must be numeric",
            t.name,
            t.dtype.name()
        ))
    };
    let slice = t.dtype.size() * (1 << 16);
    let mut kept = Vec::new();
    for (k, chunk) in raw.chunks(slice).enumerate() {
        let values = numbers(chunk, t.dtype).ok_or_else(not_numeric)?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!(
                "'{}' holds a NaN or infinite value at element {}",
                t.name,
                k * (1 << 16) + i
            )));
        }
        if keep {
            kept.extend(values);
        }
    }
    if raw.is_empty() && numbers(raw, t.dtype).is_none() {
        return Err(not_numeric());
    }
    Ok(kept)
}

fn read_split(
    file: &File,
    index: &SafetensorsIndex,
    names: &SplitNames,
    declared_classes: Option<usize>,
    keep_inputs: bool,
) -> Result<(RawSplit, i64), CompressError> {
    let (inp, lab) = (names.inputs, names.labels);
    let n = *inp.shape.first().ok_or_else(|| {
        bad(format!(
            "'{}' is a scalar; its first dimension must count samples",
            inp.name
        ))
    })?;
    let label_shape_ok = lab.shape == [n] || lab.shape == [n, 1];
    if !label_shape_ok {
        return Err(bad(format!(
            "'{}' has {} samples but '{}' has shape {:?}; the counts must match",
            inp.name, n, lab.name, lab.shape
        )));
    }
    if n == 0 {
        return Err(bad(format!("'{}' holds no samples", inp.name)));
    }
    let raw_in = map_chunk(file, index, (inp.begin, inp.byte_len() as usize))?;
    let inputs = read_inputs(&raw_in, inp, keep_inputs)?;
    let raw_lab = map_chunk(file, index, (lab.begin, lab.byte_len() as usize))?;
    let labels = labels_of(&raw_lab, lab)?;
    let max = labels.iter().copied().max().unwrap_or(0);
    let limit = declared_classes.unwrap_or(MAX_CLASSES) as i64;
    if let Some((i, v)) = labels
        .iter()
        .enumerate()
        .find(|(_, &v)| v < 0 || v >= limit)
    {
        return Err(bad(format!(
            "'{}'[{i}] is {v}; labels must be class indices in 0..{}{}",
            lab.name,
            limit - 1,
            if declared_classes.is_some() {
                " (num_classes from the file's metadata)"
            } else {
                ""
            }
        )));
    }
    let split = RawSplit {
        inputs,
        labels: labels.into_iter().map(|v| v as u32).collect(),
        shape: inp.shape[1..].to_vec(),
    };
    Ok((split, max))
}

fn read_all(
    path: &Path,
    keep_inputs: bool,
) -> Result<(DatasetSummary, RawSplit, RawSplit), CompressError> {
    let index = SafetensorsIndex::open(path)?;
    let train = find_split(&index, &["train"])?;
    let test = find_split(&index, &["test", "eval"])?;
    let known = [train.inputs, train.labels, test.inputs, test.labels];
    if let Some(extra) = index
        .tensors
        .iter()
        .find(|t| !known.iter().any(|k| k.name == t.name))
    {
        return Err(bad(format!(
            "unexpected tensor '{}': a dataset holds only {}, {}, {} and {}",
            extra.name, train.inputs.name, train.labels.name, test.inputs.name, test.labels.name
        )));
    }
    let declared = match index.metadata.get("num_classes") {
        Some(v) => Some(
            v.parse::<usize>()
                .ok()
                .filter(|&c| (1..=MAX_CLASSES).contains(&c))
                .ok_or_else(|| {
                    bad(format!(
                        "metadata num_classes must be an integer in 1..={MAX_CLASSES}, got '{v}'"
                    ))
                })?,
        ),
        None => None,
    };
    let values: u64 = [train.inputs, test.inputs].iter().map(|t| t.numel()).sum();
    if values > MAX_VALUES {
        return Err(bad(format!(
            "the dataset holds {values} input values; jobs keep datasets in memory as f32, so at most {MAX_VALUES} (2 GiB) are accepted"
        )));
    }
    let file = File::open(path)?;
    let (tr, max_tr) = read_split(&file, &index, &train, declared, keep_inputs)?;
    let (te, max_te) = read_split(&file, &index, &test, declared, keep_inputs)?;
    if tr.shape != te.shape {
        return Err(bad(format!(
            "train samples have shape {:?} but evaluation samples {:?}",
            tr.shape, te.shape
        )));
    }
    let num_classes = declared.unwrap_or((max_tr.max(max_te) + 1) as usize);
    let counts = |labels: &[u32]| {
        let mut c = vec![0u64; num_classes];
        labels.iter().for_each(|&l| c[l as usize] += 1);
        c
    };
    let summary = DatasetSummary {
        sample_shape: tr.shape.clone(),
        input_dtype: train.inputs.dtype.name().to_owned(),
        num_classes,
        train: SplitSummary {
            inputs: train.inputs.name.clone(),
            labels: train.labels.name.clone(),
            samples: tr.labels.len() as u64,
            class_counts: counts(&tr.labels),
        },
        test: SplitSummary {
            inputs: test.inputs.name.clone(),
            labels: test.labels.name.clone(),
            samples: te.labels.len() as u64,
            class_counts: counts(&te.labels),
        },
    };
    Ok((summary, tr, te))
}

/// Validates an uploaded dataset and describes it.
pub fn inspect_dataset(path: &Path) -> Result<DatasetSummary, CompressError> {
    read_all(path, false).map(|(s, _, _)| s)
}

/// One split, scaled for the architecture's input, ready to batch.
pub struct Split {
    pub inputs: Vec<f32>,
    pub labels: Vec<u32>,
    pub sample_len: usize,
    pub sample_shape: Vec<usize>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The samples at `indices` as an input batch and a label vector; `buf` is reused.
    pub fn batch(
        &self,
        indices: &[usize],
        buf: &mut Vec<f32>,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        buf.clear();
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            buf.extend_from_slice(&self.inputs[i * self.sample_len..(i + 1) * self.sample_len]);
            labels.push(self.labels[i]);
        }
        let mut shape = vec![indices.len()];
        shape.extend_from_slice(&self.sample_shape);
        let x = Tensor::from_slice(buf, shape, &Device::Cpu)?;
        let y = Tensor::from_vec(labels, indices.len(), &Device::Cpu)?;
        Ok((x, y))
    }
}

pub struct Dataset {
    pub train: Split,
    pub test: Split,
    pub num_classes: usize,
    pub summary: DatasetSummary,
}

/// Loads a dataset for a model: checks that samples fit the input shape and labels fit the
/// output, and applies the architecture's input scaling once.
pub fn load_dataset(path: &Path, arch: &Architecture) -> Result<Dataset, CompressError> {
    // Read whole as f32 (and the labels as integers): four bytes per value, eight per label.
    let values: u64 = SafetensorsIndex::open(path)?
        .tensors
        .iter()
        .map(|t| t.numel().saturating_mul(8))
        .fold(0u64, u64::saturating_add);
    crate::budget::check("the dataset", values)?;
    let (summary, tr, te) = read_all(path, true)?;
    check_fit(&summary, arch).map_err(CompressError::InvalidRequest)?;
    let scale = |mut s: RawSplit| {
        let (k, m, d) = (
            arch.input_scale as f32,
            arch.input_mean as f32,
            arch.input_std as f32,
        );
        s.inputs.iter_mut().for_each(|v| *v = (*v * k - m) / d);
        Split {
            inputs: s.inputs,
            labels: s.labels,
            sample_len: arch.sample_len(),
            sample_shape: arch.input_shape.clone(),
        }
    };
    Ok(Dataset {
        train: scale(tr),
        test: scale(te),
        num_classes: summary.num_classes,
        summary,
    })
}

/// Whether a dataset can feed a model; the message names what differs.
pub fn check_fit(summary: &DatasetSummary, arch: &Architecture) -> Result<(), String> {
    let per_sample: u64 = summary.sample_shape.iter().product();
    if per_sample != arch.sample_len() as u64 {
        return Err(format!(
            "dataset samples have shape {:?} ({per_sample} values) but the model's input_shape is {:?} ({} values)",
            summary.sample_shape,
            arch.input_shape,
            arch.sample_len()
        ));
    }
    match arch.classes() {
        Some(c) if c >= summary.num_classes => Ok(()),
        Some(c) => Err(format!(
            "the dataset has {} classes but the model outputs {c}",
            summary.num_classes
        )),
        None => Err(format!(
            "the model's output has shape {:?}; a classifier must end in [classes]",
            arch.output_shape()
        )),
    }
}
