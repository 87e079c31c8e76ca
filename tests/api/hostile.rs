//! Models built to make the service allocate what their bytes do not hold. The job ends, the
//! server keeps answering, and the next job runs.

use safetensors::tensor::Dtype;
use serde_json::json;

use crate::helpers::{Backend, TestApp};
use crate::models::{f32_tensor, safetensors, values, T};
use crate::training::{dataset_bytes, upload_architecture, upload_dataset, MLP};

fn raw(name: &'static str, dtype: Dtype, shape: &[usize], data: Vec<u8>) -> T {
    T {
        name,
        dtype,
        shape: shape.to_vec(),
        data,
    }
}

/// Tensor names that look like compressd's sparse layout (`x.mask`, `x.values`, `x.shape`)
/// with a shape of 2^40 values: reading the model back once asked for 4 TiB and aborted the
/// process, and every restart claimed the job again.
async fn a_forged_sparse_shape_does_not_take_the_server_down(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let forged = safetensors(
        &[
            f32_tensor("w", &[8, 8], &values(64, 1)),
            raw("x.mask", Dtype::U8, &[1], vec![1]),
            raw("x.values", Dtype::F32, &[1], 1f32.to_le_bytes().to_vec()),
            raw(
                "x.shape",
                Dtype::I64,
                &[1],
                (1i64 << 40).to_le_bytes().to_vec(),
            ),
        ],
        None,
    );
    let model = app.upload_ok(forged, "forged").await;
    for pipeline in [
        json!([{"op":"prune","sparsity":0.5}]),
        json!([{"op":"quantize","scheme":"int8"}]),
    ] {
        let job = app.submit(&model, pipeline.clone()).await;
        app.run_jobs().await;
        let job = app.job(&job).await;
        assert!(
            job["status"] == "succeeded" || job["status"] == "failed",
            "{pipeline}: {job:#}"
        );
    }
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    app.finish().await;
}

/// A valid architecture whose one conv layer would unfold each sample into 4.4·10^12 values
/// (kernel 1030, padding 1024 on a 1×1 input): refused before queueing, naming the layer,
/// instead of a job that asks for terabytes.
async fn a_conv_that_unfolds_into_terabytes_is_refused_at_submission(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let arch = r#"{"input_shape":[1,1,1],"layers":[
        {"type":"conv2d","in_channels":1,"out_channels":1,"kernel_size":1030,"padding":1024},
        {"type":"flatten"},{"type":"linear","in_features":1040400,"out_features":2}]}"#;
    let res = upload_architecture(&app, arch, None).await;
    assert_eq!(res.status(), 201);
    let model: serde_json::Value = res.json().await.unwrap();
    let one = |name: &'static str, label: u8| {
        [
            f32_tensor(name, &[2, 1, 1, 1], &[0.0, 1.0]),
            raw(
                if name == "train_inputs" {
                    "train_labels"
                } else {
                    "test_labels"
                },
                Dtype::U8,
                &[2],
                vec![label, 1 - label],
            ),
        ]
    };
    let mut tensors = Vec::new();
    tensors.extend(one("train_inputs", 0));
    tensors.extend(one("test_inputs", 1));
    let res = upload_dataset(&app, safetensors(&tensors, None)).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let data: serde_json::Value = res.json().await.unwrap();
    let res = app
        .post_job(json!({"model_id": model["id"], "dataset_id": data["id"], "pipeline": [{"op":"evaluate"}]}))
        .await;
    assert_eq!(res.status(), 422);
    let problem: serde_json::Value = res.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("layer '0' (conv2d) unfolds"), "{detail}");
    app.finish().await;
}

/// The results cache answers only for the same bytes, architecture, config, dataset and
/// pipeline: after the architecture changes, the same job runs again.
async fn a_new_architecture_is_not_answered_from_the_cache(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let data: serde_json::Value = upload_dataset(&app, dataset_bytes())
        .await
        .json()
        .await
        .unwrap();
    let model: serde_json::Value = upload_architecture(&app, MLP, None)
        .await
        .json()
        .await
        .unwrap();
    let evaluate = || json!({"model_id": model["id"], "dataset_id": data["id"], "pipeline": [{"op":"evaluate"}]});
    let first = app
        .post_job(evaluate())
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    app.run_jobs().await;
    assert_eq!(
        app.job(first["id"].as_str().unwrap()).await["status"],
        "succeeded"
    );
    let again = app
        .post_job(evaluate())
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(again["cache_hit"], true, "same inputs: {again:#}");
    let tanh = MLP.replace("relu", "tanh");
    let res = app
        .http
        .put(app.url(&format!(
            "/v1/models/{}/architecture",
            model["id"].as_str().unwrap()
        )))
        .header("content-type", "application/json")
        .body(tanh)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let changed = app
        .post_job(evaluate())
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(changed["cache_hit"], false, "{changed:#}");
    app.finish().await;
}

/// A 200-byte architecture asks for 4 MiB of generated weights on a server whose uploads stop
/// at 1 MiB: refused before anything is generated, like the same weights uploaded.
async fn generated_weights_count_against_the_upload_limit(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |c| c.max_upload_bytes = 1 << 20).await else {
        return;
    };
    let arch = r#"{"input_shape":[1024],"layers":[{"type":"linear","in_features":1024,"out_features":1024}]}"#;
    let res = upload_architecture(&app, arch, None).await;
    assert_eq!(res.status(), 413);
    let problem: serde_json::Value = res.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("generated weights count"),
        "{problem}"
    );
    let small =
        r#"{"input_shape":[64],"layers":[{"type":"linear","in_features":64,"out_features":64}]}"#;
    assert_eq!(upload_architecture(&app, small, None).await.status(), 201);
    app.finish().await;
}

/// Tensors with a zero-length dimension hold no values: every operation leaves them as they
/// are (per-channel scales of an empty tensor once made an invalid file, and Q4_K panicked).
async fn zero_length_dimensions_are_left_alone(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let model = safetensors(
        &[
            f32_tensor("w", &[256, 256], &values(256 * 256, 1)),
            f32_tensor("empty_rows", &[0, 256], &[]),
            f32_tensor("empty_cols", &[256, 0], &[]),
        ],
        None,
    );
    let model = app.upload_ok(model, "empty").await;
    for pipeline in [
        json!([{"op":"prune","sparsity":0.5}]),
        json!([{"op":"prune","sparsity":0.5,"scope":"global"}]),
        json!([{"op":"quantize","scheme":"int8","granularity":"channel"}]),
        json!([{"op":"quantize","scheme":"fp8_e4m3","granularity":"channel"}]),
        json!([{"op":"quantize","scheme":"int4","group_size":128}]),
        json!([{"op":"quantize","scheme":"kmeans","bits":4}]),
        json!([{"op":"export","format":"gguf","type":"Q4_K"}]),
        json!([{"op":"export","format":"gguf","type":"Q8_0"}]),
    ] {
        let job = app.submit(&model, pipeline.clone()).await;
        app.run_jobs().await;
        let job = app.job(&job).await;
        assert_eq!(job["status"], "succeeded", "{pipeline}: {job:#}");
        let bytes = app.model_artifact(&job).await;
        if pipeline[0]["op"] != "export" {
            let read = safetensors::SafeTensors::deserialize(&bytes);
            assert!(read.is_ok(), "{pipeline}: the artifact does not read back");
        }
    }
    app.finish().await;
}

crate::on_each_backend!(
    zero_length_dimensions_are_left_alone,
    generated_weights_count_against_the_upload_limit,
    a_forged_sparse_shape_does_not_take_the_server_down,
    a_conv_that_unfolds_into_terabytes_is_refused_at_submission,
    a_new_architecture_is_not_answered_from_the_cache,
);
