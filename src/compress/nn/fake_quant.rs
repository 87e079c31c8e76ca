//! Fake quantization for quantization-aware training: the forward pass sees the weights as
//! the int8/int4 scheme will store them; the backward pass treats the rounding as the
//! identity (the straight-through estimator), so the float weights keep learning.

use candle_core::{Result, Tensor};

use crate::domain::{Granularity, Scheme, TensorSelection};

/// Which weights are fake-quantized, and how.
#[derive(Debug, Clone)]
pub struct FakeQuant {
    pub scheme: Scheme,
    pub selection: TensorSelection,
}

/// `w` quantized and dequantized group by group as `scheme` does it, with the gradient of
/// the identity.
pub fn fake_quantize(w: &Tensor, scheme: Scheme) -> Result<Tensor> {
    let dims = w.dims().to_vec();
    let n = w.elem_count();
    let rows = dims.first().copied().unwrap_or(1).max(1);
    let (bits, symmetric, group) = match scheme {
        Scheme::Int8 {
            symmetric,
            granularity,
        } => (
            8,
            symmetric,
            match granularity {
                Granularity::Tensor => n,
                Granularity::Channel => n / rows,
                Granularity::Group(g) => g,
            },
        ),
        Scheme::Int4 {
            symmetric,
            group_size,
        } => (4, symmetric, group_size),
        _ => return Ok(w.clone()),
    };
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
