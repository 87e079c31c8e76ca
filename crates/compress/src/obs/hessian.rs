//! From a layer's Hessian H = Σ xᵀx over the calibration tokens to what the sweep needs: the
//! upper Cholesky factor of (H + λI)⁻¹, with λ a fraction of H's mean diagonal. Columns no
//! calibration token reached ("dead": H_jj = 0) get H_jj = 1 and their weights are zeroed, as
//! the reference implementations do. When the factorisation fails the damping grows tenfold,
//! up to `RETRIES` times; what was used is reported.

use super::linalg::{inverse_upper_factor, NotPositiveDefinite};

/// Tenfold steps of damping tried after the first.
pub const RETRIES: u32 = 3;

/// The inverse Hessian's factor, ready for the sweep.
pub struct InverseFactor {
    /// Upper triangular, n × n, row-major.
    pub u: Vec<f32>,
    /// Columns no calibration token reached.
    pub dead: Vec<bool>,
    /// The damping used, as a fraction of the mean diagonal.
    pub dampening: f64,
}

/// Every damping tried failed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Singular {
    pub last_dampening: f64,
}

/// `h` is n × n, row-major, symmetric; `dampening` a fraction of its mean diagonal.
pub fn inverse_factor(h: &[f64], n: usize, dampening: f64) -> Result<InverseFactor, Singular> {
    let mut h = h.to_vec();
    let dead: Vec<bool> = (0..n).map(|j| h[j * n + j] <= 0.0).collect();
    for (j, _) in dead.iter().enumerate().filter(|(_, d)| **d) {
        for k in 0..n {
            h[j * n + k] = 0.0;
            h[k * n + j] = 0.0;
        }
        h[j * n + j] = 1.0;
    }
    let mean = (0..n).map(|j| h[j * n + j]).sum::<f64>() / n.max(1) as f64;
    let mut fraction = dampening;
    for attempt in 0..=RETRIES {
        if attempt > 0 {
            fraction *= 10.0;
        }
        match inverse_upper_factor(&h, n, fraction * mean) {
            Ok(u) => {
                return Ok(InverseFactor {
                    u: u.into_iter().map(|v| v as f32).collect(),
                    dead,
                    dampening: fraction,
                })
            }
            Err(NotPositiveDefinite) => continue,
        }
    }
    Err(Singular {
        last_dampening: fraction,
    })
}

/// Reorders rows and columns of `h` (n × n) by `order` (new position → old index).
pub fn permuted(h: &[f64], n: usize, order: &[usize]) -> Vec<f64> {
    let mut out = vec![0f64; n * n];
    for (i, &oi) in order.iter().enumerate() {
        for (j, &oj) in order.iter().enumerate() {
            out[i * n + j] = h[oi * n + oj];
        }
    }
    out
}

/// Column indices by decreasing H_jj (GPTQ's act-order: the columns with the largest inputs
/// first, while the most columns remain to absorb their error); ties keep their order.
pub fn act_order(h: &[f64], n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| h[b * n + b].total_cmp(&h[a * n + a]));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_columns_are_set_apart_and_the_rest_factorised() {
        // Column 1 saw no input.
        let h = [4.0, 0.0, 2.0, 0.0, 0.0, 0.0, 2.0, 0.0, 3.0];
        let f = inverse_factor(&h, 3, 0.0).unwrap();
        assert_eq!(f.dead, vec![false, true, false]);
        // The dead column's factor is that of an isolated unit diagonal.
        assert_eq!(f.u[4], 1.0);
        assert_eq!((f.u[1], f.u[5]), (0.0, 0.0));
    }

    #[test]
    fn a_matrix_that_stays_indefinite_is_reported() {
        // Eigenvalue −1.27 against a mean diagonal of 0.75: damping 0.01, 0.1 and 1 of it
        // fail, 10 does not.
        let h = [1.0, 2.0, 2.0, 0.5];
        let f = inverse_factor(&h, 2, 0.01).map(|f| f.dampening);
        assert!(f.is_ok_and(|d| (d - 10.0).abs() < 1e-9), "{f:?}");
        let h = [1.0, 20.0, 20.0, 0.5];
        assert!(matches!(inverse_factor(&h, 2, 0.01), Err(Singular { .. })));
    }

    #[test]
    fn act_order_puts_the_loudest_inputs_first() {
        let h = [1.0, 0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 5.0];
        assert_eq!(act_order(&h, 3), vec![1, 2, 0]);
        let p = permuted(&h, 3, &[1, 2, 0]);
        assert_eq!(p[0], 5.0);
        assert_eq!(p[8], 1.0);
    }
}
