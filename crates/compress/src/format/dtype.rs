//! Safetensors element types and the magnitude key used to rank weights across dtypes.

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    Bool,
    U8,
    I8,
    F8E5M2,
    F8E4M3,
    F8E8M0,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    C64,
    F64,
    I64,
    U64,
}

const NAMES: [(Dtype, &str); 17] = [
    (Dtype::Bool, "BOOL"),
    (Dtype::U8, "U8"),
    (Dtype::I8, "I8"),
    (Dtype::F8E5M2, "F8_E5M2"),
    (Dtype::F8E4M3, "F8_E4M3"),
    (Dtype::F8E8M0, "F8_E8M0"),
    (Dtype::I16, "I16"),
    (Dtype::U16, "U16"),
    (Dtype::F16, "F16"),
    (Dtype::BF16, "BF16"),
    (Dtype::I32, "I32"),
    (Dtype::U32, "U32"),
    (Dtype::F32, "F32"),
    (Dtype::C64, "C64"),
    (Dtype::F64, "F64"),
    (Dtype::I64, "I64"),
    (Dtype::U64, "U64"),
];

impl Dtype {
    pub fn parse(s: &str) -> Option<Dtype> {
        NAMES.iter().find(|(_, n)| *n == s).map(|(d, _)| *d)
    }

    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(d, _)| *d == self)
            .map(|(_, n)| *n)
            .unwrap_or("?")
    }

    pub fn known_names() -> String {
        NAMES.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", ")
    }

    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 | Dtype::F8E5M2 | Dtype::F8E4M3 | Dtype::F8E8M0 => {
                1
            }
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::C64 | Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
        }
    }

    /// The dtypes whose weights magnitude pruning can rank and zero.
    pub fn is_prunable(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F16 | Dtype::BF16)
    }
}

/// A key that orders |w| for F32, F16 and BF16 alike: the bit pattern of |w| as an f32.
/// For non-negative IEEE floats the bit pattern is monotone in the value, and F16/BF16
/// widen to F32 exactly, so comparing keys compares magnitudes across dtypes.
pub type Key = u32;

/// Keys above this are NaN; equal to it is infinity.
pub const INFINITY_KEY: Key = 0x7f80_0000;

pub fn f16_key_table() -> &'static [Key; 1 << 15] {
    static TABLE: OnceLock<Box<[Key; 1 << 15]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Box::new([0u32; 1 << 15]);
        for (bits, slot) in t.iter_mut().enumerate() {
            *slot = half::f16::from_bits(bits as u16).to_f32().to_bits();
        }
        t
    })
}

/// Reads element keys out of little-endian bytes of one prunable dtype.
#[derive(Clone, Copy)]
pub enum KeyReader {
    F32,
    F16(&'static [Key; 1 << 15]),
    BF16,
}

impl KeyReader {
    pub fn for_dtype(dtype: Dtype) -> Option<KeyReader> {
        match dtype {
            Dtype::F32 => Some(KeyReader::F32),
            Dtype::F16 => Some(KeyReader::F16(f16_key_table())),
            Dtype::BF16 => Some(KeyReader::BF16),
            _ => None,
        }
    }

    pub fn width(self) -> usize {
        match self {
            KeyReader::F32 => 4,
            KeyReader::F16(_) | KeyReader::BF16 => 2,
        }
    }

    /// Calls `f` with the key of every element in `bytes`, in order.
    #[inline]
    pub fn for_each(self, bytes: &[u8], mut f: impl FnMut(Key)) {
        match self {
            KeyReader::F32 => bytes
                .chunks_exact(4)
                .for_each(|b| f(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff)),
            KeyReader::F16(table) => bytes
                .chunks_exact(2)
                .for_each(|b| f(table[(u16::from_le_bytes([b[0], b[1]]) & 0x7fff) as usize])),
            KeyReader::BF16 => bytes
                .chunks_exact(2)
                .for_each(|b| f(((u16::from_le_bytes([b[0], b[1]]) & 0x7fff) as u32) << 16)),
        }
    }

    #[inline]
    fn key_of(self, b: &[u8]) -> Key {
        match self {
            KeyReader::F32 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff,
            KeyReader::F16(table) => table[(u16::from_le_bytes([b[0], b[1]]) & 0x7fff) as usize],
            KeyReader::BF16 => ((u16::from_le_bytes([b[0], b[1]]) & 0x7fff) as u32) << 16,
        }
    }

    /// Copies `input` to `out` element by element, writing zero where `keep(key)` is false.
    #[inline]
    pub fn filter_into(self, input: &[u8], out: &mut [u8], mut keep: impl FnMut(Key) -> bool) {
        match self {
            KeyReader::F32 => filter_width::<4>(input, out, |b| keep(self.key_of(b))),
            KeyReader::F16(_) | KeyReader::BF16 => {
                filter_width::<2>(input, out, |b| keep(self.key_of(b)))
            }
        }
    }

    /// Maps every element through `keep(key) -> bool`, zeroing those it rejects.
    #[inline]
    pub fn retain(self, bytes: &mut [u8], mut keep: impl FnMut(Key) -> bool) {
        match self {
            KeyReader::F32 => bytes.chunks_exact_mut(4).for_each(|b| {
                let key = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff;
                if !keep(key) {
                    b.fill(0);
                }
            }),
            KeyReader::F16(table) => bytes.chunks_exact_mut(2).for_each(|b| {
                if !keep(table[(u16::from_le_bytes([b[0], b[1]]) & 0x7fff) as usize]) {
                    b.fill(0);
                }
            }),
            KeyReader::BF16 => bytes.chunks_exact_mut(2).for_each(|b| {
                if !keep(((u16::from_le_bytes([b[0], b[1]]) & 0x7fff) as u32) << 16) {
                    b.fill(0);
                }
            }),
        }
    }
}

#[inline]
fn filter_width<const W: usize>(input: &[u8], out: &mut [u8], mut keep: impl FnMut(&[u8]) -> bool) {
    for (i, o) in input.chunks_exact(W).zip(out.chunks_exact_mut(W)) {
        let i: &[u8; W] = i.try_into().expect("exact chunk");
        let o: &mut [u8; W] = o.try_into().expect("exact chunk");
        *o = if keep(i) { *i } else { [0; W] };
    }
}

/// The smallest key k such that every f32-representable |w| < `tau` has key(|w|) < k.
pub fn threshold_key(tau: f64) -> Key {
    let mut t = tau as f32;
    if (t as f64) < tau {
        t = f32::from_bits(t.to_bits() + 1);
    }
    t.to_bits() & 0x7fff_ffff
}

/// Counts elements whose bytes are not all zero, with floats' -0.0 counted as zero.
pub fn count_nonzero(dtype: Dtype, bytes: &[u8]) -> u64 {
    let width = dtype.size();
    let sign_mask: Option<u8> = match dtype {
        Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64 | Dtype::F8E4M3 | Dtype::F8E5M2 => {
            Some(0x7f)
        }
        _ => None,
    };
    bytes
        .chunks_exact(width)
        .filter(|e| {
            let (high, rest) = e.split_last().expect("width ≥ 1");
            let high = sign_mask.map_or(*high, |m| high & m);
            high != 0 || rest.iter().any(|&b| b != 0)
        })
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_magnitudes_across_dtypes() {
        let values = [0.0f32, 1e-7, 0.001, 0.5, 1.0, 3.0, 65504.0];
        let f32_keys: Vec<Key> = values.iter().map(|v| v.to_bits()).collect();
        assert!(f32_keys.windows(2).all(|w| w[0] < w[1]));
        for v in values {
            let h = half::f16::from_f32(v);
            let mut k16 = 0;
            KeyReader::for_dtype(Dtype::F16)
                .unwrap()
                .for_each(&(-h).to_bits().to_le_bytes(), |k| k16 = k);
            assert_eq!(k16, h.to_f32().to_bits());
            let b = half::bf16::from_f32(v);
            let mut kb = 0;
            KeyReader::BF16.for_each(&(-b).to_bits().to_le_bytes(), |k| kb = k);
            assert_eq!(kb, b.to_f32().to_bits());
        }
    }

    #[test]
    fn threshold_key_implements_strict_less_than() {
        for tau in [0.0, 0.1, 0.5, 1e-30, 0.3333333333333333] {
            let k = threshold_key(tau);
            for w in [0.0f32, 0.1, 0.5, 1e-30, 0.33333334, 0.3333333, 0.09999999] {
                assert_eq!((w.to_bits() < k), (w as f64) < tau, "w={w} tau={tau}");
            }
        }
    }

    #[test]
    fn negative_zero_is_zero() {
        let bytes: Vec<u8> = [-0.0f32, 0.0, 1.0, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(count_nonzero(Dtype::F32, &bytes), 2);
        assert_eq!(count_nonzero(Dtype::I32, &bytes), 3);
    }
}
