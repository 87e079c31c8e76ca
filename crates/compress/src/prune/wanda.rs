//! Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language
//! Models"): weight w_ij scores |w_ij| · ‖x_j‖₂, its magnitude times the norm of the input
//! column it multiplies over the calibration tokens, and each output row loses its lowest
//! scores (per row, as the paper compares), or the lowest m − n of every m consecutive inputs.

use rayon::prelude::*;

/// What each row keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RowTarget {
    /// Zero this fraction of every row (rounded down to whole weights).
    Sparsity(f64),
    /// Keep the `n` highest scores of every `m` consecutive inputs.
    NofM { n: usize, m: usize },
}

/// Zeroes the lowest-scoring weights of `w` ([rows, cols], row-major) given each input
/// column's Σx² over the calibration tokens. Ties go to the lower column index being kept
/// last, so the count per row is exact. Returns the weights zeroed by this call.
pub fn prune(w: &mut [f32], cols: usize, column_squares: &[f64], target: RowTarget) -> u64 {
    assert_eq!(column_squares.len(), cols, "one Σx² per input column");
    assert_eq!(w.len() % cols.max(1), 0, "whole rows");
    let norms: Vec<f32> = column_squares.iter().map(|s| s.sqrt() as f32).collect();
    w.par_chunks_mut(cols.max(1))
        .map(|row| match target {
            RowTarget::Sparsity(s) => {
                let k = ((cols as f64) * s).floor() as usize;
                zero_lowest(row, &norms, k)
            }
            RowTarget::NofM { n, m } => row
                .chunks_mut(m)
                .zip(norms.chunks(m))
                .filter(|(g, _)| g.len() == m)
                .map(|(g, norms)| {
                    if m <= 32 {
                        zero_lowest_in_group(g, norms, m - n)
                    } else {
                        zero_lowest(g, norms, m - n)
                    }
                })
                .sum(),
        })
        .sum()
}

/// `zero_lowest` for a group of at most 32 (an N:M group), without allocating: a row of
/// SmolLM2's MLP has hundreds of groups, and a model millions.
fn zero_lowest_in_group(group: &mut [f32], norms: &[f32], k: usize) -> u64 {
    let mut scores = [0.0f32; 32];
    for ((s, w), n) in scores.iter_mut().zip(group.iter()).zip(norms) {
        *s = w.abs() * n;
    }
    let mut taken = [false; 32];
    let mut zeroed = 0;
    for _ in 0..k.min(group.len()) {
        // The lowest score not yet taken, the lower index first on ties (as `zero_lowest`).
        let mut best: Option<usize> = None;
        for j in 0..group.len() {
            if !taken[j] && best.is_none_or(|b| scores[j].total_cmp(&scores[b]).is_lt()) {
                best = Some(j);
            }
        }
        let Some(j) = best else { break };
        taken[j] = true;
        zeroed += u64::from(group[j] != 0.0);
        group[j] = 0.0;
    }
    zeroed
}

/// Zeroes the `k` entries of `row` with the lowest |w|·norm; returns how many were non-zero.
fn zero_lowest(row: &mut [f32], norms: &[f32], k: usize) -> u64 {
    if k == 0 {
        return 0;
    }
    let mut order: Vec<(f32, usize)> = row
        .iter()
        .zip(norms)
        .enumerate()
        .map(|(j, (w, n))| (w.abs() * n, j))
        .collect();
    let k = k.min(order.len());
    order.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut zeroed = 0;
    for &(_, j) in &order[..k] {
        zeroed += u64::from(row[j] != 0.0);
        row[j] = 0.0;
    }
    zeroed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_norm_decides_not_the_magnitude_alone() {
        // Column 0 carries large weights but its input is silent; column 2's small weights
        // multiply a loud input.
        let mut w = vec![5.0, 1.0, 0.5, 2.0, -6.0, 1.5, -0.4, 0.1];
        let squares = [0.0001, 1.0, 100.0, 1.0];
        prune(&mut w, 4, &squares, RowTarget::Sparsity(0.5));
        assert_eq!(w, vec![0.0, 0.0, 0.5, 2.0, 0.0, 1.5, -0.4, 0.0]);
    }

    #[test]
    fn n_of_m_keeps_exactly_n_in_every_group() {
        let cols = 16;
        let mut w: Vec<f32> = (0..cols * 8)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let squares: Vec<f64> = (0..cols).map(|j| 1.0 + (j % 5) as f64).collect();
        prune(&mut w, cols, &squares, RowTarget::NofM { n: 2, m: 4 });
        for group in w.chunks(4) {
            assert_eq!(group.iter().filter(|&&x| x != 0.0).count(), 2, "{group:?}");
        }
    }

    #[test]
    fn the_group_path_chooses_as_the_row_path_does() {
        for seed in 0..500u32 {
            let m = 2 + (seed % 15) as usize;
            let k = (seed as usize / 15) % m;
            // Few distinct values, so ties are common.
            let w: Vec<f32> = (0..m as u32)
                .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 5) as f32 - 2.0)
                .collect();
            let norms: Vec<f32> = (0..m as u32)
                .map(|i| 1.0 + ((i + seed) % 3) as f32)
                .collect();
            let (mut a, mut b) = (w.clone(), w.clone());
            assert_eq!(
                zero_lowest_in_group(&mut a, &norms, k),
                zero_lowest(&mut b, &norms, k)
            );
            assert_eq!(a, b, "m={m} k={k} w={w:?}");
        }
    }

    #[test]
    fn per_row_sparsity_is_exact_with_ties() {
        let mut w = vec![1.0f32; 30];
        let zeroed = prune(&mut w, 10, &[1.0; 10], RowTarget::Sparsity(0.35));
        assert_eq!(zeroed, 9);
        for row in w.chunks(10) {
            assert_eq!(row.iter().filter(|&&x| x == 0.0).count(), 3);
        }
    }
}
