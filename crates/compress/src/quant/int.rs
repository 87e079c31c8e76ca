//! Integer quantization (int8, int4): symmetric or asymmetric, per tensor, per output channel
//! (axis 0) or per group of consecutive weights along a row. Dequantization is
//! `(q − zero_point) · scale`, as in compressed-tensors; zero always maps to a code that
//! dequantizes to exactly zero, so pruned weights stay pruned.

use rayon::prelude::*;

use crate::quant::ErrorSums;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Tensor,
    /// One scale per row (output channel).
    Channel,
    /// One scale per `n` consecutive weights of a row.
    Group(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntSpec {
    pub bits: u32,
    pub symmetric: bool,
    pub granularity: Granularity,
}

impl IntSpec {
    /// Code range: symmetric uses ±(2^(b−1) − 1) so that the grid is symmetric around zero.
    pub fn range(self) -> (i32, i32) {
        let half = 1i32 << (self.bits - 1);
        if self.symmetric {
            (-(half - 1), half - 1)
        } else {
            (-half, half - 1)
        }
    }

    /// Weights sharing one scale, for a tensor of `rows` × `cols`.
    pub fn group_len(self, rows: usize, cols: usize) -> usize {
        match self.granularity {
            Granularity::Tensor => rows * cols,
            Granularity::Channel => cols,
            Granularity::Group(n) => n,
        }
    }
}

/// Codes (one i8 per weight, int4 codes too, before packing) and per-group parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    pub codes: Vec<i8>,
    pub scales: Vec<f32>,
    /// Empty when symmetric.
    pub zero_points: Vec<i8>,
}

/// Quantizes a row-major `rows` × `cols` tensor. `cols` must be a multiple of the group size
/// for group granularity (checked before a job is queued).
pub fn quantize(values: &[f32], rows: usize, cols: usize, spec: IntSpec) -> Quantized {
    quantize_measured(values, rows, cols, spec, None).0
}

/// Quantizes and measures in one pass over the weights: the codes and parameters, the error
/// of the dequantized values against the originals and, when `restored` is given, those
/// values. The same codes as `quantize`.
pub fn quantize_measured(
    values: &[f32],
    rows: usize,
    cols: usize,
    spec: IntSpec,
    restored: Option<&mut [f32]>,
) -> (Quantized, ErrorSums) {
    assert_eq!(values.len(), rows * cols);
    let group = spec.group_len(rows, cols).max(1);
    assert_eq!(values.len() % group, 0, "groups must tile the tensor");
    let (lo, hi) = spec.range();
    let params: Vec<(f32, i32)> = values
        .par_chunks(group)
        .map(|g| params_for(g, spec))
        .collect();
    let mut codes = vec![0i8; values.len()];
    // One chunk of consecutive weights, walking the groups it overlaps.
    let kernel = |start: usize, v: &[f32], c: &mut [i8], mut r: Option<&mut [f32]>| {
        let mut sums = ErrorSums::default();
        let mut i = 0;
        while i < v.len() {
            let g = (start + i) / group;
            let end = ((g + 1) * group - start).min(v.len());
            let (scale, zp) = params[g];
            let inv = if scale == 0.0 { 0.0 } else { 1.0 / scale };
            for k in i..end {
                let q = (round_even(v[k] * inv) as i32 + zp).clamp(lo, hi);
                c[k] = q as i8;
                let back = (q - zp) as f32 * scale;
                sums.push(v[k], back);
                if let Some(r) = r.as_deref_mut() {
                    r[k] = back;
                }
            }
            i = end;
        }
        sums
    };
    let sums = crate::quant::in_chunks(values, &mut codes, restored, kernel);
    let q = Quantized {
        codes,
        scales: params.iter().map(|p| p.0).collect(),
        zero_points: if spec.symmetric {
            Vec::new()
        } else {
            params.iter().map(|p| p.1 as i8).collect()
        },
    };
    (q, sums)
}

/// Round half to even (as `torch.round` does) for |x| < 2^22, without a libm call: adding
/// and removing 1.5·2^23 leaves the nearest integer under the default rounding mode.
#[inline]
pub fn round_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    if x.abs() < 4_194_304.0 {
        (x + MAGIC) - MAGIC
    } else {
        x.round_ties_even()
    }
}

/// Scale and zero point for one group. The asymmetric range always includes zero.
pub(crate) fn params_for(group: &[f32], spec: IntSpec) -> (f32, i32) {
    let (lo, hi) = spec.range();
    if spec.symmetric {
        let max = group.iter().fold(0f32, |m, w| m.max(w.abs()));
        (max / hi as f32, 0)
    } else {
        let (min, max) = group
            .iter()
            .fold((0f32, 0f32), |(a, b), &w| (a.min(w), b.max(w)));
        let scale = (max - min) / (hi - lo) as f32;
        if scale == 0.0 {
            return (0.0, 0);
        }
        let zp = round_even(lo as f32 - min / scale) as i32;
        (scale, zp.clamp(lo, hi))
    }
}

pub fn dequantize(q: &Quantized, group: usize) -> Vec<f32> {
    let mut out = vec![0f32; q.codes.len()];
    out.par_chunks_mut(group)
        .zip(q.codes.par_chunks(group))
        .enumerate()
        .for_each(|(i, (o, c))| {
            let scale = q.scales[i];
            let zp = q.zero_points.get(i).copied().unwrap_or(0) as f32;
            for (o, &c) in o.iter_mut().zip(c) {
                *o = (c as f32 - zp) * scale;
            }
        });
    out
}

/// Packs int4 codes eight to an `i32`, lowest nibble first, each code offset by +8 to
/// unsigned (compressed-tensors `pack-quantized`, v0.9+ layout). Bytewise this is two codes per
/// byte, low nibble first. `codes.len()` must be a multiple of 8.
pub fn pack_int4(codes: &[i8]) -> Vec<i32> {
    codes
        .chunks_exact(8)
        .map(|c| {
            c.iter().enumerate().fold(0u32, |acc, (i, &q)| {
                acc | ((((q as i32 + 8) as u32) & 0xf) << (4 * i))
            }) as i32
        })
        .collect()
}

pub fn unpack_int4(packed: &[i32]) -> Vec<i8> {
    packed
        .iter()
        .flat_map(|&p| (0..8).map(move |i| (((p as u32 >> (4 * i)) & 0xf) as i32 - 8) as i8))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(bits: u32, symmetric: bool, granularity: Granularity) -> IntSpec {
        IntSpec {
            bits,
            symmetric,
            granularity,
        }
    }

    #[test]
    fn known_int8_symmetric_channel() {
        // Powers of two keep every step exact.
        let w = [
            127.0f32 / 128.0,
            -50.0 / 128.0,
            0.0,
            127.0 / 512.0,
            0.0,
            -64.0 / 512.0,
        ];
        let q = quantize(&w, 2, 3, spec(8, true, Granularity::Channel));
        assert_eq!(q.scales, vec![0.0078125, 0.001953125]);
        assert_eq!(q.codes, vec![127, -50, 0, 127, 0, -64]);
        assert!(q.zero_points.is_empty());
    }

    proptest! {
        #[test]
        fn error_is_at_most_half_a_step_and_zeros_stay_zero(
            rows in 1usize..6, groups in 1usize..5, gsize in prop::sample::select(vec![1usize, 2, 8, 32]),
            seed in any::<u64>(), bits in prop::sample::select(vec![4u32, 8]), symmetric in any::<bool>(),
            gran in 0u8..3,
        ) {
            let cols = groups * gsize;
            let mut s = seed | 1;
            let w: Vec<f32> = (0..rows * cols).map(|i| {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                if i % 3 == 0 { 0.0 } else { ((s >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0) as f32 }
            }).collect();
            let granularity = match gran { 0 => Granularity::Tensor, 1 => Granularity::Channel, _ => Granularity::Group(gsize) };
            let sp = spec(bits, symmetric, granularity);
            let group = sp.group_len(rows, cols);
            let q = quantize(&w, rows, cols, sp);
            let back = dequantize(&q, group);
            for (i, (&a, &b)) in w.iter().zip(&back).enumerate() {
                let scale = q.scales[i / group];
                prop_assert!((a - b).abs() <= scale / 2.0 * 1.0001 + 1e-7, "w={a} back={b} scale={scale}");
                if a == 0.0 { prop_assert_eq!(b, 0.0); }
            }
        }

        #[test]
        fn the_fused_pass_restores_and_measures_what_dequantize_gives(
            rows in 1usize..5, cols in prop::sample::select(vec![8usize, 64, 96]), seed in any::<u64>(),
            symmetric in any::<bool>(), gran in 0u8..3,
        ) {
            let mut s = seed | 1;
            let w: Vec<f32> = (0..rows * cols).map(|_| {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
            }).collect();
            let granularity = match gran { 0 => Granularity::Tensor, 1 => Granularity::Channel, _ => Granularity::Group(8) };
            let sp = spec(8, symmetric, granularity);
            let mut restored = vec![0f32; w.len()];
            let (q, sums) = quantize_measured(&w, rows, cols, sp, Some(&mut restored));
            let back = dequantize(&q, sp.group_len(rows, cols));
            prop_assert_eq!(&restored, &back);
            let mut expected = ErrorSums::default();
            expected.add(&w, &back);
            prop_assert_eq!(sums.stats(), expected.stats());
        }

        #[test]
        fn int4_packing_round_trips(codes in prop::collection::vec(-8i8..=7, 0..64)) {
            let codes: Vec<i8> = codes.iter().copied().take(codes.len() / 8 * 8).collect();
            prop_assert_eq!(unpack_int4(&pack_int4(&codes)), codes);
        }
    }

    #[test]
    fn rounding_is_half_to_even() {
        for (x, r) in [
            (0.5f32, 0.0f32),
            (1.5, 2.0),
            (2.5, 2.0),
            (-0.5, -0.0),
            (-1.5, -2.0),
            (0.49999997, 0.0),
            (126.6, 127.0),
            (-3.2, -3.0),
        ] {
            assert_eq!(round_even(x), r, "{x}");
        }
        assert_eq!(round_even(1e9), 1e9);
    }

    #[test]
    fn int4_packs_low_nibble_first() {
        let packed = pack_int4(&[-8, -7, 0, 1, 2, 3, 4, 7]);
        assert_eq!(packed[0].to_le_bytes(), [0x10, 0x98, 0xba, 0xfc]);
    }
}
