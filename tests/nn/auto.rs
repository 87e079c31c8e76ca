//! `auto` under deliberately tiny budgets: it stops when the budget runs out, and whatever it
//! returns keeps to the accuracy budget on the evaluation split, re-measured from the file.

use compressd::compress::format::reader::read_dense;
use compressd::compress::nn::auto::{auto_step, AutoInput};
use compressd::compress::nn::data::Split;
use compressd::compress::nn::train::{train, TrainContext};
use compressd::compress::nn::{load_dataset, Network};
use compressd::compress::Control;
use compressd::domain::{Architecture, AutoStep, TrainStep};
use proptest::prelude::*;
use rand::SeedableRng;
use serde_json::json;

use crate::helpers::{blob_dataset, MLP};

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn auto_keeps_to_its_trial_budget_and_never_breaks_the_accuracy_budget(
        trials in 1usize..5, drop_points in 0u32..4, seed in 0u64..1000, distill in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let arch = Architecture::parse_json(MLP).unwrap();
        let data = load_dataset(&blob_dataset(dir.path()), &arch).unwrap();
        let control = Control::default();
        let net = Network::initialise(&arch, &mut rand::rngs::StdRng::seed_from_u64(seed)).unwrap();
        let recipe: TrainStep = serde_json::from_value(json!({"lr": 0.05, "epochs": 3, "batch_size": 32, "seed": seed})).unwrap();
        let ctx = TrainContext::on_labels(&control, Default::default());
        train(&net, &data, &recipe, None, None, &ctx).unwrap();
        let input = dir.path().join("in.safetensors");
        net.save(&input).unwrap();
        let limit = drop_points as f64 / 100.0;
        let step: AutoStep = serde_json::from_value(json!({
            "max_accuracy_drop": limit, "budget": {"trials": trials, "seconds": 60},
            "finetune": {"lr": 0.02, "epochs": 1, "batch_size": 32}, "distill": distill
        })).unwrap();
        let output = dir.path().join("out");
        let (r, student) = auto_step(&AutoInput {
            arch: &arch, data: &data, data_label: "blobs", input: &input, output: &output,
            workdir: dir.path(), step: &step, control: &control,
        }).unwrap();
        prop_assert!(r.trials.len() <= trials && r.trials_used == r.trials.len());
        prop_assert_eq!(student.is_some(), r.winner.as_ref().is_some_and(|w| r.trials[w.trial].student));
        let back = Network::from_dense(student.unwrap_or(arch.clone()), read_dense(&output).unwrap(), Default::default(), Default::default()).unwrap();
        // Verified on the held-out half of the evaluation split, which the search never saw.
        let holdout = second_half(&data.test);
        prop_assert_eq!(r.holdout_samples, holdout.len());
        prop_assert_eq!(r.validation_samples + r.holdout_samples, data.test.len());
        let accuracy = compressd::compress::nn::evaluate::quick_accuracy(&back, &holdout, 512).unwrap();
        prop_assert!(accuracy >= r.baseline_test_accuracy - limit - 1e-12, "{accuracy} vs {}", r.baseline_test_accuracy);
        match &r.winner {
            Some(w) => prop_assert_eq!(w.test_accuracy, accuracy),
            None => prop_assert_eq!(std::fs::read(&output).unwrap(), std::fs::read(&input).unwrap()),
        }
        // Every trial that did not win says why, and the winner is on the frontier.
        for (i, t) in r.trials.iter().enumerate() {
            let won = r.winner.as_ref().is_some_and(|w| w.trial == i);
            prop_assert_eq!(t.rejected.is_none(), won, "trial {}: {:?}", i, t);
            if won {
                prop_assert!(t.on_frontier, "the winner is on the frontier: {:?}", t);
            }
        }
    }
}

fn second_half(split: &Split) -> Split {
    let (n, l) = (split.len(), split.sample_len);
    Split {
        inputs: split.inputs[n / 2 * l..].to_vec(),
        labels: split.labels[n / 2..].to_vec(),
        sample_len: l,
        sample_shape: split.sample_shape.clone(),
    }
}
