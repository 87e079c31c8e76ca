//! Weight sharing (Han et al. 2016, "Deep Compression"): the non-zero weights of a tensor are
//! clustered into at most 2^bits − 1 shared values by 1-D k-means with linear initialisation;
//! code 0 stands for an exact zero, so pruned weights stay pruned and take no centroid.

/// Codebook (index 0 is 0.0) and one code per weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Shared {
    pub codebook: Vec<f32>,
    pub codes: Vec<u8>,
}

const ITERATIONS: usize = 50;

pub fn cluster(values: &[f32], bits: u32) -> Shared {
    assert!((1..=8).contains(&bits));
    let k = (1usize << bits) - 1;
    let mut nonzero: Vec<f32> = values.iter().copied().filter(|v| *v != 0.0).collect();
    nonzero.sort_by(f32::total_cmp);
    let centroids = if nonzero.is_empty() {
        Vec::new()
    } else {
        lloyd(&nonzero, k)
    };
    let mut codebook = Vec::with_capacity(centroids.len() + 1);
    codebook.push(0.0);
    codebook.extend(&centroids);
    let codes = values
        .iter()
        .map(|&v| {
            if v == 0.0 {
                0
            } else {
                nearest(&centroids, v) as u8 + 1
            }
        })
        .collect();
    Shared { codebook, codes }
}

/// Lloyd's algorithm on sorted values: each iteration assigns by the midpoints between
/// neighbouring centroids (binary search) and averages with prefix sums, so it costs
/// O(k log n) after the sort.
fn lloyd(sorted: &[f32], k: usize) -> Vec<f32> {
    let (min, max) = (sorted[0] as f64, sorted[sorted.len() - 1] as f64);
    let k = k.min(sorted.len());
    let mut c: Vec<f64> = if k == 1 {
        vec![(min + max) / 2.0]
    } else {
        (0..k)
            .map(|i| min + (max - min) * i as f64 / (k - 1) as f64)
            .collect()
    };
    let mut prefix = Vec::with_capacity(sorted.len() + 1);
    prefix.push(0f64);
    for &v in sorted {
        prefix.push(prefix.last().unwrap() + v as f64);
    }
    for _ in 0..ITERATIONS {
        let mut bounds = vec![0usize];
        for pair in c.windows(2) {
            let mid = (pair[0] + pair[1]) / 2.0;
            bounds.push(sorted.partition_point(|&v| (v as f64) < mid));
        }
        bounds.push(sorted.len());
        let mut moved = false;
        for (i, w) in bounds.windows(2).enumerate() {
            if w[1] > w[0] {
                let mean = (prefix[w[1]] - prefix[w[0]]) / (w[1] - w[0]) as f64;
                moved |= (mean - c[i]).abs() > 1e-12;
                c[i] = mean;
            }
        }
        if !moved {
            break;
        }
    }
    c.dedup();
    c.into_iter().map(|v| v as f32).collect()
}

fn nearest(centroids: &[f32], v: f32) -> usize {
    let i = centroids.partition_point(|&c| c < v);
    if i == 0 {
        0
    } else if i == centroids.len() || v - centroids[i - 1] <= centroids[i] - v {
        i - 1
    } else {
        i
    }
}

pub fn decode(shared: &Shared) -> Vec<f32> {
    shared
        .codes
        .iter()
        .map(|&c| shared.codebook[c as usize])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_clusters_and_zeros() {
        let w = [0.0, 1.0, 1.1, 0.9, 0.0, -2.0, -2.2, -1.8];
        let s = cluster(&w, 2);
        assert!(s.codebook.len() <= 4);
        assert_eq!(s.codebook[0], 0.0);
        let back = decode(&s);
        assert_eq!(back[0], 0.0);
        assert_eq!(back[4], 0.0);
        assert!(
            (back[1] - 1.0).abs() < 1e-6 && (back[5] + 2.0).abs() < 1e-6,
            "{back:?}"
        );
    }

    #[test]
    fn more_bits_never_hurt() {
        let w: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let err = |bits| {
            let back = decode(&cluster(&w, bits));
            w.iter()
                .zip(&back)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
        };
        assert!(err(6) < err(4) && err(4) < err(2));
    }
}

/// Packs `bits`-bit codes into a little-endian bit stream (code i at bit i·bits).
pub fn pack_bits(codes: &[u8], bits: u32) -> Vec<u8> {
    let mut out = vec![0u8; (codes.len() * bits as usize).div_ceil(8)];
    for (i, &c) in codes.iter().enumerate() {
        let at = i * bits as usize;
        let word = (c as u16) << (at % 8);
        out[at / 8] |= word as u8;
        if at % 8 + bits as usize > 8 {
            out[at / 8 + 1] |= (word >> 8) as u8;
        }
    }
    out
}

pub fn unpack_bits(packed: &[u8], bits: u32, n: usize) -> Vec<u8> {
    let mask = (1u16 << bits) - 1;
    (0..n)
        .map(|i| {
            let at = i * bits as usize;
            let lo = packed[at / 8] as u16;
            let hi = packed.get(at / 8 + 1).copied().unwrap_or(0) as u16;
            (((lo | hi << 8) >> (at % 8)) & mask) as u8
        })
        .collect()
}

#[cfg(test)]
mod packing_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn bit_packing_round_trips(bits in 2u32..=8, raw in prop::collection::vec(any::<u8>(), 0..200)) {
            let codes: Vec<u8> = raw.iter().map(|c| c & ((1u16 << bits) - 1) as u8).collect();
            let packed = pack_bits(&codes, bits);
            prop_assert_eq!(packed.len(), (codes.len() * bits as usize).div_ceil(8));
            prop_assert_eq!(unpack_bits(&packed, bits, codes.len()), codes);
        }
    }
}
