//! AWQ's folding, without rounding: whatever scales a method picks for each pair, the model
//! the calibration driver hands back (rescaled norms, layers and biases) computes what the
//! original computes. Checked on every fixture family, with scales far from 1.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use compressd::compress::transformer::calibration::{calibrate, BlockResult, InputStats, Rewrite};
use compressd::compress::transformer::{decoder, encoder, TransformerConfig, WeightSource};
use compressd::compress::{CompressError, Control};

use crate::fixtures::{config, weights};

/// Scales between 1/4 and 4 for every pair; layers left as they are.
struct Wild {
    pairs: Vec<String>,
}

impl Rewrite for Wild {
    fn op(&self) -> &'static str {
        "quantize"
    }

    fn rescale(
        &mut self,
        before: &str,
        _: &[(String, Vec<f32>, [usize; 2])],
        input: &InputStats,
    ) -> Result<Option<Vec<f32>>, CompressError> {
        self.pairs.push(before.to_owned());
        let n = input.column_squares.len();
        Ok(Some(
            (0..n)
                .map(|j| 0.25 * 16f32.powf((j * 37 % n) as f32 / n as f32))
                .collect(),
        ))
    }

    fn layer(
        &mut self,
        _: &str,
        _: &mut [f32],
        _: [usize; 2],
        _: &InputStats,
    ) -> Result<(), CompressError> {
        Ok(())
    }
}

/// The fixture's tensors with the driver's results laid over them.
struct Rewritten {
    tensors: HashMap<String, Tensor>,
}

impl WeightSource for Rewritten {
    fn shapes(&self) -> Vec<(String, Vec<u64>)> {
        self.tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.dims().iter().map(|d| *d as u64).collect()))
            .collect()
    }

    fn tensor(&self, name: &str) -> Result<Tensor, CompressError> {
        self.tensors
            .get(name)
            .cloned()
            .ok_or_else(|| CompressError::InvalidModel(format!("no {name}")))
    }
}

fn rewritten(name: &str, sequences: &[Vec<u32>]) -> (Rewritten, Vec<String>) {
    let w = weights(name);
    let mut tensors: HashMap<String, Tensor> = w
        .shapes()
        .into_iter()
        .map(|(n, _)| {
            let t = w.tensor(&n).unwrap();
            (n, t)
        })
        .collect();
    let mut method = Wild { pairs: Vec::new() };
    let mut results = Vec::new();
    let mut done = |_: usize, r: BlockResult| {
        results.push(r);
        Ok(())
    };
    calibrate(
        &config(name),
        &w,
        sequences,
        &|_| true,
        &mut method,
        &mut done,
        &Control::default(),
    )
    .unwrap();
    for r in results {
        for (n, values) in r.tensors {
            let shape = tensors[&n].dims().to_vec();
            tensors.insert(n, Tensor::from_vec(values, shape, &Device::Cpu).unwrap());
        }
        for l in r.layers {
            let shape = tensors[&l.name].dims().to_vec();
            tensors.insert(
                l.name,
                Tensor::from_vec(l.weight, shape, &Device::Cpu).unwrap(),
            );
        }
    }
    (Rewritten { tensors }, method.pairs)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn decoders_compute_the_same_after_folding() {
    let ids: Vec<Vec<u32>> = vec![(0..24).map(|i| (i * 7 + 3) % 300).collect()];
    for name in ["llama", "qwen2"] {
        let TransformerConfig::Decoder(c) = config(name) else {
            panic!("{name} is a decoder")
        };
        let (model, pairs) = rewritten(name, &ids);
        // Grouped-query attention: v → o is not a pair; the norms and up → down are.
        assert_eq!(pairs.len(), 3 * c.layers, "{pairs:?}");
        assert!(pairs.iter().any(|p| p.ends_with("input_layernorm.weight")));
        assert!(pairs.iter().any(|p| p.ends_with("mlp.up_proj.weight")));
        let before = decoder::logits(&c, &weights(name), &ids).unwrap();
        let after = decoder::logits(&c, &model, &ids).unwrap();
        let diff = max_diff(&before, &after);
        assert!(diff < 1e-3, "{name}: logits moved by {diff}");
        // The scales did reach the file's tensors.
        let norm = "model.layers.0.input_layernorm.weight";
        assert!(
            max_diff(
                &weights(name).tensor(norm).unwrap(),
                &model.tensor(norm).unwrap()
            ) > 0.1
        );
    }
}

#[test]
fn an_encoder_computes_the_same_after_folding_value_into_output() {
    let TransformerConfig::Encoder(c) = config("bert") else {
        panic!("bert is an encoder")
    };
    let ids: Vec<Vec<u32>> = vec![(0..16).map(|i| (i * 11 + 5) % 300).collect()];
    let (model, pairs) = rewritten("bert", &ids);
    assert_eq!(pairs.len(), c.layers, "{pairs:?}");
    let mask = vec![vec![1u32; 16]];
    let before = encoder::hidden_states(&c, &weights("bert"), &ids, &mask).unwrap();
    let after = encoder::hidden_states(&c, &model, &ids, &mask).unwrap();
    let diff = max_diff(&before, &after);
    assert!(diff < 1e-3, "hidden states moved by {diff}");
}
