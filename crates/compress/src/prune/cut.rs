//! Finding where to cut: the k-th smallest magnitude over any set of tensors, by a two-pass
//! radix selection on the f32 bit pattern of |w| (high 16 bits, then low 16 bits). Nothing is
//! sorted and nothing is held but two 65 536-bucket histograms, so one threshold across a whole
//! model costs two streaming reads.

use rayon::prelude::*;

use crate::format::dtype::{Key, KeyReader, INFINITY_KEY};

pub const BUCKETS: usize = 1 << 16;
const BLOCK_BYTES: usize = 256 << 10;

pub type Histogram = Vec<u64>;

/// Exactly `below + ties` elements are pruned: every element with key < `key`, and the first
/// `ties` elements (in file order) whose key equals `key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    pub key: Key,
    pub ties: u64,
}

impl Cut {
    /// Prunes nothing.
    pub const NONE: Cut = Cut { key: 0, ties: 0 };

    /// `|w| < threshold ⇒ 0`, with the threshold already turned into a key.
    pub fn below(key: Key) -> Cut {
        Cut { key, ties: 0 }
    }

    pub fn magnitude(self) -> f32 {
        f32::from_bits(self.key)
    }
}

/// Histogram of the high 16 bits of every key in `bytes`.
pub fn high_histogram(reader: KeyReader, bytes: &[u8], into: &mut Histogram) {
    let partial = bytes
        .par_chunks(BLOCK_BYTES)
        .fold(
            || vec![0u64; BUCKETS],
            |mut h, block| {
                reader.for_each(block, |k| h[(k >> 16) as usize] += 1);
                h
            },
        )
        .reduce(|| vec![0u64; BUCKETS], add);
    into.iter_mut().zip(partial).for_each(|(a, b)| *a += b);
}

/// Histogram of the low 16 bits of the keys whose high bits equal `high`.
pub fn low_histogram(reader: KeyReader, bytes: &[u8], high: u32, into: &mut Histogram) {
    let partial = bytes
        .par_chunks(BLOCK_BYTES)
        .fold(
            || vec![0u64; BUCKETS],
            |mut h, block| {
                reader.for_each(block, |k| {
                    if k >> 16 == high {
                        h[(k & 0xffff) as usize] += 1;
                    }
                });
                h
            },
        )
        .reduce(|| vec![0u64; BUCKETS], add);
    into.iter_mut().zip(partial).for_each(|(a, b)| *a += b);
}

fn add(mut a: Histogram, b: Histogram) -> Histogram {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
    a
}

/// Number of keys that are NaN or infinite.
pub fn non_finite(high: &Histogram) -> u64 {
    high[(INFINITY_KEY >> 16) as usize..].iter().sum()
}

/// The bucket holding the `rank`-th smallest key (1-based) and how many keys lie below it.
pub fn locate(hist: &Histogram, rank: u64) -> (u32, u64) {
    let mut below = 0u64;
    for (bucket, &count) in hist.iter().enumerate() {
        if below + count >= rank {
            return (bucket as u32, below);
        }
        below += count;
    }
    unreachable!("rank {rank} exceeds the histogram's {below} keys")
}

/// Number of elements to prune for a sparsity target over `n` elements.
pub fn prune_count(sparsity: f64, n: u64) -> u64 {
    ((sparsity * n as f64).round() as u64).min(n)
}

/// Completes a selection once both histograms are known: `rank` ≥ 1 elements are to go.
pub fn cut_from(high: &Histogram, low: &Histogram, rank: u64) -> Cut {
    let (hb, below_high) = locate(high, rank);
    let (lb, below_low) = locate(low, rank - below_high);
    Cut {
        key: (hb << 16) | lb,
        ties: rank - below_high - below_low,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn select(values: &[f32], rank: u64) -> Cut {
        let b = bytes(values);
        let mut high = vec![0; BUCKETS];
        high_histogram(KeyReader::F32, &b, &mut high);
        let (hb, _) = locate(&high, rank);
        let mut low = vec![0; BUCKETS];
        low_histogram(KeyReader::F32, &b, hb, &mut low);
        cut_from(&high, &low, rank)
    }

    #[test]
    fn finds_the_kth_smallest_magnitude() {
        let values = [0.5f32, -0.1, 0.3, -0.7, 0.2, 0.0];
        // Sorted magnitudes: 0, 0.1, 0.2, 0.3, 0.5, 0.7.
        for (rank, expected) in [(1, 0.0f32), (2, 0.1), (3, 0.2), (6, 0.7)] {
            let cut = select(&values, rank);
            assert_eq!(cut.magnitude(), expected);
            assert_eq!(cut.ties, 1);
        }
    }

    #[test]
    fn counts_ties_at_the_cut() {
        let values = [0.2f32, -0.2, 0.2, 0.1, 0.9];
        let cut = select(&values, 3);
        assert_eq!(cut.magnitude(), 0.2);
        assert_eq!(cut.ties, 2, "0.1 lies below; two of the three 0.2s go");
    }

    #[test]
    fn flags_nan_and_infinity() {
        let mut high = vec![0; BUCKETS];
        high_histogram(
            KeyReader::F32,
            &bytes(&[1.0, f32::NAN, f32::NEG_INFINITY]),
            &mut high,
        );
        assert_eq!(non_finite(&high), 2);
    }
}
