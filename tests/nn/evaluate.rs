//! Evaluation with many classes: per-class figures for every class, the confusion matrix only
//! while it stays small (it grows with the square of the classes).

use compressd::compress::nn::data::Split;
use compressd::compress::nn::evaluate::{evaluate, MAX_CONFUSION_CLASSES};
use compressd::compress::nn::Network;
use compressd::domain::{Architecture, EvaluateStep};
use rand::SeedableRng;

fn report(classes: usize) -> compressd::compress::nn::EvalReport {
    let arch = Architecture::parse_json(&format!(
        r#"{{"input_shape":[4],"layers":[{{"type":"linear","in_features":4,"out_features":{classes}}}]}}"#
    ))
    .unwrap();
    let net = Network::initialise(&arch, &mut rand::rngs::StdRng::seed_from_u64(1)).unwrap();
    let samples = 64;
    let split = Split {
        inputs: (0..samples * 4).map(|i| (i % 7) as f32 - 3.0).collect(),
        labels: (0..samples as u32)
            .map(|i| i * 7 % classes as u32)
            .collect(),
        sample_len: 4,
        sample_shape: vec![4],
    };
    let opts = EvaluateStep {
        batch_size: 16,
        runs: 1,
        ..Default::default()
    };
    evaluate(&net, &split, classes, &opts, "synthetic").unwrap()
}

#[test]
fn a_small_classifier_keeps_its_confusion_matrix() {
    let r = report(4);
    assert_eq!(r.confusion_matrix.len(), 4);
    let counted: u64 = r.confusion_matrix.iter().flatten().sum();
    assert_eq!(counted, 64);
    let diagonal: u64 = (0..4).map(|c| r.confusion_matrix[c][c]).sum();
    assert_eq!(diagonal as f64 / 64.0, r.accuracy);
}

#[test]
fn thousands_of_classes_give_per_class_figures_without_the_matrix() {
    let classes = 5000;
    assert!(classes > MAX_CONFUSION_CLASSES);
    let r = report(classes);
    assert!(r.confusion_matrix.is_empty());
    let support: u64 = r.per_class.iter().map(|c| c.support).sum();
    assert_eq!(support, 64, "every sample counted once");
    assert!(
        r.per_class.len() <= 2 * 64,
        "only classes that occur are listed"
    );
    assert!((0.0..=1.0).contains(&r.accuracy));
}
