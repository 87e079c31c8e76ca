//! Fake quantization for quantization-aware training: the forward pass sees the weights as
//! the int8/int4 scheme will store them; the backward pass treats the rounding as the
//! identity (the straight-through estimator), so the float weights keep learning.

use candle_core::{Result, Tensor};

use domain::{Granularity, Scheme, TensorSelection};

/// Weights sharing one scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Groups {
    Tensor,
    /// One scale per output channel (row).
    Channel,
    Size(usize),
}

/// Which weights are fake-quantized, and how.
#[derive(Debug, Clone)]
pub struct FakeQuant {
    pub bits: u32,
    pub symmetric: bool,
    pub groups: Groups,
    pub selection: TensorSelection,
}

impl FakeQuant {
    /// The fake quantizer of an int8/int4 scheme; `None` for the others.
    pub fn for_scheme(scheme: Scheme, selection: TensorSelection) -> Option<Self> {
        let (bits, symmetric, groups) = match scheme {
            Scheme::Int8 {
                symmetric,
                granularity,
            } => (
                8,
                symmetric,
                match granularity {
                    Granularity::Tensor => Groups::Tensor,
                    Granularity::Channel => Groups::Channel,
                    Granularity::Group(g) => Groups::Size(g),
                },
            ),
            Scheme::Int4 {
                symmetric,
                group_size,
            } => (4, symmetric, Groups::Size(group_size)),
            _ => return None,
        };
        Some(FakeQuant {
            bits,
            symmetric,
            groups,
            selection,
        })
    }

    pub fn apply(&self, w: &Tensor) -> Result<Tensor> {
        let n = w.elem_count();
        let rows = w.dims().first().copied().unwrap_or(1).max(1);
        let group = match self.groups {
            Groups::Tensor => n,
            Groups::Channel => n / rows,
            Groups::Size(g) => g,
        };
        fake_quantize_groups(w, self.bits, self.symmetric, group)
    }
}

/// `w` quantized and dequantized in runs of `group` consecutive weights (each with its own
/// scale, and zero point when asymmetric), with the gradient of the identity.
pub fn fake_quantize_groups(
    w: &Tensor,
    bits: u32,
    symmetric: bool,
    group: usize,
) -> Result<Tensor> {
    let dims = w.dims().to_vec();
    let n = w.elem_count();
    let g = w.reshape((n / group, group))?;
    let half = (1i32 << (bits - 1)) as f64;
    let restored = if symmetric {
        let qmax = half - 1.0;
        let scale = (g.abs()?.max_keepdim(1)? / qmax)?
            .clamp(1e-12, f64::MAX)?
            .detach();
        g.broadcast_div(&scale)?
            .round()?
            .clamp(-qmax, qmax)?
            .broadcast_mul(&scale)?
    } else {
        let (lo, hi) = (-half, half - 1.0);
        let min = g.min_keepdim(1)?.minimum(0.0)?.detach();
        let max = g.max_keepdim(1)?.maximum(0.0)?.detach();
        let scale = ((max - &min)? / (hi - lo))?.clamp(1e-12, f64::MAX)?;
        let zero = min
            .broadcast_div(&scale)?
            .affine(-1.0, lo)?
            .round()?
            .clamp(lo, hi)?;
        g.broadcast_div(&scale)?
            .round()?
            .broadcast_add(&zero)?
            .clamp(lo, hi)?
            .broadcast_sub(&zero)?
            .broadcast_mul(&scale)?
    };
    (&g + (restored - &g)?.detach())?.reshape(dims)
}
