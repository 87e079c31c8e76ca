//! Each layer's output shape from its input shape, and the checks on names and sizes that
//! make an architecture that exists one that can be built.

use super::layer::{LayerKind, Size2};
use super::MAX_ACTIVATION;
use crate::ParseError;

pub(super) fn check_name(name: &str, at: &str) -> Result<(), ParseError> {
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

/// How many values a tensor of `shape` holds; None when that overflows u64. Sizes come from
/// clients, so no product of them is taken unchecked.
pub fn volume(shape: &[usize]) -> Option<u64> {
    shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(u64::try_from(d).ok()?))
}

pub(super) fn check_activation(shape: &[usize], at: &str) -> Result<(), ParseError> {
    match volume(shape) {
        Some(n) if n <= MAX_ACTIVATION => Ok(()),
        n => Err(ParseError(format!(
            "{at}: one sample's activation has {} values; at most {MAX_ACTIVATION} are supported",
            n.map_or_else(|| "more than 2^64".to_owned(), |n| n.to_string())
        ))),
    }
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

pub(super) fn output_shape(kind: &LayerKind, shape: &[usize]) -> Result<Vec<usize>, String> {
    match *kind {
        LayerKind::Linear {
            in_features,
            out_features,
            ..
        } => linear(in_features, out_features, shape),
        LayerKind::Conv2d {
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            ..
        } => conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            shape,
        ),
        LayerKind::Maxpool2d {
            kernel_size,
            stride,
        }
        | LayerKind::Avgpool2d {
            kernel_size,
            stride,
        } => pooled(shape, kernel_size, stride),
        LayerKind::Flatten => volume(shape)
            .and_then(|n| usize::try_from(n).ok())
            .map(|n| vec![n])
            .ok_or_else(|| format!("flattening {shape:?} overflows")),
        LayerKind::Batchnorm1d {
            num_features,
            eps,
            momentum,
        } => batchnorm(false, num_features, eps, momentum, shape),
        LayerKind::Batchnorm2d {
            num_features,
            eps,
            momentum,
        } => batchnorm(true, num_features, eps, momentum, shape),
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

fn linear(in_features: usize, out_features: usize, shape: &[usize]) -> Result<Vec<usize>, String> {
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

fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: Size2,
    stride: usize,
    padding: usize,
    shape: &[usize],
) -> Result<Vec<usize>, String> {
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
    let pad = |d: usize| {
        d.checked_add(2 * padding)
            .ok_or("the padded input overflows")
    };
    let (ph, pw) = (pad(h)?, pad(w)?);
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

fn batchnorm(
    two_d: bool,
    num_features: usize,
    eps: f64,
    momentum: f64,
    shape: &[usize],
) -> Result<Vec<usize>, String> {
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
