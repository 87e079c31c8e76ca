//! The tiny models and references in tests/fixtures/transformers.

use std::collections::HashMap;
use std::path::PathBuf;

use compressd::compress::transformer::{ModelConfig, SafetensorsWeights, TransformerConfig};

pub fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/transformers")
        .join(name)
}

pub fn config(name: &str) -> TransformerConfig {
    let text = std::fs::read_to_string(dir(name).join("config.json")).unwrap();
    ModelConfig::parse(&serde_json::from_str(&text).unwrap())
        .unwrap()
        .runs
        .expect("a family compressd runs")
}

pub fn weights(name: &str) -> SafetensorsWeights {
    SafetensorsWeights::open(&dir(name).join("model.safetensors")).unwrap()
}

/// A reference tensor: its shape and values (integers widened to f64).
pub struct Reference {
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

pub fn reference(name: &str) -> HashMap<String, Reference> {
    let bytes = std::fs::read(dir(name).join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, view)| {
            let data = view.data();
            let values = match view.dtype() {
                safetensors::Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
                    .collect(),
                safetensors::Dtype::I64 => data
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64)
                    .collect(),
                other => panic!("{other:?}"),
            };
            (
                n,
                Reference {
                    shape: view.shape().to_vec(),
                    values,
                },
            )
        })
        .collect()
}

/// Rows of token ids from a [batch, positions] reference tensor.
pub fn rows(r: &Reference) -> Vec<Vec<u32>> {
    r.values
        .chunks(r.shape[1])
        .map(|row| row.iter().map(|&v| v as u32).collect())
        .collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).abs())
        .fold(0.0, f64::max)
}
