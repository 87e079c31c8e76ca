//! Where a transformer's weights come from: a tensor at a time, as f32, from a safetensors
//! file mapped read-only (a model is never read whole; a block's weights are read when the
//! block runs).

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::format::chunked_io::map_chunk;
use crate::format::dtype::Dtype;
use crate::format::safetensors_index::SafetensorsIndex;
use crate::quant::file::load_f32;
use crate::transformer::nn_error;
use crate::CompressError;

/// Named tensors, read on demand.
pub trait WeightSource: Send + Sync {
    /// Every tensor's name and shape.
    fn shapes(&self) -> Vec<(String, Vec<u64>)>;
    /// The tensor as f32, or `Err` naming it when it is missing or not floating point.
    fn tensor(&self, name: &str) -> Result<Tensor, CompressError>;

    fn has(&self, name: &str) -> bool {
        self.shapes().iter().any(|(n, _)| n == name)
    }
}

pub struct SafetensorsWeights {
    file: File,
    index: SafetensorsIndex,
    by_name: HashMap<String, usize>,
}

impl SafetensorsWeights {
    pub fn open(path: &Path) -> Result<Self, CompressError> {
        let index = SafetensorsIndex::open(path)?;
        let by_name = index
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(SafetensorsWeights {
            file: File::open(path)?,
            index,
            by_name,
        })
    }
}

impl WeightSource for SafetensorsWeights {
    fn shapes(&self) -> Vec<(String, Vec<u64>)> {
        self.index
            .tensors
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect()
    }

    fn has(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    fn tensor(&self, name: &str) -> Result<Tensor, CompressError> {
        let t = self
            .by_name
            .get(name)
            .map(|&i| &self.index.tensors[i])
            .ok_or_else(|| CompressError::InvalidModel(format!("tensor '{name}' is missing")))?;
        if !matches!(t.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(CompressError::InvalidModel(format!(
                "tensor '{name}' has dtype {}; the model runs from F32, F16 or BF16 weights (quantized files are run through their dense copy)",
                t.dtype.name()
            )));
        }
        let bytes = map_chunk(&self.file, &self.index, (t.begin, t.byte_len() as usize))?;
        let values = load_f32(&bytes, t.dtype);
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(CompressError::InvalidModel(format!(
                "tensor '{name}' holds a NaN or infinite value at element {i}"
            )));
        }
        let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
        Tensor::from_vec(values, shape, &Device::Cpu).map_err(nn_error)
    }
}
