//! Transformers without a server: the forward passes and tokenizers against PyTorch
//! `transformers` and Python `tokenizers` (fixtures from scripts/transformer_fixture.py).

mod fidelity;
mod fixtures;
mod forward;
mod ggml_imatrix;
#[path = "../common/python_reference.rs"]
mod python_reference;
mod rescale;
mod tokenizers;
