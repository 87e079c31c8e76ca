//! A sequential network built from an `Architecture` and its weights, run with candle. Layers
//! compute exactly what their PyTorch namesakes compute (same layouts, same batch-norm
//! statistics, inverted dropout), so weights move between the two unchanged.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};

use crate::format::dtype::Dtype;
use crate::format::reader::DenseTensors;
use crate::format::safetensors_index::SafetensorsIndex;
use crate::format::st_writer::SpooledWriter;
use crate::nn::fake_quant::FakeQuant;
use crate::quant::file::store_f32;
use crate::CompressError;
use domain::{Architecture, LayerKind, ParamRole, ParamSpec};

pub struct Param {
    pub var: Var,
    pub role: ParamRole,
}

pub struct Network {
    pub arch: Architecture,
    /// Every tensor of the state dict, f32, by PyTorch name.
    pub params: BTreeMap<String, Param>,
    /// The dtype each tensor is written back in.
    pub dtypes: BTreeMap<String, Dtype>,
    pub metadata: BTreeMap<String, String>,
    /// While set, selected weights run fake-quantized (quantization-aware training).
    pub fake_quant: Option<FakeQuant>,
}

pub fn nn_error(e: candle_core::Error) -> CompressError {
    // candle appends a backtrace when RUST_BACKTRACE is set; the first line is the message.
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default().to_owned();
    CompressError::InvalidRequest(format!("running the model failed: {first}"))
}

/// The first way `tensors` (name, dtype, shape) differ from what the architecture needs.
pub fn check_weights<'a>(
    arch: &Architecture,
    tensors: impl IntoIterator<Item = (&'a str, Dtype, &'a [u64])>,
) -> Result<(), String> {
    let specs = arch.params();
    let given: Vec<(&str, Dtype, &[u64])> = tensors.into_iter().collect();
    for spec in &specs {
        let found = given.iter().find(|(n, _, _)| *n == spec.name);
        let want: Vec<u64> = spec.shape.iter().map(|&d| d as u64).collect();
        match (found, spec.role) {
            (None, ParamRole::Counter) => {}
            (None, _) => {
                return Err(format!(
                    "missing tensor '{}': the architecture expects shape {:?}",
                    spec.name, spec.shape
                ))
            }
            (Some((_, dtype, _)), ParamRole::Counter) if *dtype != Dtype::I64 => {
                return Err(format!("'{}' must be an I64 scalar", spec.name))
            }
            (Some((_, dtype, _)), r)
                if r != ParamRole::Counter && !dtype.is_prunable() && *dtype != Dtype::F64 =>
            {
                return Err(format!(
                    "tensor '{}' has dtype {}; weights must be F32, F16, BF16 or F64",
                    spec.name,
                    dtype.name()
                ))
            }
            (Some((_, _, shape)), _) if *shape != want.as_slice() => {
                return Err(format!(
                    "tensor '{}' has shape {:?} but the architecture expects {:?}",
                    spec.name, shape, spec.shape
                ))
            }
            _ => {}
        }
    }
    if let Some((name, _, _)) = given
        .iter()
        .find(|(n, _, _)| !specs.iter().any(|s| s.name == *n))
    {
        return Err(format!(
            "unexpected tensor '{name}': the architecture has no parameter of that name"
        ));
    }
    Ok(())
}

pub(crate) fn var(values: Vec<f32>, shape: &[usize]) -> candle_core::Result<Var> {
    Var::from_tensor(&Tensor::from_vec(values, shape, &Device::Cpu)?)
}

impl Network {
    /// Builds the network from dense values (any file `read_dense` understands).
    pub fn from_dense(
        arch: Architecture,
        mut dense: DenseTensors,
        dtypes: BTreeMap<String, Dtype>,
        metadata: BTreeMap<String, String>,
    ) -> Result<Self, CompressError> {
        let shapes: Vec<(String, Dtype, Vec<u64>)> = dense
            .iter()
            .map(|(n, (s, _))| {
                let fallback = if n.ends_with(".num_batches_tracked") {
                    Dtype::I64
                } else {
                    Dtype::F32
                };
                let dt = dtypes.get(n).copied().unwrap_or(fallback);
                (n.clone(), dt, s.clone())
            })
            .collect();
        check_weights(
            &arch,
            shapes
                .iter()
                .map(|(n, d, s)| (n.as_str(), *d, s.as_slice())),
        )
        .map_err(CompressError::InvalidModel)?;
        let mut params = BTreeMap::new();
        for spec in arch.params() {
            let values = match dense.remove(&spec.name) {
                Some((_, v)) => v,
                None => vec![0.0],
            };
            if spec.role != ParamRole::Counter {
                if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
                    return Err(CompressError::InvalidModel(format!(
                        "tensor '{}' holds a NaN or infinite value at element {bad}",
                        spec.name
                    )));
                }
            }
            let p = var(values, &spec.shape).map_err(nn_error)?;
            params.insert(
                spec.name.clone(),
                Param {
                    var: p,
                    role: spec.role,
                },
            );
        }
        Ok(Network {
            arch,
            params,
            dtypes,
            metadata,
            fake_quant: None,
        })
    }

    pub fn load(path: &Path, arch: &Architecture) -> Result<Self, CompressError> {
        let index = SafetensorsIndex::open(path)?;
        // The file's values as f32, read once and then held by the network: twice over.
        crate::budget::check(
            "the model (as f32, held twice while it loads)",
            index.parameter_count().saturating_mul(8),
        )?;
        let dtypes = index
            .tensors
            .iter()
            .map(|t| (t.name.clone(), t.dtype))
            .collect();
        let dense = crate::format::reader::read_dense(path)?;
        Self::from_dense(arch.clone(), dense, dtypes, index.metadata)
    }

    pub fn tensor(&self, name: &str) -> &Tensor {
        self.params[name].var.as_tensor()
    }

    pub fn values(&self, name: &str) -> Result<Vec<f32>, CompressError> {
        self.tensor(name)
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .map_err(nn_error)
    }

    pub fn set_values(&self, name: &str, values: Vec<f32>) -> Result<(), CompressError> {
        let p = &self.params[name];
        let t = Tensor::from_vec(values, p.var.shape(), &Device::Cpu).map_err(nn_error)?;
        p.var.set(&t).map_err(nn_error)
    }

    /// Every value of the state dict: weights, biases and batch-norm statistics.
    pub fn stored_values(&self) -> u64 {
        self.params
            .values()
            .map(|p| p.var.elem_count() as u64)
            .sum()
    }

    /// Prunable weights (linear and conv) in layer order.
    pub fn weight_names(&self) -> Vec<String> {
        self.arch
            .params()
            .into_iter()
            .filter(|s| s.role == ParamRole::Weight)
            .map(|s| s.name)
            .collect()
    }

    pub fn specs(&self) -> Vec<ParamSpec> {
        self.arch.params()
    }

    /// Writes the state dict in the dtypes it came in (new tensors as F32), with the input's
    /// metadata.
    pub fn save(&self, path: &Path) -> Result<u64, CompressError> {
        let mut out = SpooledWriter::new(&path.with_extension("spool"))?;
        let mut bytes = Vec::new();
        for spec in self.arch.params() {
            let mut values = self.values(&spec.name)?;
            // Masks leave −0.0 behind; a zero is written as +0.0 so every reader sees a zero.
            values
                .iter_mut()
                .filter(|v| **v == 0.0)
                .for_each(|v| *v = 0.0);
            let shape: Vec<u64> = spec.shape.iter().map(|&d| d as u64).collect();
            let dtype = self.dtypes.get(&spec.name).copied().unwrap_or(Dtype::F32);
            match (spec.role, dtype) {
                (ParamRole::Counter, _) => {
                    out.add(&spec.name, "I64", &shape, &(values[0] as i64).to_le_bytes())?;
                    continue;
                }
                (_, Dtype::F16 | Dtype::BF16 | Dtype::F32) => store_f32(&values, dtype, &mut bytes),
                _ => store_f32(&values, Dtype::F32, &mut bytes),
            }
            let name = if matches!(dtype, Dtype::F16 | Dtype::BF16) {
                dtype.name()
            } else {
                "F32"
            };
            out.add(&spec.name, name, &shape, &bytes)?;
        }
        Ok(out.finish(&self.metadata, path)?)
    }
}

pub(crate) fn is_norm(arch: &Architecture, name: &str) -> bool {
    arch.layers.iter().any(|l| {
        matches!(
            l.kind,
            LayerKind::Batchnorm1d { .. } | LayerKind::Batchnorm2d { .. }
        ) && name.starts_with(&format!("{}.", l.name))
    })
}
