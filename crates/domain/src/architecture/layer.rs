//! The JSON form of an architecture and of its layers, with the defaults PyTorch uses.

use serde::{Deserialize, Serialize};

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
