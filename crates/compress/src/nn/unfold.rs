//! im2col and its adjoint col2im as candle custom ops, so a convolution is one matrix
//! product with a cheap, exact backward. candle's CPU conv2d backward (a direct
//! transposed convolution) and a narrow/stack formulation both spend most of their time
//! allocating and copying; these copy whole rows in parallel and allocate once.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Patch geometry of a convolution over an already padded input.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    stride: usize,
}

impl Geometry {
    fn out(&self) -> (usize, usize) {
        (
            (self.h - self.kh) / self.stride + 1,
            (self.w - self.kw) / self.stride + 1,
        )
    }
}

/// [B, C, H, W] → [B, C·kh·kw, Ho·Wo].
struct Im2Col(Geometry);

/// The adjoint: [B, C·kh·kw, Ho·Wo] → [B, C, H, W], summing overlapping patches.
struct Col2Im(Geometry);

fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{what} expects f32 input")
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{what} expects a contiguous input"),
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let x = contiguous_f32(storage, layout, "im2col")?;
        let b = layout.dims()[0];
        let (ho, wo) = g.out();
        let rows = g.c * g.kh * g.kw;
        let mut out = vec![0f32; b * rows * ho * wo];
        out.par_chunks_mut(ho * wo)
            .enumerate()
            .for_each(|(r, dst)| {
                let (n, row) = (r / rows, r % rows);
                let (ch, k) = (row / (g.kh * g.kw), row % (g.kh * g.kw));
                let (a, e) = (k / g.kw, k % g.kw);
                let src = &x[(n * g.c + ch) * g.h * g.w..];
                for i in 0..ho {
                    let from = (i * g.stride + a) * g.w + e;
                    let row = &mut dst[i * wo..(i + 1) * wo];
                    if g.stride == 1 {
                        row.copy_from_slice(&src[from..from + wo]);
                    } else {
                        row.iter_mut()
                            .enumerate()
                            .for_each(|(j, d)| *d = src[from + j * g.stride]);
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((b, rows, ho * wo))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Col2Im(self.0))?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let cols = contiguous_f32(storage, layout, "col2im")?;
        let b = layout.dims()[0];
        let (ho, wo) = g.out();
        let k = g.kh * g.kw;
        let mut out = vec![0f32; b * g.c * g.h * g.w];
        // One image channel per task: its patches never touch another channel.
        out.par_chunks_mut(g.h * g.w)
            .enumerate()
            .for_each(|(plane, dst)| {
                let (n, ch) = (plane / g.c, plane % g.c);
                for kk in 0..k {
                    let (a, e) = (kk / g.kw, kk % g.kw);
                    let src = &cols[((n * g.c + ch) * k + kk) * ho * wo..][..ho * wo];
                    for i in 0..ho {
                        let at = (i * g.stride + a) * g.w + e;
                        let row = &src[i * wo..(i + 1) * wo];
                        if g.stride == 1 {
                            dst[at..at + wo]
                                .iter_mut()
                                .zip(row)
                                .for_each(|(d, s)| *d += s);
                        } else {
                            for (j, s) in row.iter().enumerate() {
                                dst[at + j * g.stride] += s;
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((b, g.c, g.h, g.w))))
    }
}

/// A convolution (no bias, no dilation) as im2col followed by one matrix product per sample.
pub fn conv2d_unfolded(x: &Tensor, w: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    let (o, c, kh, kw) = w.dims4()?;
    let x = if padding > 0 {
        x.pad_with_zeros(2, padding, padding)?
            .pad_with_zeros(3, padding, padding)?
    } else {
        x.clone()
    };
    let (b, _, h, wd) = x.dims4()?;
    let g = Geometry {
        c,
        h,
        w: wd,
        kh,
        kw,
        stride,
    };
    let (ho, wo) = g.out();
    let cols = x.contiguous()?.apply_op1(Im2Col(g))?;
    let y = w.reshape((o, c * kh * kw))?.broadcast_matmul(&cols)?;
    y.reshape((b, o, ho, wo))
}
