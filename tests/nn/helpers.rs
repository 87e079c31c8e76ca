//! Small networks and datasets built in memory.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use compressd::compress::nn::Network;
use compressd::domain::Architecture;

pub type Weights<'a> = Vec<(&'a str, Vec<u64>, Vec<f32>)>;

pub fn net(arch: &str, weights: Weights) -> Network {
    let arch = Architecture::parse_json(arch).expect("valid architecture");
    let dense = weights
        .into_iter()
        .map(|(n, s, v)| (n.to_owned(), (s, v)))
        .collect();
    Network::from_dense(arch, dense, BTreeMap::new(), BTreeMap::new()).expect("weights fit")
}

pub fn input(values: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

pub fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

pub fn close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "lengths differ: {got:?} vs {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "element {i}: got {g}, want {w}\n{got:?}\n{want:?}"
        );
    }
}

/// A deterministic pseudo-random sequence in [-1, 1).
pub fn wave(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Writes a safetensors file of (name, dtype, shape, bytes) and returns its path.
pub fn write_safetensors(
    dir: &std::path::Path,
    file: &str,
    tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> std::path::PathBuf {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.to_string(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let path = dir.join(file);
    safetensors::serialize_to_file(views, &metadata, &path).unwrap();
    path
}

pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn blob_dataset(dir: &std::path::Path) -> std::path::PathBuf {
    let (xtr, ytr) = crate::blobs::blobs(512, 11);
    let (xte, yte) = crate::blobs::blobs(128, 12);
    write_safetensors(
        dir,
        "blobs.safetensors",
        &[
            (
                "train_inputs",
                safetensors::Dtype::F32,
                vec![512, 8],
                f32_bytes(&xtr),
            ),
            ("train_labels", safetensors::Dtype::U8, vec![512], ytr),
            (
                "test_inputs",
                safetensors::Dtype::F32,
                vec![128, 8],
                f32_bytes(&xte),
            ),
            ("test_labels", safetensors::Dtype::U8, vec![128], yte),
        ],
        None,
    )
}

pub const MLP: &str = r#"{"input_shape":[8],"layers":[
  {"type":"linear","in_features":8,"out_features":32},{"type":"relu"},
  {"type":"linear","in_features":32,"out_features":16},{"type":"relu"},
  {"type":"linear","in_features":16,"out_features":4}]}"#;
