//! The Hessian methods (the Optimal Brain Surgeon family): SparseGPT prunes and GPTQ rounds a
//! layer's weights column by column, each decision's error compensated by the columns not
//! yet decided, through the inverse of the layer's input Hessian H = Σ xᵀx collected on
//! calibration text. They share the Hessian's preparation and the column sweep.

pub mod gptq;
pub mod hessian;
pub mod linalg;
pub mod sparsegpt;
pub mod sweep;

#[cfg(test)]
mod test_inputs;
