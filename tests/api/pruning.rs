//! What pruning does to the numbers, checked through the API.

use serde_json::{json, Value};

use crate::helpers::{Backend, TestApp};
use crate::models::{bf16_tensor, f16_tensor, f32_tensor, read_f32, safetensors, values, zeros};

async fn prune(app: &TestApp, bytes: Vec<u8>, step: Value) -> (Value, Vec<u8>) {
    let id = app.upload_ok(bytes, "m").await;
    let job = app.submit(&id, json!([step])).await;
    app.run_jobs().await;
    let job = app.job(&job).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    let file = app.model_artifact(&job).await;
    (job, file)
}

/// |w| < τ ⇒ w = 0, and nothing else changes; |w| = τ survives.
async fn threshold_rule_on_a_known_matrix(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let w = [
        0.5, -0.05, 0.3, 0.1, //
        -0.2, 0.09, -0.1, 0.8, //
        0.0, 0.15, -0.7, -0.099,
    ];
    let bytes = safetensors(&[f32_tensor("w", &[3, 4], &w)], None);
    let (job, file) = prune(
        &app,
        bytes,
        json!({"op":"prune","method":"magnitude","threshold":0.1,"include":["w"]}),
    )
    .await;
    let out = &read_f32(&file)["w"].2;
    let expected = [
        0.5, 0.0, 0.3, 0.1, //
        -0.2, 0.0, -0.1, 0.8, //
        0.0, 0.15, -0.7, 0.0,
    ];
    assert_eq!(out.as_slice(), expected.as_slice());
    let t = &job["metrics"]["steps"][0]["tensors"][0];
    assert_eq!(
        (t["nonzero_before"].as_u64(), t["nonzero_after"].as_u64()),
        (Some(11), Some(8))
    );
    assert_eq!(t["sparsity_after"].as_f64().unwrap(), 4.0 / 12.0);
    assert_eq!(job["metrics"]["steps"][0]["threshold"], 0.1);
    app.finish().await;
}

/// Global scope: one threshold across tensors, hitting the target over the selection;
/// per-layer scope: every tensor hits it on its own.
async fn sparsity_targets_are_met(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    // Two tensors on different scales: a global threshold prunes the small one much harder.
    let small: Vec<f32> = values(1000, 7).iter().map(|v| v * 0.01).collect();
    let large = values(3000, 8);
    let bytes = safetensors(
        &[
            f32_tensor("a.weight", &[10, 100], &small),
            f32_tensor("b.weight", &[30, 100], &large),
        ],
        None,
    );

    for target in [0.0, 0.25, 0.5, 0.9, 0.999, 1.0] {
        let (job, file) = prune(
            &app,
            bytes.clone(),
            json!({"op":"prune","method":"magnitude","sparsity":target,"scope":"global"}),
        )
        .await;
        let t = read_f32(&file);
        let total_zeros = zeros(&t["a.weight"].2) + zeros(&t["b.weight"].2);
        assert_eq!(
            total_zeros,
            (target * 4000.0_f64).round() as usize,
            "global {target}"
        );
        if target == 0.5 {
            assert_eq!(
                zeros(&t["a.weight"].2),
                1000,
                "the small-scale tensor goes first"
            );
        }
        let cut = job["metrics"]["steps"][0]["cut_magnitude"].as_f64();
        assert!(target == 0.0 || cut.is_some());

        let (_, file) = prune(
            &app,
            bytes.clone(),
            json!({"op":"prune","method":"magnitude","sparsity":target,"scope":"layer"}),
        )
        .await;
        let t = read_f32(&file);
        assert_eq!(
            zeros(&t["a.weight"].2),
            (target * 1000.0_f64).round() as usize,
            "layer {target}"
        );
        assert_eq!(
            zeros(&t["b.weight"].2),
            (target * 3000.0_f64).round() as usize,
            "layer {target}"
        );
    }
    app.finish().await;
}

/// Ties at the threshold: exactly the target count goes, no more, no less.
async fn ties_do_not_overshoot(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let w: Vec<f32> = (0..100)
        .map(|i| if i % 2 == 0 { 0.5 } else { -0.5 })
        .collect();
    let bytes = safetensors(&[f32_tensor("w", &[10, 10], &w)], None);
    let (_, file) = prune(
        &app,
        bytes,
        json!({"op":"prune","method":"magnitude","sparsity":0.3,"scope":"layer"}),
    )
    .await;
    assert_eq!(zeros(&read_f32(&file)["w"].2), 30);
    app.finish().await;
}

/// F16 and BF16 are pruned in their own dtype; the file keeps them.
async fn half_precision_dtypes(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let bytes = safetensors(
        &[
            f16_tensor("h.weight", &[20, 50], &values(1000, 11)),
            bf16_tensor("b.weight", &[20, 50], &values(1000, 12)),
            f32_tensor("norm.weight", &[50], &values(50, 13)),
        ],
        None,
    );
    let (job, file) = prune(
        &app,
        bytes.clone(),
        json!({"op":"prune","method":"magnitude","sparsity":0.6,"scope":"layer"}),
    )
    .await;
    let t = read_f32(&file);
    let original = read_f32(&bytes);
    assert_eq!(t["h.weight"].0, safetensors::Dtype::F16);
    assert_eq!(t["b.weight"].0, safetensors::Dtype::BF16);
    for name in ["h.weight", "b.weight"] {
        assert_eq!(zeros(&t[name].2), 600, "{name}");
        let smallest_kept = t[name]
            .2
            .iter()
            .filter(|v| **v != 0.0)
            .map(|v| v.abs())
            .fold(f32::MAX, f32::min);
        for (new, old) in t[name].2.iter().zip(&original[name].2) {
            assert!(*new == *old || (*new == 0.0 && old.abs() <= smallest_kept));
        }
    }
    assert_eq!(
        t["norm.weight"].2, original["norm.weight"].2,
        "1-D tensors are not weights"
    );
    assert_eq!(job["metrics"]["steps"][0]["selected"]["tensors"], 2);
    app.finish().await;
}

/// Two prune steps compose; `include`/`exclude` choose the tensors.
async fn steps_compose_with_selection(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let bytes = safetensors(
        &[
            f32_tensor("enc.weight", &[10, 100], &values(1000, 21)),
            f32_tensor("head.weight", &[10, 100], &values(1000, 22)),
        ],
        None,
    );
    let id = app.upload_ok(bytes, "m").await;
    let job = app
        .submit(
            &id,
            json!([
                {"op":"prune","method":"magnitude","sparsity":0.5,"scope":"layer","exclude":["head.*"]},
                {"op":"prune","method":"magnitude","sparsity":0.8,"scope":"layer","include":["enc.*"]}
            ]),
        )
        .await;
    app.run_jobs().await;
    let job = app.job(&job).await;
    assert_eq!(job["status"], "succeeded");
    let t = read_f32(&app.model_artifact(&job).await);
    assert_eq!(zeros(&t["enc.weight"].2), 800);
    assert_eq!(zeros(&t["head.weight"].2), 0);
    assert_eq!(job["metrics"]["steps"].as_array().unwrap().len(), 2);
    assert_eq!(job["metrics"]["summary"]["nonzero_after"], 1200);
    app.finish().await;
}

/// NaN weights fail the job at once, naming the tensor; no retry, no artifact.
async fn nan_weights_fail_clearly(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let mut w = values(100, 5);
    w[17] = f32::NAN;
    let bytes = safetensors(&[f32_tensor("bad.weight", &[10, 10], &w)], None);
    let id = app.upload_ok(bytes, "m").await;
    for step in [
        json!({"op":"prune","method":"magnitude","sparsity":0.5,"scope":"global"}),
        json!({"op":"prune","method":"magnitude","threshold":0.1}),
    ] {
        let job = app.submit(&id, json!([step])).await;
        app.run_jobs().await;
        let job = app.job(&job).await;
        assert_eq!(job["status"], "failed");
        assert_eq!(job["attempts"], 1, "bad input is not retried");
        assert_eq!(job["error"]["type"], "urn:compressd:problem:invalid-model");
        assert!(
            job["error"]["detail"]
                .as_str()
                .unwrap()
                .contains("'bad.weight'"),
            "{job:#}"
        );
        assert_eq!(job["artifacts"], json!([]));
    }
    app.finish().await;
}

crate::on_each_backend!(
    threshold_rule_on_a_known_matrix,
    sparsity_targets_are_met,
    ties_do_not_overshoot,
    half_precision_dtypes,
    steps_compose_with_selection,
    nan_weights_fail_clearly,
);
