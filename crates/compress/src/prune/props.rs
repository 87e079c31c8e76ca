//! Property tests: pruning meets its target to the weight and removes only the smallest.

use std::collections::HashMap;

use proptest::prelude::*;
use safetensors::tensor::{Dtype as StDtype, TensorView};
use serde_json::json;

use crate::control::Control;
use crate::prune::prune_file;
use domain::{Pipeline, Step};

#[derive(Debug, Clone, Copy)]
enum Kind {
    F32,
    F16,
    BF16,
}

fn encode(kind: Kind, values: &[f32]) -> (StDtype, Vec<u8>) {
    match kind {
        Kind::F32 => (
            StDtype::F32,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        Kind::F16 => (
            StDtype::F16,
            values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
        ),
        Kind::BF16 => (
            StDtype::BF16,
            values
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
        ),
    }
}

fn decode(dtype: StDtype, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        StDtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        StDtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes(b.try_into().unwrap()).to_f32())
            .collect(),
        _ => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes(b.try_into().unwrap()).to_f32())
            .collect(),
    }
}

/// Prunes `tensors` with `step` and returns (before, after) values per tensor, both as the
/// file stores them (so F16/BF16 rounding is already applied to `before`).
fn run(tensors: &[(Kind, Vec<f32>)], step: serde_json::Value) -> Vec<(Vec<f32>, Vec<f32>)> {
    let dir = tempfile::tempdir().unwrap();
    let encoded: Vec<(String, StDtype, Vec<u8>, usize)> = tensors
        .iter()
        .enumerate()
        .map(|(i, (k, v))| {
            let (d, b) = encode(*k, v);
            (format!("t{i}.weight"), d, b, v.len())
        })
        .collect();
    let views: Vec<(&str, TensorView)> = encoded
        .iter()
        .map(|(n, d, b, len)| (n.as_str(), TensorView::new(*d, vec![1, *len], b).unwrap()))
        .collect();
    let input = dir.path().join("in.safetensors");
    std::fs::write(
        &input,
        safetensors::serialize(views, &None::<HashMap<String, String>>).unwrap(),
    )
    .unwrap();
    let output = dir.path().join("out.safetensors");
    let pipeline = Pipeline::parse(&[step]).unwrap();
    let Step::Prune(p) = &pipeline.steps()[0] else {
        unreachable!()
    };
    prune_file(&input, &output, p, &Control::default()).unwrap();
    let out_bytes = std::fs::read(&output).unwrap();
    let out = safetensors::SafeTensors::deserialize(&out_bytes).unwrap();
    encoded
        .iter()
        .map(|(n, d, b, _)| (decode(*d, b), decode(*d, out.tensor(n).unwrap().data())))
        .collect()
}

fn zeros(v: &[f32]) -> usize {
    v.iter().filter(|x| **x == 0.0).count()
}

/// Survivors are untouched, and nothing pruned is larger than anything kept.
fn removes_only_the_smallest(pairs: &[(Vec<f32>, Vec<f32>)]) -> Result<(), TestCaseError> {
    let mut max_removed = 0.0f32;
    let mut min_kept = f32::INFINITY;
    for (before, after) in pairs {
        for (b, a) in before.iter().zip(after) {
            prop_assert!(*a == 0.0 || a == b, "a survivor changed: {b} -> {a}");
            if *a == 0.0 {
                max_removed = max_removed.max(b.abs());
            } else {
                min_kept = min_kept.min(b.abs());
            }
        }
    }
    prop_assert!(
        max_removed <= min_kept,
        "removed {max_removed} but kept {min_kept}"
    );
    Ok(())
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::F32), Just(Kind::F16), Just(Kind::BF16)]
}

/// Values from a small palette (many ties, some zeros) or a wide range.
fn values() -> impl Strategy<Value = Vec<f32>> {
    prop_oneof![
        prop::collection::vec(
            prop::sample::select(vec![0.0f32, 0.25, -0.25, 0.5, -1.0, 2.0]),
            1..300
        ),
        prop::collection::vec(-10.0f32..10.0, 1..300),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn layer_sparsity_is_exact(tensors in prop::collection::vec((kind(), values()), 1..4), s in 0.0f64..=1.0) {
        let pairs = run(&tensors, json!({"op":"prune","method":"magnitude","sparsity":s,"scope":"layer"}));
        for (before, after) in &pairs {
            let k = (s * before.len() as f64).round() as usize;
            prop_assert_eq!(zeros(after), k.max(zeros(before)));
            removes_only_the_smallest(&[(before.clone(), after.clone())])?;
        }
    }

    #[test]
    fn global_sparsity_is_exact(tensors in prop::collection::vec((kind(), values()), 1..4), s in 0.0f64..=1.0) {
        let pairs = run(&tensors, json!({"op":"prune","method":"magnitude","sparsity":s,"scope":"global"}));
        let n: usize = pairs.iter().map(|(b, _)| b.len()).sum();
        let before: usize = pairs.iter().map(|(b, _)| zeros(b)).sum();
        let after: usize = pairs.iter().map(|(_, a)| zeros(a)).sum();
        prop_assert_eq!(after, ((s * n as f64).round() as usize).max(before));
        removes_only_the_smallest(&pairs)?;
    }

    #[test]
    fn threshold_zeroes_exactly_what_is_below(tensors in prop::collection::vec((kind(), values()), 1..3), tau in 0.0f64..3.0) {
        let pairs = run(&tensors, json!({"op":"prune","method":"magnitude","threshold":tau}));
        for (before, after) in &pairs {
            for (b, a) in before.iter().zip(after) {
                let expected = if (b.abs() as f64) < tau { 0.0 } else { *b };
                prop_assert_eq!(*a, expected);
            }
        }
    }
}
