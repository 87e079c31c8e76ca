//! A model's architecture: a sequential stack of layers, Keras-style, whose parameter names
//! follow PyTorch (`<layer>.weight`, `<layer>.bias`; layers named by their index unless given
//! a name), so a state dict saved from `nn.Sequential` uploads as it is. An `Architecture`
//! that exists has consistent shapes from input to output.

use serde::{Deserialize, Serialize};

use crate::ParseError;

mod layer;
mod shapes;
#[cfg(test)]
mod tests;

pub use layer::{kind_name, ArchitectureWire, LayerKind, LayerWire, Size2};
pub use shapes::volume;
use shapes::{check_activation, check_name, output_shape};

pub const MAX_LAYERS: usize = 256;
/// Models that run are held in memory as f32 while a step runs: 2^28 parameters (1 GiB).
const MAX_PARAMETERS: u64 = 1 << 28;
pub(crate) const MAX_ACTIVATION: u64 = 1 << 26;

/// What a parameter tensor is for; decides what training and pruning may do to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamRole {
    /// A linear or conv weight: trained, prunable.
    Weight,
    /// A bias or normalisation scale/shift: trained, never pruned.
    Bias,
    /// Batch-norm running statistics: updated in training mode, not by gradients.
    Buffer,
    /// PyTorch's `num_batches_tracked`: optional on upload, an i64 scalar.
    Counter,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: ParamRole,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub name: String,
    pub kind: LayerKind,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ArchitectureWire", into = "ArchitectureWire")]
pub struct Architecture {
    pub input_shape: Vec<usize>,
    pub input_scale: f64,
    pub input_mean: f64,
    pub input_std: f64,
    pub layers: Vec<Layer>,
}

impl Architecture {
    pub fn parse_json(text: &str) -> Result<Self, ParseError> {
        serde_json::from_str(text).map_err(|e| ParseError(format!("architecture: {e}")))
    }

    pub fn output_shape(&self) -> &[usize] {
        self.layers
            .last()
            .map(|l| l.output_shape.as_slice())
            .unwrap_or(&self.input_shape)
    }

    /// Number of classes a classifier built from this architecture predicts.
    pub fn classes(&self) -> Option<usize> {
        match self.output_shape() {
            [c] => Some(*c),
            _ => None,
        }
    }

    pub fn sample_len(&self) -> usize {
        self.input_shape.iter().product()
    }

    /// Every tensor the weights file must hold, in layer order.
    pub fn params(&self) -> Vec<ParamSpec> {
        let mut out = Vec::new();
        for l in &self.layers {
            let p = |suffix: &str, shape: Vec<usize>, role| ParamSpec {
                name: format!("{}.{suffix}", l.name),
                shape,
                role,
            };
            match &l.kind {
                LayerKind::Linear {
                    in_features,
                    out_features,
                    bias,
                } => {
                    out.push(p(
                        "weight",
                        vec![*out_features, *in_features],
                        ParamRole::Weight,
                    ));
                    if *bias {
                        out.push(p("bias", vec![*out_features], ParamRole::Bias));
                    }
                }
                LayerKind::Conv2d {
                    in_channels,
                    out_channels,
                    kernel_size,
                    bias,
                    ..
                } => {
                    let (kh, kw) = kernel_size.get();
                    let shape = vec![*out_channels, *in_channels, kh, kw];
                    out.push(p("weight", shape, ParamRole::Weight));
                    if *bias {
                        out.push(p("bias", vec![*out_channels], ParamRole::Bias));
                    }
                }
                LayerKind::Batchnorm1d { num_features, .. }
                | LayerKind::Batchnorm2d { num_features, .. } => {
                    let c = *num_features;
                    out.push(p("weight", vec![c], ParamRole::Bias));
                    out.push(p("bias", vec![c], ParamRole::Bias));
                    out.push(p("running_mean", vec![c], ParamRole::Buffer));
                    out.push(p("running_var", vec![c], ParamRole::Buffer));
                    out.push(p("num_batches_tracked", vec![], ParamRole::Counter));
                }
                _ => {}
            }
        }
        out
    }

    /// The most values one sample's activation holds at any layer.
    pub fn max_activation(&self) -> u64 {
        let per = |s: &[usize]| s.iter().map(|&d| d as u64).product::<u64>();
        self.layers
            .iter()
            .map(|l| per(&l.output_shape))
            .fold(per(&self.input_shape), u64::max)
    }

    /// The largest buffer one sample's pass unfolds a layer into (im2col for conv2d: output
    /// positions × input channels × kernel area), with the layer's name. Saturates rather
    /// than overflows: the caller compares it with a budget.
    pub fn largest_unfold(&self) -> Option<(&str, u64)> {
        self.layers
            .iter()
            .filter_map(|l| match &l.kind {
                LayerKind::Conv2d {
                    in_channels,
                    kernel_size,
                    ..
                } => {
                    let (kh, kw) = kernel_size.get();
                    let positions: u64 = l.output_shape[1..].iter().map(|&d| d as u64).product();
                    let per = [*in_channels as u64, kh as u64, kw as u64]
                        .iter()
                        .fold(positions, |a, &b| a.saturating_mul(b));
                    Some((l.name.as_str(), per))
                }
                _ => None,
            })
            .max_by_key(|(_, per)| *per)
    }

    /// Why the model cannot be trained, if it cannot: candle differentiates max-pooling only
    /// when the stride equals the kernel.
    pub fn check_trainable(&self) -> Result<(), String> {
        for l in &self.layers {
            if let LayerKind::Maxpool2d {
                kernel_size,
                stride: Some(stride),
            } = &l.kind
            {
                if stride.get() != kernel_size.get() {
                    return Err(format!(
                        "layer '{}' (maxpool2d) has a stride different from its kernel; training through it is not supported (use stride = kernel_size)",
                        l.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// The same stack with every hidden linear/conv layer keeping `factor` of its units (at
    /// least one), and everything downstream resized to match: a student for distillation.
    pub fn shrunk(&self, factor: f64) -> Result<Architecture, ParseError> {
        let mut wire = ArchitectureWire::from(self.clone());
        let last = wire
            .layers
            .iter()
            .rposition(|l| matches!(l.kind, LayerKind::Linear { .. } | LayerKind::Conv2d { .. }));
        for (i, l) in wire.layers.iter_mut().enumerate() {
            let keep = |n: usize| ((n as f64 * factor).round() as usize).max(1);
            match &mut l.kind {
                LayerKind::Linear { out_features, .. } if Some(i) != last => {
                    *out_features = keep(*out_features)
                }
                LayerKind::Conv2d { out_channels, .. } if Some(i) != last => {
                    *out_channels = keep(*out_channels)
                }
                _ => {}
            }
        }
        // Walk the shapes again so that every consumer reads what its producer now gives.
        let mut shape = wire.input_shape.clone();
        for l in &mut wire.layers {
            match &mut l.kind {
                LayerKind::Linear { in_features, .. } => *in_features = shape.iter().product(),
                LayerKind::Conv2d { in_channels, .. } => *in_channels = shape[0],
                LayerKind::Batchnorm1d { num_features, .. }
                | LayerKind::Batchnorm2d { num_features, .. } => *num_features = shape[0],
                _ => {}
            }
            shape = output_shape(&l.kind, &shape).map_err(ParseError)?;
        }
        Architecture::try_from(wire)
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("an architecture always serialises")
    }
}

impl TryFrom<ArchitectureWire> for Architecture {
    type Error = ParseError;

    fn try_from(w: ArchitectureWire) -> Result<Self, ParseError> {
        let shape_ok = matches!(w.input_shape.len(), 1 | 3) && w.input_shape.iter().all(|&d| d > 0);
        if !shape_ok {
            return Err(ParseError(format!(
                "input_shape must be [features] or [channels, height, width] with sizes > 0, got {:?}",
                w.input_shape
            )));
        }
        if !(w.input_scale.is_finite() && w.input_mean.is_finite() && w.input_std.is_finite())
            || w.input_std <= 0.0
        {
            return Err(ParseError(
                "input_scale, input_mean and input_std must be finite, input_std > 0".into(),
            ));
        }
        if w.layers.is_empty() || w.layers.len() > MAX_LAYERS {
            return Err(ParseError(format!(
                "an architecture needs between 1 and {MAX_LAYERS} layers, got {}",
                w.layers.len()
            )));
        }
        let mut shape = w.input_shape.clone();
        check_activation(&shape, "input_shape")?;
        let mut layers = Vec::with_capacity(w.layers.len());
        let mut parameters = 0u64;
        for (i, lw) in w.layers.into_iter().enumerate() {
            let name = lw.name.clone().unwrap_or_else(|| i.to_string());
            let at = format!("layers[{i}] ({} '{name}')", kind_name(&lw.kind));
            check_name(&name, &at)?;
            if layers.iter().any(|l: &Layer| l.name == name) {
                return Err(ParseError(format!("{at}: the name is used twice")));
            }
            let output =
                output_shape(&lw.kind, &shape).map_err(|e| ParseError(format!("{at}: {e}")))?;
            check_activation(&output, &at)?;
            layers.push(Layer {
                name,
                kind: lw.kind,
                input_shape: shape,
                output_shape: output.clone(),
            });
            shape = output;
        }
        let arch = Architecture {
            input_shape: w.input_shape,
            input_scale: w.input_scale,
            input_mean: w.input_mean,
            input_std: w.input_std,
            layers,
        };
        for p in arch.params() {
            parameters = shapes::volume(&p.shape)
                .and_then(|n| parameters.checked_add(n))
                .filter(|n| *n <= MAX_PARAMETERS)
                .ok_or_else(|| {
                    ParseError(format!(
                        "the architecture has more than {MAX_PARAMETERS} parameters (counting up to '{}'); at most {MAX_PARAMETERS} parameters are supported",
                        p.name
                    ))
                })?;
        }
        Ok(arch)
    }
}

impl From<Architecture> for ArchitectureWire {
    fn from(a: Architecture) -> Self {
        ArchitectureWire {
            input_shape: a.input_shape,
            input_scale: a.input_scale,
            input_mean: a.input_mean,
            input_std: a.input_std,
            layers: a
                .layers
                .into_iter()
                .map(|l| LayerWire {
                    name: Some(l.name),
                    kind: l.kind,
                })
                .collect(),
        }
    }
}
