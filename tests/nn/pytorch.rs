//! compressd against PyTorch itself: `tests/fixtures/pytorch_reference.safetensors` holds a
//! state dict saved by `safetensors.torch.save_file` for an `nn.Sequential` using every layer
//! type, an input batch, and PyTorch's eval-mode output after every layer
//! (scripts/pytorch_fixture.py).

use std::path::Path;

use compressd::compress::format::reader::read_dense;
use compressd::compress::nn::Network;
use compressd::compress::SafetensorsIndex;
use compressd::domain::Architecture;

use crate::helpers::{close, flat, input};

#[test]
fn a_pytorch_state_dict_loads_as_is_and_computes_what_pytorch_computed() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pytorch_reference.safetensors");
    let index = SafetensorsIndex::open(&path).unwrap();
    let arch_json: serde_json::Value =
        serde_json::from_str(&index.metadata["architecture"]).unwrap();
    let mut dense = read_dense(&path).unwrap();
    let (x_shape, x) = dense.remove("input").unwrap();
    let (_, expected) = dense.remove("expected_output").unwrap();
    let shape: Vec<usize> = x_shape.iter().map(|&d| d as usize).collect();
    let x = input(x, &shape);
    let layers = arch_json["layers"].as_array().unwrap().len();
    // Layer by layer, so that a mismatch names the layer.
    for k in 1..=layers {
        let mut partial = arch_json.clone();
        partial["layers"].as_array_mut().unwrap().truncate(k);
        let arch = Architecture::parse_json(&partial.to_string()).unwrap();
        let wanted: Vec<String> = arch.params().into_iter().map(|p| p.name).collect();
        let weights = dense
            .iter()
            .filter(|(n, _)| wanted.contains(n))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let dtypes = index
            .tensors
            .iter()
            .map(|t| (t.name.clone(), t.dtype))
            .collect();
        let net = Network::from_dense(arch, weights, dtypes, Default::default()).unwrap();
        let got = flat(&net.forward(&x).unwrap());
        let (_, want) = &dense[&format!("after.{}", k - 1)];
        let kind = &arch_json["layers"][k - 1]["type"];
        assert_eq!(got.len(), want.len(), "after layer {} ({kind})", k - 1);
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 2e-5,
                "after layer {} ({kind}), element {i}: got {g}, PyTorch {w}",
                k - 1
            );
        }
        if k == layers {
            close(&got, &expected, 2e-5);
        }
    }
}
