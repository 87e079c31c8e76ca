//! Training and pruning invariants users rely on.

use compressd::compress::nn::importance::{prune_nm, prune_to, score};
use compressd::compress::nn::structured::l1_filter;
use compressd::compress::nn::train::{masks_of, train, TrainContext};
use compressd::compress::nn::{load_dataset, Dataset, Network};
use compressd::compress::Control;
use compressd::domain::{
    Architecture, Criterion, Scope, Sparsity, TensorSelection, TrainStep, TrainWire,
};
use rand::SeedableRng;
use serde_json::json;

use crate::helpers::{blob_dataset, close, flat, input, net, wave, MLP};

fn recipe(epochs: usize, seed: u64) -> TrainStep {
    let w: TrainWire = serde_json::from_value(
        json!({"optimizer":"sgd","lr":0.05,"epochs":epochs,"batch_size":32,"seed":seed}),
    )
    .unwrap();
    TrainStep::try_from(w).unwrap()
}

fn fresh(seed: u64) -> Network {
    let arch = Architecture::parse_json(MLP).unwrap();
    Network::initialise(&arch, &mut rand::rngs::StdRng::seed_from_u64(seed)).unwrap()
}

/// The shared blobs, loaded for the test MLP.
fn blob_data() -> Dataset {
    let dir = tempfile::tempdir().unwrap();
    let arch = Architecture::parse_json(MLP).unwrap();
    load_dataset(&blob_dataset(dir.path()), &arch).unwrap()
}

fn quiet(control: &Control) -> TrainContext<'_> {
    TrainContext::on_labels(control, Default::default())
}

#[test]
fn training_learns_and_is_deterministic_for_a_seed() {
    let data = blob_data();
    let control = Control::default();
    let ctx = quiet(&control);
    let (a, b) = (fresh(7), fresh(7));
    let ra = train(&a, &data, &recipe(5, 3), None, None, &ctx).unwrap();
    train(&b, &data, &recipe(5, 3), None, None, &ctx).unwrap();
    assert!(
        ra.epochs.last().unwrap().eval_accuracy > 0.9,
        "{:?}",
        ra.epochs
    );
    for name in a.weight_names() {
        assert_eq!(
            a.values(&name).unwrap(),
            b.values(&name).unwrap(),
            "{name} differs between runs"
        );
    }
    for opt in ["adam", "adamw"] {
        let w: TrainWire = serde_json::from_value(
            json!({"optimizer":opt,"lr":0.01,"epochs":5,"batch_size":32,"weight_decay":0.01}),
        )
        .unwrap();
        let n = fresh(1);
        let r = train(
            &n,
            &data,
            &TrainStep::try_from(w).unwrap(),
            None,
            None,
            &ctx,
        )
        .unwrap();
        assert!(
            r.epochs.last().unwrap().eval_accuracy > 0.9,
            "{opt}: {:?}",
            r.epochs
        );
    }
}

#[test]
fn fine_tuning_keeps_every_pruned_weight_exactly_zero() {
    let data = blob_data();
    let control = Control::default();
    let ctx = quiet(&control);
    let n = fresh(2);
    train(&n, &data, &recipe(2, 1), None, None, &ctx).unwrap();
    let names = n.weight_names();
    let scores = score(&n, Some(&data), &names, Criterion::Taylor, 4, None).unwrap();
    let masks = prune_to(&n, &scores, 0.8, Scope::Global).unwrap();
    let zeros_before: Vec<Vec<bool>> = names
        .iter()
        .map(|m| n.values(m).unwrap().iter().map(|v| *v == 0.0).collect())
        .collect();
    let total: usize = zeros_before.iter().map(|z| z.len()).sum();
    let pruned: usize = zeros_before
        .iter()
        .map(|z| z.iter().filter(|x| **x).count())
        .sum();
    assert_eq!(pruned, (0.8 * total as f64).round() as usize);
    let before: Vec<Vec<f32>> = names.iter().map(|m| n.values(m).unwrap()).collect();
    train(&n, &data, &recipe(3, 2), Some(&masks), None, &ctx).unwrap();
    for (i, name) in names.iter().enumerate() {
        let after = n.values(name).unwrap();
        for (j, z) in zeros_before[i].iter().enumerate() {
            if *z {
                assert_eq!(
                    after[j].to_bits() & 0x7fff_ffff,
                    0,
                    "{name}[{j}] came back to life"
                );
            }
        }
        assert_ne!(
            after, before[i],
            "{name}: unpruned weights should still train"
        );
    }
    let held = masks_of(&n, &names).unwrap();
    for name in &names {
        assert_eq!(
            flat(&held[name]),
            flat(&masks[name]),
            "{name}: the pattern changed"
        );
    }
}

#[test]
fn n_of_m_holds_in_every_group() {
    let n = fresh(4);
    let names = n.weight_names();
    let scores = score(&n, None, &names, Criterion::Magnitude, 1, None).unwrap();
    let (_, skipped) = prune_nm(&n, &scores, 2, 4).unwrap();
    assert!(skipped.is_empty(), "{skipped:?}");
    for name in &names {
        let w = n.values(name).unwrap();
        for (g, group) in w.chunks(4).enumerate() {
            let kept = group.iter().filter(|v| **v != 0.0).count();
            assert_eq!(kept, 2, "{name} group {g}: {group:?}");
        }
    }
}

#[test]
fn removing_all_zero_filters_keeps_the_output_identical() {
    let arch = r#"{"input_shape":[2,6,6],"layers":[
        {"type":"conv2d","in_channels":2,"out_channels":4,"kernel_size":3,"padding":1},
        {"type":"batchnorm2d","num_features":4},{"type":"relu"},{"type":"maxpool2d","kernel_size":2},
        {"type":"flatten"},{"type":"linear","in_features":36,"out_features":5},{"type":"relu"},
        {"type":"linear","in_features":5,"out_features":3}]}"#;
    let mut conv = wave(4 * 2 * 9, 5);
    let mut conv_bias = wave(4, 6);
    // Filters 1 and 3 are all zero, and so are their biases and batch-norm shifts.
    for f in [1, 3] {
        conv[f * 18..(f + 1) * 18].iter_mut().for_each(|v| *v = 0.0);
        conv_bias[f] = 0.0;
    }
    let mut fc1 = wave(5 * 36, 7);
    let mut fc1_bias = wave(5, 8);
    // Neurons 2 and 4 of the hidden linear layer are dead too.
    for r in [2, 4] {
        fc1[r * 36..(r + 1) * 36].iter_mut().for_each(|v| *v = 0.0);
        fc1_bias[r] = 0.0;
    }
    let mut n = net(
        arch,
        vec![
            ("0.weight", vec![4, 2, 3, 3], conv),
            ("0.bias", vec![4], conv_bias),
            ("1.weight", vec![4], vec![1.0, 0.5, 2.0, 1.5]),
            ("1.bias", vec![4], vec![0.1, 0.0, -0.2, 0.0]),
            ("1.running_mean", vec![4], vec![0.0, 0.0, 0.1, 0.0]),
            ("1.running_var", vec![4], vec![1.0, 2.0, 0.5, 1.0]),
            ("5.weight", vec![5, 36], fc1),
            ("5.bias", vec![5], fc1_bias),
            ("7.weight", vec![3, 5], wave(15, 9)),
            ("7.bias", vec![3], wave(3, 10)),
        ],
    );
    let x = input(wave(3 * 2 * 36, 11), &[3, 2, 6, 6]);
    let before = flat(&n.forward(&x).unwrap());
    let report = l1_filter(
        &mut n,
        Sparsity::parse(0.5).unwrap(),
        &TensorSelection::default(),
    )
    .unwrap();
    assert_eq!(report.layers[0].units_after, 2);
    assert_eq!(n.tensor("0.weight").dims(), &[2, 2, 3, 3]);
    assert_eq!(n.tensor("5.weight").dims(), &[3, 18]);
    assert_eq!(n.tensor("7.weight").dims(), &[3, 3]);
    assert!(report.parameters_after < report.parameters_before);
    close(&flat(&n.forward(&x).unwrap()), &before, 1e-5);
    // The last layer's outputs are the classes: never removed.
    assert_eq!(report.kept_whole, vec!["7".to_string()]);
}
