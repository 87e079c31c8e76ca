//! One tensor through one scheme: the tensors to store (compressed-tensors names and dtypes)
//! and the dequantized values, for measuring the error and for the dense copy.

use crate::format::sparse::i64_bytes;
use crate::quant::{fp8, int, kmeans, ErrorSums};
use domain::{Granularity, Scheme};

/// A tensor to write: name suffix (appended to the weight's name), dtype, shape, bytes.
pub struct Part {
    pub suffix: &'static str,
    pub dtype: &'static str,
    pub shape: Vec<u64>,
    pub bytes: Vec<u8>,
}

pub struct Encoded {
    /// The first part holds the codes and keeps the weight's name (plus suffix).
    pub parts: Vec<Part>,
    /// The dequantized values, when asked for (empty otherwise).
    pub restored: Vec<f32>,
    /// The dequantized values against the originals.
    pub error: ErrorSums,
    /// Values cast to infinity or to zero (fp16, bf16) or saturated (fp8).
    pub overflowed: u64,
    pub flushed_to_zero: u64,
    pub codebook_size: Option<usize>,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// `shape` is the weight's; rows are its first axis, columns everything after. With
/// `keep_restored` the dequantized values come back too (for a dense copy).
pub fn encode(values: &[f32], shape: &[u64], scheme: Scheme, keep_restored: bool) -> Encoded {
    let mut e = encode_scheme(values, shape, scheme, keep_restored);
    if e.error.is_empty() {
        e.error.add(values, &e.restored);
    }
    if !keep_restored {
        e.restored = Vec::new();
    }
    e
}

fn encode_scheme(values: &[f32], shape: &[u64], scheme: Scheme, keep: bool) -> Encoded {
    let rows = shape.first().copied().unwrap_or(1).max(1) as usize;
    let t = Tensor {
        values,
        shape,
        rows,
        cols: values.len() / rows,
        keep,
    };
    match scheme {
        Scheme::Int8 {
            symmetric,
            granularity,
        } => int8(&t, symmetric, granularity),
        Scheme::Int4 {
            symmetric,
            group_size,
        } => int4(&t, symmetric, group_size),
        Scheme::Fp8E4m3 { per_channel } => fp8_e4m3(&t, per_channel),
        Scheme::Fp16 | Scheme::Bf16 => half_cast(values, shape, scheme == Scheme::Fp16),
        Scheme::Kmeans { bits } => kmeans_shared(values, shape, bits),
    }
}

/// One tensor's values with its layout: rows are the first axis, columns everything after.
struct Tensor<'a> {
    values: &'a [f32],
    shape: &'a [u64],
    rows: usize,
    cols: usize,
    /// Whether the dequantized values are wanted.
    keep: bool,
}

impl Tensor<'_> {
    fn restored(&self) -> Vec<f32> {
        if self.keep {
            vec![0f32; self.values.len()]
        } else {
            Vec::new()
        }
    }
}

fn int8(t: &Tensor, symmetric: bool, granularity: Granularity) -> Encoded {
    let g = match granularity {
        Granularity::Tensor => int::Granularity::Tensor,
        Granularity::Channel => int::Granularity::Channel,
        Granularity::Group(n) => int::Granularity::Group(n),
    };
    let scheme = Scheme::Int8 {
        symmetric,
        granularity,
    };
    rounded(t, 8, symmetric, g, scheme)
}

fn int4(t: &Tensor, symmetric: bool, group_size: usize) -> Encoded {
    let scheme = Scheme::Int4 {
        symmetric,
        group_size,
    };
    rounded(t, 4, symmetric, int::Granularity::Group(group_size), scheme)
}

/// Round to nearest on the integer grid, stored as `scheme` lays it out.
fn rounded(
    t: &Tensor,
    bits: u32,
    symmetric: bool,
    granularity: int::Granularity,
    scheme: Scheme,
) -> Encoded {
    let mut restored = t.restored();
    let spec = int::IntSpec {
        bits,
        symmetric,
        granularity,
    };
    let (q, error) = int::quantize_measured(
        t.values,
        t.rows,
        t.cols,
        spec,
        t.keep.then_some(&mut restored[..]),
    );
    measured(int_parts(q, t.shape, scheme), restored, error)
}

/// The compressed-tensors tensors of int8 or int4 codes chosen elsewhere (round to nearest,
/// GPTQ): `int-quantized` (I8 codes) or `pack-quantized` (eight int4 codes to an I32, with the
/// original shape), scales and, when asymmetric, zero points. `shape` is the weight's.
pub fn int_parts(q: int::Quantized, shape: &[u64], scheme: Scheme) -> Vec<Part> {
    let rows = shape.first().copied().unwrap_or(1).max(1);
    let cols = shape.iter().skip(1).product::<u64>();
    let (param_shape, symmetric) = match scheme {
        Scheme::Int8 {
            symmetric,
            granularity,
        } => (
            match granularity {
                Granularity::Tensor => vec![1],
                Granularity::Channel => vec![rows, 1],
                Granularity::Group(n) => vec![rows, cols / n as u64],
            },
            symmetric,
        ),
        Scheme::Int4 {
            symmetric,
            group_size,
        } => (vec![rows, cols / group_size as u64], symmetric),
        other => unreachable!("int_parts is for integer schemes, got {other:?}"),
    };
    let mut parts = match scheme {
        Scheme::Int4 { .. } => vec![
            Part {
                suffix: "_packed",
                dtype: "I32",
                shape: vec![rows, cols / 8],
                bytes: int::pack_int4(&q.codes)
                    .iter()
                    .flat_map(|p| p.to_le_bytes())
                    .collect(),
            },
            Part {
                suffix: "_scale",
                dtype: "F32",
                shape: param_shape.clone(),
                bytes: f32_bytes(&q.scales),
            },
            Part {
                suffix: "_shape",
                dtype: "I64",
                shape: vec![2],
                bytes: i64_bytes(&[rows, cols]),
            },
        ],
        _ => vec![
            Part {
                suffix: "",
                dtype: "I8",
                shape: shape.to_vec(),
                bytes: q.codes.iter().map(|c| *c as u8).collect(),
            },
            Part {
                suffix: "_scale",
                dtype: "F32",
                shape: param_shape.clone(),
                bytes: f32_bytes(&q.scales),
            },
        ],
    };
    if !symmetric {
        parts.push(zero_point_part(param_shape, &q.zero_points));
    }
    parts
}

fn fp8_e4m3(t: &Tensor, per_channel: bool) -> Encoded {
    let (values, shape, rows, cols, keep) = (t.values, t.shape, t.rows, t.cols, t.keep);
    let mut restored = t.restored();
    let group = if per_channel {
        cols.max(1)
    } else {
        values.len().max(1)
    };
    let (codes, scales, error) =
        fp8::quantize_measured(values, group, keep.then_some(&mut restored[..]));
    let scale_shape = if per_channel {
        vec![rows as u64, 1]
    } else {
        vec![1]
    };
    measured(
        vec![
            Part {
                suffix: "",
                dtype: "F8_E4M3",
                shape: shape.to_vec(),
                bytes: codes,
            },
            Part {
                suffix: "_scale",
                dtype: "F32",
                shape: scale_shape,
                bytes: f32_bytes(&scales),
            },
        ],
        restored,
        error,
    )
}

/// fp16 / bf16 casts, counting the values that overflow to infinity or flush to zero.
fn half_cast(values: &[f32], shape: &[u64], half16: bool) -> Encoded {
    let (mut over, mut flushed) = (0u64, 0u64);
    let mut bytes = Vec::with_capacity(values.len() * 2);
    let mut restored = Vec::with_capacity(values.len());
    for &w in values {
        let (bits, back) = if half16 {
            let h = half::f16::from_f32(w);
            (h.to_bits(), h.to_f32())
        } else {
            let h = half::bf16::from_f32(w);
            (h.to_bits(), h.to_f32())
        };
        over += (back.is_infinite() && w.is_finite()) as u64;
        flushed += (back == 0.0 && w != 0.0) as u64;
        bytes.extend_from_slice(&bits.to_le_bytes());
        restored.push(back);
    }
    Encoded {
        parts: vec![Part {
            suffix: "",
            dtype: if half16 { "F16" } else { "BF16" },
            shape: shape.to_vec(),
            bytes,
        }],
        restored,
        error: ErrorSums::default(),
        overflowed: over,
        flushed_to_zero: flushed,
        codebook_size: None,
    }
}

fn kmeans_shared(values: &[f32], shape: &[u64], bits: u32) -> Encoded {
    let shared = kmeans::cluster(values, bits);
    let restored = kmeans::decode(&shared);
    let k = shared.codebook.len();
    let packed = kmeans::pack_bits(&shared.codes, bits);
    let mut e = plain(
        vec![
            Part {
                suffix: "_indices",
                dtype: "U8",
                shape: vec![packed.len() as u64],
                bytes: packed,
            },
            Part {
                suffix: "_codebook",
                dtype: "F32",
                shape: vec![k as u64],
                bytes: f32_bytes(&shared.codebook),
            },
            Part {
                suffix: "_shape",
                dtype: "I64",
                shape: vec![shape.len() as u64],
                bytes: i64_bytes(shape),
            },
        ],
        restored,
    );
    e.codebook_size = Some(k);
    e
}

/// Asymmetric schemes' zero points: one I8 per scale, shaped like the scales.
fn zero_point_part(param_shape: Vec<u64>, zero_points: &[i8]) -> Part {
    Part {
        suffix: "_zero_point",
        dtype: "I8",
        shape: param_shape,
        bytes: zero_points.iter().map(|z| *z as u8).collect(),
    }
}

fn plain(parts: Vec<Part>, restored: Vec<f32>) -> Encoded {
    measured(parts, restored, ErrorSums::default())
}

fn measured(parts: Vec<Part>, restored: Vec<f32>, error: ErrorSums) -> Encoded {
    Encoded {
        parts,
        restored,
        error,
        overflowed: 0,
        flushed_to_zero: 0,
        codebook_size: None,
    }
}
