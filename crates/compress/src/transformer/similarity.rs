//! Sentence embeddings of a compressed encoder against the original's: per-sentence cosine,
//! nearest-neighbour agreement, and the rank correlation of all pairwise similarities (what
//! semantic search and clustering depend on).

use domain::results::FidelityComparison;

/// Pairwise figures use at most this many sentences (their count grows with the square).
pub const MAX_PAIRWISE: usize = 2000;

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let n = (dot(a, a) * dot(b, b)).sqrt();
    if n == 0.0 {
        0.0
    } else {
        dot(a, b) / n
    }
}

pub fn compare(base: &[Vec<f32>], other: &[Vec<f32>]) -> FidelityComparison {
    let mut cos: Vec<f64> = base.iter().zip(other).map(|(a, b)| cosine(a, b)).collect();
    let n = cos.len();
    let mean = cos.iter().sum::<f64>() / n.max(1) as f64;
    cos.sort_by(f64::total_cmp);
    let (min, p5) = match n {
        0 => (f64::NAN, f64::NAN),
        _ => (cos[0], cos[((n - 1) as f64 * 0.05).floor() as usize]),
    };
    let k = n.min(MAX_PAIRWISE);
    let (base, other) = (&base[..k], &other[..k]);
    FidelityComparison {
        cosine_mean: Some(mean),
        cosine_min: Some(min),
        cosine_p5: Some(p5),
        nearest_neighbour_agreement: (k >= 2).then(|| nearest_agreement(base, other)),
        spearman: (k >= 3).then(|| spearman(&pairwise(base), &pairwise(other))),
        ..Default::default()
    }
}

fn nearest(set: &[Vec<f32>], i: usize) -> usize {
    (0..set.len())
        .filter(|&j| j != i)
        .map(|j| (j, cosine(&set[i], &set[j])))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(i, |(j, _)| j)
}

fn nearest_agreement(base: &[Vec<f32>], other: &[Vec<f32>]) -> f64 {
    let same = (0..base.len())
        .filter(|&i| nearest(base, i) == nearest(other, i))
        .count();
    same as f64 / base.len() as f64
}

fn pairwise(set: &[Vec<f32>]) -> Vec<f64> {
    let mut out = Vec::with_capacity(set.len() * set.len().saturating_sub(1) / 2);
    for i in 0..set.len() {
        for j in i + 1..set.len() {
            out.push(cosine(&set[i], &set[j]));
        }
    }
    out
}

/// Ranks from 1, ties sharing their average rank.
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut out = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            out[k] = rank;
        }
        i = j + 1;
    }
    out
}

pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    if va == 0.0 || vb == 0.0 {
        return 0.0;
    }
    cov / (va * vb).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_embeddings_agree_perfectly() {
        let e: Vec<Vec<f32>> = (0..6)
            .map(|i| vec![i as f32, 1.0, (i * i) as f32])
            .collect();
        let c = compare(&e, &e);
        assert!((c.cosine_mean.unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(c.nearest_neighbour_agreement, Some(1.0));
        assert!((c.spearman.unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn spearman_of_reversed_ranks_is_minus_one_and_ties_average() {
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert_eq!(ranks(&[5.0, 1.0, 5.0]), vec![2.5, 1.0, 2.5]);
    }
}
