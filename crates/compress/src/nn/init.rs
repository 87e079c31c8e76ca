//! PyTorch's default initialisation: weights and biases uniform in ±1/√fan_in, batch-norm
//! scale 1, shift 0, running statistics 0 and 1. In memory for a network to train, or
//! straight to a file one tensor at a time (an architecture-only upload never holds the whole
//! model).

use std::collections::BTreeMap;
use std::path::Path;

use rand::rngs::StdRng;
use rand::Rng;

use crate::format::dtype::Dtype;
use crate::format::st_writer::SpooledWriter;
use crate::nn::network::{is_norm, nn_error, var, Network, Param};
use crate::CompressError;
use domain::{Architecture, ParamRole, ParamSpec};

/// Draws each tensor's values in the architecture's order; weights set the fan-in that the
/// biases after them use.
struct Draw<'a> {
    arch: &'a Architecture,
    rng: &'a mut StdRng,
    fan_in: usize,
}

/// What a tensor starts as.
enum Fill {
    Uniform(f32),
    Constant(f32),
}

impl Draw<'_> {
    fn fill(&mut self, spec: &ParamSpec) -> Fill {
        let name = spec.name.as_str();
        match spec.role {
            ParamRole::Weight => {
                self.fan_in = spec.shape[1..].iter().product();
                Fill::Uniform(1.0 / (self.fan_in as f32).sqrt())
            }
            ParamRole::Bias if name.ends_with(".weight") => Fill::Constant(1.0),
            ParamRole::Bias if is_norm(self.arch, name) => Fill::Constant(0.0),
            ParamRole::Bias => Fill::Uniform(1.0 / (self.fan_in as f32).sqrt()),
            ParamRole::Buffer if name.ends_with("running_var") => Fill::Constant(1.0),
            ParamRole::Buffer | ParamRole::Counter => Fill::Constant(0.0),
        }
    }

    /// The next `n` values of a tensor that starts as `fill`.
    fn draw(&mut self, fill: &Fill, n: usize, out: &mut Vec<f32>) {
        out.clear();
        match *fill {
            Fill::Uniform(b) => out.extend((0..n).map(|_| self.rng.random_range(-b..b))),
            Fill::Constant(c) => out.resize(n, c),
        }
    }

    fn values(&mut self, spec: &ParamSpec) -> Vec<f32> {
        let n: usize = spec.shape.iter().product();
        let fill = self.fill(spec);
        let mut out = Vec::new();
        self.draw(
            &fill,
            n.max(usize::from(spec.role == ParamRole::Counter)),
            &mut out,
        );
        out
    }
}

impl Network {
    pub fn initialise(arch: &Architecture, rng: &mut StdRng) -> Result<Self, CompressError> {
        let mut params = BTreeMap::new();
        let mut dtypes = BTreeMap::new();
        let mut draw = Draw {
            arch,
            rng,
            fan_in: 1,
        };
        for spec in arch.params() {
            let values = draw.values(&spec);
            let p = var(values, &spec.shape).map_err(nn_error)?;
            let dtype = if spec.role == ParamRole::Counter {
                Dtype::I64
            } else {
                Dtype::F32
            };
            dtypes.insert(spec.name.clone(), dtype);
            params.insert(
                spec.name,
                Param {
                    var: p,
                    role: spec.role,
                },
            );
        }
        Ok(Network {
            arch: arch.clone(),
            params,
            dtypes,
            metadata: BTreeMap::new(),
            fake_quant: None,
        })
    }
}

/// The same weights as [`Network::initialise`] with the same generator, written to `path` as
/// safetensors one tensor at a time. Returns the file's size.
pub fn write_initial(
    arch: &Architecture,
    rng: &mut StdRng,
    path: &Path,
) -> Result<u64, CompressError> {
    let mut out = SpooledWriter::new(&path.with_extension("spool"))?;
    let mut draw = Draw {
        arch,
        rng,
        fan_in: 1,
    };
    // A million values at a time: one tensor may hold a gigabyte.
    const PIECE: usize = 1 << 20;
    let (mut values, mut bytes) = (Vec::new(), Vec::new());
    for spec in arch.params() {
        let shape: Vec<u64> = spec.shape.iter().map(|&d| d as u64).collect();
        let fill = draw.fill(&spec);
        if spec.role == ParamRole::Counter {
            out.add(&spec.name, "I64", &shape, &0i64.to_le_bytes())?;
            continue;
        }
        let n: usize = spec.shape.iter().product();
        out.add_streamed(&spec.name, "F32", &shape, |w| {
            let mut left = n;
            while left > 0 {
                let take = left.min(PIECE);
                draw.draw(&fill, take, &mut values);
                bytes.clear();
                bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
                w.write_all(&bytes)?;
                left -= take;
            }
            Ok(())
        })?;
    }
    Ok(out.finish(&BTreeMap::new(), path)?)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    /// The file written piece by piece holds exactly the weights the in-memory network starts
    /// with, for the same seed.
    #[test]
    fn written_weights_equal_the_networks() {
        let arch = Architecture::parse_json(
            r#"{"input_shape":[1,6,6],"layers":[
                {"type":"conv2d","in_channels":1,"out_channels":3,"kernel_size":3},
                {"type":"batchnorm2d","num_features":3},{"type":"relu"},{"type":"flatten"},
                {"type":"linear","in_features":48,"out_features":5}]}"#,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            dir.path().join("a.safetensors"),
            dir.path().join("b.safetensors"),
        );
        Network::initialise(&arch, &mut StdRng::seed_from_u64(7))
            .unwrap()
            .save(&a)
            .unwrap();
        write_initial(&arch, &mut StdRng::seed_from_u64(7), &b).unwrap();
        let (ra, rb) = (
            crate::format::reader::read_dense(&a).unwrap(),
            crate::format::reader::read_dense(&b).unwrap(),
        );
        assert_eq!(ra, rb);
        assert_eq!(ra.len(), 2 + 5 + 2);
    }
}
