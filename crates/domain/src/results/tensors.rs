//! Counts per tensor and over sets of tensors (density ρ = non-zeros / parameters, sparsity
//! 1 − ρ), and the error a quantizer left.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TensorStats {
    pub name: String,
    pub dtype: &'static str,
    pub shape: Vec<u64>,
    /// Whether this step selected the tensor for pruning.
    pub pruned: bool,
    pub parameters: u64,
    pub nonzero_before: u64,
    pub nonzero_after: u64,
    /// ρ = non-zeros / parameters.
    pub density_before: f64,
    pub density_after: f64,
    /// 1 − ρ.
    pub sparsity_before: f64,
    pub sparsity_after: f64,
}

/// Sums over a set of tensors.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Totals {
    pub tensors: u64,
    pub parameters: u64,
    pub nonzero_before: u64,
    pub nonzero_after: u64,
    pub density_before: f64,
    pub density_after: f64,
    pub sparsity_before: f64,
    pub sparsity_after: f64,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TensorDensity {
    pub name: String,
    pub parameters: u64,
    pub nonzero: u64,
    pub density: f64,
    /// Before the step.
    pub density_before: f64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorStats {
    pub mse: f64,
    pub max_abs_error: f64,
    /// Signal-to-quantization-noise ratio, 10·log10(Σw² / Σ(w−ŵ)²); infinite when exact,
    /// which JSON writes as null.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    pub sqnr_db: f64,
    pub cosine_similarity: f64,
}

impl TensorStats {
    pub fn new(
        name: String,
        dtype: &'static str,
        shape: Vec<u64>,
        pruned: bool,
        nonzero_before: u64,
        nonzero_after: u64,
    ) -> Self {
        let n = shape.iter().product();
        TensorStats {
            name,
            dtype,
            shape,
            pruned,
            parameters: n,
            nonzero_before,
            nonzero_after,
            density_before: density(nonzero_before, n),
            density_after: density(nonzero_after, n),
            sparsity_before: sparsity(nonzero_before, n),
            sparsity_after: sparsity(nonzero_after, n),
        }
    }
}

impl Totals {
    pub fn of<'a>(stats: impl IntoIterator<Item = &'a TensorStats>) -> Self {
        let (mut tensors, mut n, mut before, mut after) = (0, 0, 0, 0);
        for s in stats {
            tensors += 1;
            n += s.parameters;
            before += s.nonzero_before;
            after += s.nonzero_after;
        }
        Totals {
            tensors,
            parameters: n,
            nonzero_before: before,
            nonzero_after: after,
            density_before: density(before, n),
            density_after: density(after, n),
            sparsity_before: sparsity(before, n),
            sparsity_after: sparsity(after, n),
        }
    }
}

/// ρ = non-zeros / parameters; an empty tensor counts as dense.
pub fn density(nonzero: u64, n: u64) -> f64 {
    if n == 0 {
        1.0
    } else {
        nonzero as f64 / n as f64
    }
}

/// 1 − ρ, computed from the zero count so that it is exact where ρ is.
pub fn sparsity(nonzero: u64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        (n - nonzero) as f64 / n as f64
    }
}
