//! OCP FP8 E4M3 (1 sign, 4 exponent bits with bias 7, 3 mantissa bits; no infinities; the
//! largest finite value is 448). Encoding rounds to nearest, ties to even, and saturates.

use std::sync::OnceLock;

use crate::quant::ErrorSums;

pub const MAX: f32 = 448.0;

/// Value of every code 0..=126 with the sign bit clear, ascending (127 is NaN).
#[cfg(test)]
fn positive_values() -> &'static [f32; 127] {
    static TABLE: OnceLock<[f32; 127]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [0f32; 127];
        for (code, v) in t.iter_mut().enumerate() {
            *v = decode_bits(code as u8);
        }
        t
    })
}

/// The value of a code (table lookup).
pub fn decode(code: u8) -> f32 {
    decode_table()[code as usize]
}

fn decode_table() -> &'static [f32; 256] {
    static TABLE: OnceLock<[f32; 256]> = OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|c| decode_bits(c as u8)))
}

/// Scales (max |w| / 448 per group of `group` weights), codes, and the error of the decoded
/// values, in one pass over the weights per group; `restored` receives the decoded values.
pub fn quantize_measured(
    values: &[f32],
    group: usize,
    restored: Option<&mut [f32]>,
) -> (Vec<u8>, Vec<f32>, ErrorSums) {
    use rayon::prelude::*;
    let group = group.max(1);
    let scales: Vec<f32> = values
        .par_chunks(group)
        .map(|g| g.iter().fold(0f32, |m, w| m.max(w.abs())) / MAX)
        .collect();
    let table = decode_table();
    let mut codes = vec![0u8; values.len()];
    let kernel = |start: usize, v: &[f32], c: &mut [u8], mut r: Option<&mut [f32]>| {
        let mut sums = ErrorSums::default();
        let mut i = 0;
        while i < v.len() {
            let g = (start + i) / group;
            let end = ((g + 1) * group - start).min(v.len());
            let s = scales[g];
            let inv = if s == 0.0 { 0.0 } else { 1.0 / s };
            for k in i..end {
                let code = if s == 0.0 {
                    0
                } else {
                    encode_finite(v[k] * inv)
                };
                c[k] = code;
                let back = table[code as usize] * s;
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
    (codes, scales, sums)
}

fn decode_bits(code: u8) -> f32 {
    let sign = if code & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = ((code >> 3) & 0xf) as i32;
    let man = (code & 0x7) as f32;
    if exp == 0xf && code & 0x7 == 0x7 {
        return f32::NAN;
    }
    let magnitude = if exp == 0 {
        man / 8.0 * 2f32.powi(-6)
    } else {
        (1.0 + man / 8.0) * 2f32.powi(exp - 7)
    };
    sign * magnitude
}

/// Rounds the f32 mantissa to three bits directly (ties to even); the table search in
/// `encode_by_search` is the reference it is tested against.
pub fn encode(x: f32) -> u8 {
    let sign = ((x.to_bits() >> 24) & 0x80) as u8;
    let a = x.abs();
    if a.is_nan() {
        return 0x7f;
    }
    if a >= MAX {
        return sign | 126;
    }
    if a < MIN_NORMAL {
        // Subnormals are the multiples of 2^-9; 8·2^-9 is the smallest normal, code 0x08.
        return sign | (a * 512.0).round_ties_even() as u8;
    }
    let bits = a.to_bits();
    let exp = (bits >> 23) as i32 - 127;
    let mantissa = bits & 0x7f_ffff;
    let (mut m3, rest) = (mantissa >> 20, mantissa & 0xf_ffff);
    if rest > 0x8_0000 || (rest == 0x8_0000 && m3 & 1 == 1) {
        m3 += 1;
    }
    let code = (((exp + 7) as u32) << 3) + m3;
    sign | code.min(126) as u8
}

const MIN_NORMAL: f32 = 1.0 / 64.0;

/// `encode` for finite inputs (the caller has checked), with fewer branches: saturation by
/// `min`, and rounding without a libm call.
#[inline]
fn encode_finite(x: f32) -> u8 {
    let sign = ((x.to_bits() >> 24) & 0x80) as u8;
    let a = x.abs().min(MAX);
    if a < MIN_NORMAL {
        return sign | crate::quant::int::round_even(a * 512.0) as u8;
    }
    let bits = a.to_bits();
    let exp = (bits >> 23) as i32 - 127;
    let mantissa = bits & 0x7f_ffff;
    let (m3, rest) = (mantissa >> 20, mantissa & 0xf_ffff);
    let up = (rest > 0x8_0000 || (rest == 0x8_0000 && m3 & 1 == 1)) as u32;
    let code = (((exp + 7) as u32) << 3) + m3 + up;
    sign | code.min(126) as u8
}

#[cfg(test)]
#[test]
fn the_fast_encoder_agrees_with_the_reference_on_finite_values() {
    let mut s = 0x9e37_79b9_u32;
    for i in 0..200_000u32 {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        let x = f32::from_bits(s);
        let x = if x.is_finite() {
            x
        } else {
            (i as f32 - 1e5) / 137.0
        };
        assert_eq!(encode_finite(x), encode(x), "{x}");
        let y = (i as f32 - 100_000.0) / 200.0;
        assert_eq!(encode_finite(y), encode(y), "{y}");
    }
}

#[cfg(test)]
fn encode_by_search(x: f32) -> u8 {
    let sign = if x.is_sign_negative() { 0x80 } else { 0 };
    let a = x.abs();
    if a.is_nan() {
        return 0x7f;
    }
    let table = positive_values();
    if a >= MAX {
        return sign | 126;
    }
    // First code whose value is ≥ a; the answer is it or the one below.
    let hi = table.partition_point(|&v| v < a);
    if hi == 0 {
        return sign;
    }
    let (lo_v, hi_v) = (table[hi - 1], table[hi]);
    let code = if a - lo_v < hi_v - a {
        hi - 1
    } else if a - lo_v > hi_v - a {
        hi
    } else if (hi - 1) % 2 == 0 {
        hi - 1
    } else {
        hi
    };
    sign | code as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes() {
        assert_eq!(decode(0x7e), 448.0);
        assert_eq!(decode(0x01), 2f32.powi(-9));
        assert_eq!(decode(0x38), 1.0);
        assert_eq!(encode(1.0), 0x38);
        assert_eq!(encode(-448.0), 0xfe);
        assert_eq!(encode(1e6), 0x7e, "saturates");
        assert_eq!(encode(0.0), 0);
        // 1.0625 lies halfway between 1.0 (code 0x38, even) and 1.125 (0x39): ties to even.
        assert_eq!(encode(1.0625), 0x38);
        assert_eq!(encode(1.1875), 0x3a);
    }

    #[test]
    fn fast_encoding_matches_the_nearest_value_search() {
        let mut s = 0x2545_f491_4f6c_dd1du64;
        for i in 0..200_000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let x = match i % 3 {
                0 => f32::from_bits(s as u32),
                1 => ((s >> 11) as f64 / (1u64 << 53) as f64 * 1000.0 - 500.0) as f32,
                _ => ((s >> 11) as f64 / (1u64 << 53) as f64 * 0.04 - 0.02) as f32,
            };
            if x.is_nan() {
                continue;
            }
            assert_eq!(encode(x), encode_by_search(x), "{x:e}");
        }
        for code in 0u8..=126 {
            let v = decode(code);
            let next = decode(code + 1);
            if next.is_finite() {
                let mid = (v + next) / 2.0;
                assert_eq!(encode(mid), encode_by_search(mid), "tie at {mid:e}");
            }
        }
    }

    #[test]
    fn every_code_round_trips() {
        for code in (0u8..=255).filter(|c| c & 0x7f != 0x7f) {
            let v = decode(code);
            if v == 0.0 {
                continue;
            }
            assert_eq!(encode(v), code, "{code:#x} = {v}");
        }
    }
}
