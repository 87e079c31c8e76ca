//! The dense linear algebra the Hessian methods need: the upper Cholesky factor of a damped
//! inverse Hessian (f64, faer, every core) and the f32 products of the sweep (gemm).

use faer::{Mat, Par, Side};

/// `dst[m × n] −= a[m × k] · b[k × n]`, all row-major with the given row strides.
#[allow(clippy::too_many_arguments)]
pub fn sub_matmul(
    dst: &mut [f32],
    dst_stride: usize,
    a: &[f32],
    a_stride: usize,
    b: &[f32],
    b_stride: usize,
    m: usize,
    n: usize,
    k: usize,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let last = |rows: usize, stride: usize, cols: usize| (rows - 1) * stride + cols;
    assert!(dst.len() >= last(m, dst_stride, n), "dst holds m × n");
    assert!(a.len() >= last(m, a_stride, k), "a holds m × k");
    assert!(b.len() >= last(k, b_stride, n), "b holds k × n");
    // SAFETY: the asserts above keep every index gemm forms (row i < m at stride, column
    // j < n or k) inside the slices; `dst` is borrowed mutably and apart from `a` and `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_stride as isize,
            true,
            a.as_ptr(),
            1,
            a_stride as isize,
            b.as_ptr(),
            1,
            b_stride as isize,
            1.0,
            -1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
}

/// `dst[m × n] = a[m × k] · b[k × n]`, all contiguous row-major.
pub fn matmul(dst: &mut [f32], a: &[f32], b: &[f32], m: usize, n: usize, k: usize) {
    dst.fill(0.0);
    sub_matmul(dst, n, a, k, b, n, m, n, k);
    dst.iter_mut().for_each(|x| *x = -*x);
}

/// The Cholesky factorisation failed: the matrix is not positive definite even damped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NotPositiveDefinite;

/// `U`, upper triangular with a positive diagonal, such that `(H + λI)⁻¹ = UᵀU`, for the
/// symmetric `h` (n × n, row-major), in f64. Computed without forming the inverse: with `J`
/// the reversal permutation and `JHJ = MMᵀ` (lower Cholesky), `U = J M⁻¹ J`; one
/// factorisation and one triangular inverse instead of two factorisations and an inverse.
pub fn inverse_upper_factor(
    h: &[f64],
    n: usize,
    lambda: f64,
) -> Result<Vec<f64>, NotPositiveDefinite> {
    assert_eq!(h.len(), n * n, "a square matrix");
    let r = |i: usize| n - 1 - i;
    let reversed = Mat::<f64>::from_fn(n, n, |i, j| {
        h[r(i) * n + r(j)] + if i == j { lambda } else { 0.0 }
    });
    let llt = reversed.llt(Side::Lower).map_err(|_| NotPositiveDefinite)?;
    let mut inverse = Mat::<f64>::zeros(n, n);
    faer::linalg::triangular_inverse::invert_lower_triangular(
        inverse.as_mut(),
        llt.L(),
        Par::rayon(0),
    );
    let mut u = vec![0f64; n * n];
    for i in 0..n {
        for j in i..n {
            u[i * n + j] = inverse[(r(i), r(j))];
        }
    }
    if u.iter().any(|v| !v.is_finite()) {
        return Err(NotPositiveDefinite);
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gauss–Jordan inverse, the textbook way.
    fn naive_inverse(a: &[f64], n: usize) -> Vec<f64> {
        let mut m: Vec<f64> = a.to_vec();
        let mut inv: Vec<f64> = (0..n * n)
            .map(|k| if k / n == k % n { 1.0 } else { 0.0 })
            .collect();
        for c in 0..n {
            let p = (c..n)
                .max_by(|&x, &y| m[x * n + c].abs().total_cmp(&m[y * n + c].abs()))
                .unwrap();
            for k in 0..n {
                m.swap(c * n + k, p * n + k);
                inv.swap(c * n + k, p * n + k);
            }
            let d = m[c * n + c];
            for k in 0..n {
                m[c * n + k] /= d;
                inv[c * n + k] /= d;
            }
            for r in (0..n).filter(|&r| r != c) {
                let f = m[r * n + c];
                for k in 0..n {
                    m[r * n + k] -= f * m[c * n + k];
                    inv[r * n + k] -= f * inv[c * n + k];
                }
            }
        }
        inv
    }

    fn random_spd(n: usize, seed: u64) -> Vec<f64> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let x: Vec<f64> = (0..2 * n * n)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let mut h = vec![0f64; n * n];
        for t in 0..2 * n {
            for i in 0..n {
                for j in 0..n {
                    h[i * n + j] += x[t * n + i] * x[t * n + j];
                }
            }
        }
        h
    }

    #[test]
    fn the_factor_reproduces_the_naive_inverse() {
        for (n, seed) in [(1, 1), (2, 2), (7, 3), (40, 4), (129, 5)] {
            let h = random_spd(n, seed);
            let lambda = 0.01;
            let u = inverse_upper_factor(&h, n, lambda).unwrap();
            let mut damped = h.clone();
            (0..n).for_each(|i| damped[i * n + i] += lambda);
            let inv = naive_inverse(&damped, n);
            for i in 0..n {
                for j in 0..n {
                    assert!(j >= i || u[i * n + j] == 0.0, "upper triangular");
                    let utu: f64 = (0..n).map(|k| u[k * n + i] * u[k * n + j]).sum();
                    let want = inv[i * n + j];
                    assert!(
                        (utu - want).abs() <= 1e-9 * (1.0 + want.abs()),
                        "n={n} ({i},{j}): {utu} vs {want}"
                    );
                }
                assert!(u[i * n + i] > 0.0);
            }
        }
    }

    #[test]
    fn a_singular_matrix_is_refused_until_damped() {
        // Rank one: x xᵀ.
        let x = [1.0, 2.0, -1.0];
        let h: Vec<f64> = (0..9).map(|k| x[k / 3] * x[k % 3]).collect();
        assert_eq!(inverse_upper_factor(&h, 3, 0.0), Err(NotPositiveDefinite));
        assert!(inverse_upper_factor(&h, 3, 0.1).is_ok());
    }

    #[test]
    fn sub_matmul_matches_the_loops() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..k * 9).map(|i| (i % 5) as f32 - 2.0).collect();
        let mut dst: Vec<f32> = (0..m * 8).map(|i| i as f32).collect();
        let mut want = dst.clone();
        for i in 0..m {
            for j in 0..n {
                let s: f32 = (0..k).map(|t| a[i * k + t] * b[t * 9 + j]).sum();
                want[i * 8 + j] -= s;
            }
        }
        sub_matmul(&mut dst, 8, &a, k, &b, 9, m, n, k);
        assert_eq!(dst, want);
    }
}
