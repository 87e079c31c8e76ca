//! Datasets and weights are checked on arrival, with errors that say what to fix.

use std::collections::HashMap;

use compressd::compress::nn::{check_weights, inspect_dataset, load_dataset};
use compressd::compress::SafetensorsIndex;
use compressd::domain::Architecture;
use safetensors::Dtype;

use crate::helpers::{f32_bytes, write_safetensors, MLP};

fn images(n: usize) -> Vec<u8> {
    (0..n * 4).map(|i| (i * 37 % 256) as u8).collect()
}

#[test]
fn an_mnist_shaped_u8_dataset_is_summarised_and_scaled_for_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_safetensors(
        dir.path(),
        "d.safetensors",
        &[
            ("train_images", Dtype::U8, vec![6, 2, 2], images(6)),
            ("train_labels", Dtype::U8, vec![6], vec![0, 1, 2, 0, 1, 2]),
            ("test_images", Dtype::U8, vec![3, 2, 2], images(3)),
            ("test_labels", Dtype::U8, vec![3], vec![2, 1, 0]),
        ],
        None,
    );
    let s = inspect_dataset(&path).unwrap();
    assert_eq!((s.num_classes, s.train.samples, s.test.samples), (3, 6, 3));
    assert_eq!(s.sample_shape, vec![2, 2]);
    assert_eq!(s.train.class_counts, vec![2, 2, 2]);
    let arch = Architecture::parse_json(
        r#"{"input_shape":[4],"input_scale":0.00392156862745098,"layers":[{"type":"linear","in_features":4,"out_features":3}]}"#,
    )
    .unwrap();
    let data = load_dataset(&path, &arch).unwrap();
    assert!((data.train.inputs[1] - 37.0 / 255.0).abs() < 1e-6);
    let wide = Architecture::parse_json(
        r#"{"input_shape":[5],"layers":[{"type":"linear","in_features":5,"out_features":3}]}"#,
    )
    .unwrap();
    let err = load_dataset(&path, &wide).err().unwrap().to_string();
    assert!(err.contains("input_shape is [5]"), "{err}");
}

/// Tensors, metadata, and a phrase the error must contain.
type Case<'a> = (
    Vec<(&'a str, Dtype, Vec<usize>, Vec<u8>)>,
    Option<HashMap<String, String>>,
    &'a str,
);

#[test]
fn bad_datasets_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let meta = |k: &str, v: &str| Some(HashMap::from([(k.to_owned(), v.to_owned())]));
    let cases: Vec<Case> = vec![
        (
            vec![
                ("train_images", Dtype::U8, vec![3, 2, 2], images(3)),
                ("train_labels", Dtype::U8, vec![2], vec![0, 1]),
                ("test_images", Dtype::U8, vec![1, 2, 2], images(1)),
                ("test_labels", Dtype::U8, vec![1], vec![0]),
            ],
            None,
            "the counts must match",
        ),
        (
            vec![
                ("train_images", Dtype::U8, vec![2, 2, 2], images(2)),
                ("train_labels", Dtype::U8, vec![2], vec![0, 10]),
                ("test_images", Dtype::U8, vec![1, 2, 2], images(1)),
                ("test_labels", Dtype::U8, vec![1], vec![0]),
            ],
            meta("num_classes", "10"),
            "'train_labels'[1] is 10",
        ),
        (
            vec![
                ("train_images", Dtype::U8, vec![2, 2, 2], images(2)),
                (
                    "train_labels",
                    Dtype::I32,
                    vec![2],
                    [0i32, -1].iter().flat_map(|v| v.to_le_bytes()).collect(),
                ),
                ("test_images", Dtype::U8, vec![1, 2, 2], images(1)),
                ("test_labels", Dtype::U8, vec![1], vec![0]),
            ],
            None,
            "is -1",
        ),
        (
            vec![
                (
                    "train_images",
                    Dtype::F32,
                    vec![1, 2],
                    f32_bytes(&[1.0, f32::NAN]),
                ),
                ("train_labels", Dtype::U8, vec![1], vec![0]),
                (
                    "test_images",
                    Dtype::F32,
                    vec![1, 2],
                    f32_bytes(&[1.0, 2.0]),
                ),
                ("test_labels", Dtype::U8, vec![1], vec![0]),
            ],
            None,
            "NaN",
        ),
        (
            vec![
                ("train_images", Dtype::U8, vec![2, 2, 2], images(2)),
                ("train_labels", Dtype::U8, vec![2], vec![0, 1]),
            ],
            None,
            "needs tensors test|eval_images",
        ),
        (
            vec![
                ("train_images", Dtype::U8, vec![2, 2, 2], images(2)),
                ("train_labels", Dtype::F32, vec![2], f32_bytes(&[0.0, 1.0])),
                ("test_images", Dtype::U8, vec![1, 2, 2], images(1)),
                ("test_labels", Dtype::U8, vec![1], vec![0]),
            ],
            None,
            "labels must be integers",
        ),
    ];
    for (i, (tensors, metadata, needle)) in cases.into_iter().enumerate() {
        let path = write_safetensors(
            dir.path(),
            &format!("bad{i}.safetensors"),
            &tensors,
            metadata,
        );
        let err = inspect_dataset(&path).err().unwrap().to_string();
        assert!(err.contains(needle), "case {i}: {err}");
    }
}

#[test]
fn weights_that_do_not_fit_the_architecture_name_the_first_mismatch() {
    let arch = Architecture::parse_json(MLP).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let z = |n: usize| f32_bytes(&vec![0.0; n]);
    let full = vec![
        ("0.weight", Dtype::F32, vec![32, 8], z(256)),
        ("0.bias", Dtype::F32, vec![32], z(32)),
        ("2.weight", Dtype::F32, vec![16, 32], z(512)),
        ("2.bias", Dtype::F32, vec![16], z(16)),
        ("4.weight", Dtype::F32, vec![4, 16], z(64)),
        ("4.bias", Dtype::F32, vec![4], z(4)),
    ];
    let check = |tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]| {
        let path = write_safetensors(dir.path(), "w.safetensors", tensors, None);
        let index = SafetensorsIndex::open(&path).unwrap();
        check_weights(
            &arch,
            index
                .tensors
                .iter()
                .map(|t| (t.name.as_str(), t.dtype, t.shape.as_slice())),
        )
    };
    check(&full).unwrap();
    let mut wrong = full.clone();
    wrong[2] = ("2.weight", Dtype::F32, vec![32, 16], z(512));
    let err = check(&wrong).unwrap_err();
    assert!(
        err.contains("'2.weight' has shape [32, 16] but the architecture expects [16, 32]"),
        "{err}"
    );
    let err = check(&full[1..]).unwrap_err();
    assert!(err.contains("missing tensor '0.weight'"), "{err}");
    let mut extra = full.clone();
    extra.push(("head.weight", Dtype::F32, vec![1, 1], z(1)));
    assert!(check(&extra)
        .unwrap_err()
        .contains("unexpected tensor 'head.weight'"));
}
