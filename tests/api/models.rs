//! Building small safetensors files for tests.

use std::collections::HashMap;

use safetensors::tensor::{Dtype, TensorView};

pub struct T {
    pub name: &'static str,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

pub fn f32_tensor(name: &'static str, shape: &[usize], values: &[f32]) -> T {
    assert_eq!(shape.iter().product::<usize>(), values.len());
    T {
        name,
        dtype: Dtype::F32,
        shape: shape.to_vec(),
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

pub fn f16_tensor(name: &'static str, shape: &[usize], values: &[f32]) -> T {
    T {
        name,
        dtype: Dtype::F16,
        shape: shape.to_vec(),
        data: values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
    }
}

pub fn bf16_tensor(name: &'static str, shape: &[usize], values: &[f32]) -> T {
    T {
        name,
        dtype: Dtype::BF16,
        shape: shape.to_vec(),
        data: values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
    }
}

pub fn safetensors(tensors: &[T], metadata: Option<HashMap<String, String>>) -> Vec<u8> {
    let views: Vec<(&str, TensorView)> = tensors
        .iter()
        .map(|t| {
            (
                t.name,
                TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, &metadata).unwrap()
}

/// Deterministic pseudo-random values with distinct magnitudes.
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

/// A small MLP: 2 weights (pruned by default) and 2 biases (not).
pub fn mlp() -> Vec<u8> {
    safetensors(
        &[
            f32_tensor("fc1.weight", &[32, 64], &values(32 * 64, 1)),
            f32_tensor("fc1.bias", &[32], &values(32, 2)),
            f32_tensor("fc2.weight", &[10, 32], &values(10 * 32, 3)),
            f32_tensor("fc2.bias", &[10], &values(10, 4)),
        ],
        Some(HashMap::from([("format".to_owned(), "pt".to_owned())])),
    )
}

/// Reads every tensor of a safetensors file as f32 values.
pub fn read_f32(bytes: &[u8]) -> HashMap<String, (Dtype, Vec<usize>, Vec<f32>)> {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = view.data();
            let vals: Vec<f32> = match view.dtype() {
                Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
                Dtype::F16 => data
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes(b.try_into().unwrap()).to_f32())
                    .collect(),
                Dtype::BF16 => data
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes(b.try_into().unwrap()).to_f32())
                    .collect(),
                other => panic!("unexpected dtype {other:?}"),
            };
            (name, (view.dtype(), view.shape().to_vec(), vals))
        })
        .collect()
}

pub fn zeros(values: &[f32]) -> usize {
    values.iter().filter(|v| **v == 0.0).count()
}

/// A model of `n` tensors; each is one chunk, so a slowed job takes 3·n checkpoints.
pub fn layered(n: u64) -> Vec<u8> {
    let tensors: Vec<_> = (0..n)
        .map(|i| {
            f32_tensor(
                Box::leak(format!("l{i}.weight").into_boxed_str()),
                &[128, 128],
                &values(128 * 128, i),
            )
        })
        .collect();
    safetensors(&tensors, None)
}
