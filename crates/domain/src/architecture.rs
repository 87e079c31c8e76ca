//! A model's architecture: a sequential stack of layers, Keras-style, whose parameter names
//! follow PyTorch (`<layer>.weight`, `<layer>.bias`; layers named by their index unless given
//! a name), so a state dict saved from `nn.Sequential` uploads as it is. An `Architecture`
//! that exists has consistent shapes from input to output.

use serde::{Deserialize, Serialize};

use crate::ParseError;

pub const MAX_LAYERS: usize = 256;
/// Models that run are held in memory as f32 while a step runs: 2^28 parameters (1 GiB).
const MAX_PARAMETERS: u64 = 1 << 28;
const MAX_ACTIVATION: u64 = 1 << 26;

/// One or two sizes (height, width); a single number means a square.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum Size2 {
    Square(usize),
    Pair([usize; 2]),
}

impl Size2 {
    pub fn get(self) -> (usize, usize) {
        match self {
            Size2::Square(s) => (s, s),
            Size2::Pair([h, w]) => (h, w),
        }
    }
}

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn bn_eps() -> f64 {
    1e-5
}
fn bn_momentum() -> f64 {
    0.1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerKind {
    Linear {
        in_features: usize,
        out_features: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    Conv2d {
        in_channels: usize,
        out_channels: usize,
        kernel_size: Size2,
        #[serde(default = "one")]
        stride: usize,
        #[serde(default)]
        padding: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    /// Stride defaults to the kernel size, as in PyTorch; no padding.
    Maxpool2d {
        kernel_size: Size2,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stride: Option<Size2>,
    },
    Avgpool2d {
        kernel_size: Size2,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stride: Option<Size2>,
    },
    Flatten,
    Batchnorm1d {
        num_features: usize,
        #[serde(default = "bn_eps")]
        eps: f64,
        #[serde(default = "bn_momentum")]
        momentum: f64,
    },
    Batchnorm2d {
        num_features: usize,
        #[serde(default = "bn_eps")]
        eps: f64,
        #[serde(default = "bn_momentum")]
        momentum: f64,
    },
    Dropout {
        p: f64,
    },
    Relu,
    Gelu,
    Tanh,
    Sigmoid,
    Softmax,
    LogSoftmax,
}

/// The JSON form of one layer: its kind plus an optional name (default: its index).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LayerWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    pub kind: LayerKind,
}

/// The JSON form of an architecture. Inputs are scaled as `(x · input_scale − input_mean) /
/// input_std` before the first layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ArchitectureWire {
    /// Shape of one sample: `[features]` or `[channels, height, width]`.
    pub input_shape: Vec<usize>,
    #[serde(default = "unit")]
    pub input_scale: f64,
    #[serde(default)]
    pub input_mean: f64,
    #[serde(default = "unit")]
    pub input_std: f64,
    pub layers: Vec<LayerWire>,
}

fn unit() -> f64 {
    1.0
}

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
            parameters += p.shape.iter().product::<usize>() as u64;
        }
        if parameters > MAX_PARAMETERS {
            return Err(ParseError(format!(
                "the architecture has {parameters} parameters; at most {MAX_PARAMETERS} are supported"
            )));
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

pub fn kind_name(kind: &LayerKind) -> &'static str {
    match kind {
        LayerKind::Linear { .. } => "linear",
        LayerKind::Conv2d { .. } => "conv2d",
        LayerKind::Maxpool2d { .. } => "maxpool2d",
        LayerKind::Avgpool2d { .. } => "avgpool2d",
        LayerKind::Flatten => "flatten",
        LayerKind::Batchnorm1d { .. } => "batchnorm1d",
        LayerKind::Batchnorm2d { .. } => "batchnorm2d",
        LayerKind::Dropout { .. } => "dropout",
        LayerKind::Relu => "relu",
        LayerKind::Gelu => "gelu",
        LayerKind::Tanh => "tanh",
        LayerKind::Sigmoid => "sigmoid",
        LayerKind::Softmax => "softmax",
        LayerKind::LogSoftmax => "log_softmax",
    }
}

fn check_name(name: &str, at: &str) -> Result<(), ParseError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ParseError(format!(
            "{at}: a layer name must be 1–100 characters of letters, digits, '_', '-', '.'"
        )))
    }
}

fn check_activation(shape: &[usize], at: &str) -> Result<(), ParseError> {
    let n: u64 = shape.iter().map(|&d| d as u64).product();
    if n > MAX_ACTIVATION {
        return Err(ParseError(format!(
            "{at}: one sample's activation has {n} values; at most {MAX_ACTIVATION} are supported"
        )));
    }
    Ok(())
}

fn positive(v: usize, what: &str) -> Result<(), String> {
    if v == 0 {
        Err(format!("{what} must be > 0"))
    } else {
        Ok(())
    }
}

fn image(shape: &[usize], what: &str) -> Result<(usize, usize, usize), String> {
    match shape {
        [c, h, w] => Ok((*c, *h, *w)),
        _ => Err(format!(
            "{what} needs a [channels, height, width] input, got {shape:?}"
        )),
    }
}

fn pooled(shape: &[usize], kernel: Size2, stride: Option<Size2>) -> Result<Vec<usize>, String> {
    let (c, h, w) = image(shape, "pooling")?;
    let (kh, kw) = kernel.get();
    let (sh, sw) = stride.unwrap_or(kernel).get();
    positive(kh.min(kw), "kernel_size")?;
    positive(sh.min(sw), "stride")?;
    if kh > h || kw > w {
        return Err(format!("kernel {kh}×{kw} is larger than the input {h}×{w}"));
    }
    Ok(vec![c, (h - kh) / sh + 1, (w - kw) / sw + 1])
}

fn output_shape(kind: &LayerKind, shape: &[usize]) -> Result<Vec<usize>, String> {
    match *kind {
        LayerKind::Linear {
            in_features,
            out_features,
            ..
        } => {
            positive(
                in_features.min(out_features),
                "in_features and out_features",
            )?;
            match shape {
                [f] if *f == in_features => Ok(vec![out_features]),
                [f] => Err(format!(
                    "expects {in_features} input features but the previous layer gives {f}"
                )),
                _ => Err(format!(
                    "expects {in_features} input features but receives shape {shape:?}; add a flatten layer first"
                )),
            }
        }
        LayerKind::Conv2d {
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            ..
        } => {
            let (c, h, w) = image(shape, "conv2d")?;
            positive(
                in_channels.min(out_channels),
                "in_channels and out_channels",
            )?;
            positive(stride, "stride")?;
            let (kh, kw) = kernel_size.get();
            positive(kh.min(kw), "kernel_size")?;
            if c != in_channels {
                return Err(format!(
                    "expects {in_channels} input channels but the previous layer gives {c}"
                ));
            }
            if padding > 1024 {
                return Err("padding must be at most 1024".into());
            }
            let (ph, pw) = (h + 2 * padding, w + 2 * padding);
            if kh > ph || kw > pw {
                return Err(format!(
                    "kernel {kh}×{kw} is larger than the padded input {ph}×{pw}"
                ));
            }
            Ok(vec![
                out_channels,
                (ph - kh) / stride + 1,
                (pw - kw) / stride + 1,
            ])
        }
        LayerKind::Maxpool2d {
            kernel_size,
            stride,
        }
        | LayerKind::Avgpool2d {
            kernel_size,
            stride,
        } => pooled(shape, kernel_size, stride),
        LayerKind::Flatten => Ok(vec![shape.iter().product()]),
        LayerKind::Batchnorm1d {
            num_features,
            eps,
            momentum,
        }
        | LayerKind::Batchnorm2d {
            num_features,
            eps,
            momentum,
        } => {
            let two_d = matches!(kind, LayerKind::Batchnorm2d { .. });
            let c = match (two_d, shape) {
                (false, [f]) => *f,
                (true, [c, _, _]) => *c,
                _ => {
                    return Err(format!(
                        "expects a {} input, got {shape:?}",
                        if two_d {
                            "[channels, height, width]"
                        } else {
                            "[features]"
                        }
                    ))
                }
            };
            if c != num_features {
                return Err(format!(
                    "has num_features {num_features} but the previous layer gives {c}"
                ));
            }
            if !(eps.is_finite() && eps > 0.0 && (0.0..=1.0).contains(&momentum)) {
                return Err("eps must be > 0 and momentum in [0, 1]".into());
            }
            Ok(shape.to_vec())
        }
        LayerKind::Dropout { p } => {
            if (0.0..1.0).contains(&p) {
                Ok(shape.to_vec())
            } else {
                Err(format!("p must be in [0, 1), got {p}"))
            }
        }
        LayerKind::Softmax | LayerKind::LogSoftmax if shape.len() != 1 => {
            Err(format!("applies to [classes] outputs, got {shape:?}"))
        }
        _ => Ok(shape.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_mnist_cnn_resolves_and_names_params_like_pytorch() {
        let a = Architecture::parse_json(
            r#"{"input_shape":[1,28,28],"input_scale":0.00392156862745098,"layers":[
                {"type":"conv2d","in_channels":1,"out_channels":32,"kernel_size":3},
                {"type":"relu"},{"type":"maxpool2d","kernel_size":2},{"type":"flatten"},
                {"type":"linear","in_features":5408,"out_features":10}]}"#,
        )
        .unwrap();
        assert_eq!(a.layers[3].output_shape, vec![5408]);
        assert_eq!(a.classes(), Some(10));
        let names: Vec<_> = a.params().into_iter().map(|p| (p.name, p.shape)).collect();
        assert_eq!(
            names,
            vec![
                ("0.weight".to_string(), vec![32, 1, 3, 3]),
                ("0.bias".to_string(), vec![32]),
                ("4.weight".to_string(), vec![10, 5408]),
                ("4.bias".to_string(), vec![10]),
            ]
        );
        let back = Architecture::parse_json(&a.to_json().to_string()).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn bad_architectures_name_the_layer_at_fault() {
        for (json, needle) in [
            (
                r#"{"input_shape":[784],"layers":[{"type":"linear","in_features":700,"out_features":10}]}"#,
                "layers[0] (linear '0'): expects 700 input features but the previous layer gives 784",
            ),
            (
                r#"{"input_shape":[1,28,28],"layers":[{"type":"linear","in_features":784,"out_features":10}]}"#,
                "add a flatten layer first",
            ),
            (
                r#"{"input_shape":[784],"layers":[{"type":"transformer"}]}"#,
                "unknown variant `transformer`",
            ),
            (r#"{"input_shape":[784],"layers":[]}"#, "between 1 and"),
            (
                r#"{"input_shape":[1,4,4],"layers":[{"type":"maxpool2d","kernel_size":5}]}"#,
                "larger than the input",
            ),
            (
                r#"{"input_shape":[10],"layers":[{"type":"relu","name":"a"},{"type":"tanh","name":"a"}]}"#,
                "used twice",
            ),
            (
                r#"{"input_shape":[65536,65536],"layers":[{"type":"relu"}]}"#,
                "input_shape must be",
            ),
            (
                r#"{"input_shape":[100000],"layers":[{"type":"linear","in_features":100000,"out_features":100000}]}"#,
                "parameters; at most",
            ),
        ] {
            let err = Architecture::parse_json(json).unwrap_err();
            assert!(err.0.contains(needle), "{json}: {err}");
        }
    }
}
