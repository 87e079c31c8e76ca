//! Models that run, through the API: datasets, architectures, train → iterative prune with
//! fine-tuning → evaluate, structured and N:M pruning, and the refusals before queueing.

use reqwest::multipart;
use safetensors::tensor::Dtype;
use serde_json::{json, Value};

use crate::blobs::blobs;
use crate::helpers::{Backend, TestApp};
use crate::models::{f32_tensor, safetensors, zeros, T};

pub(crate) const MLP: &str = r#"{"input_shape":[8],"layers":[
  {"type":"linear","in_features":8,"out_features":32},{"type":"relu"},
  {"type":"linear","in_features":32,"out_features":16},{"type":"relu"},
  {"type":"linear","in_features":16,"out_features":4}]}"#;

const CNN: &str = r#"{"input_shape":[1,4,4],"layers":[
  {"type":"conv2d","in_channels":1,"out_channels":8,"kernel_size":3,"padding":1},
  {"type":"batchnorm2d","num_features":8},{"type":"relu"},{"type":"maxpool2d","kernel_size":2},
  {"type":"flatten"},{"type":"linear","in_features":32,"out_features":16},{"type":"relu"},
  {"type":"dropout","p":0.1},{"type":"linear","in_features":16,"out_features":4}]}"#;

/// A small dataset that fits the MLP above (8 inputs, 4 classes).
pub fn dataset_bytes() -> Vec<u8> {
    dataset(false)
}

/// The shared blobs; the image form (1×4×4) repeats each 8-vector twice.
fn dataset(image: bool) -> Vec<u8> {
    let (xtr, ytr) = blobs(512, 1);
    let (xte, yte) = blobs(128, 2);
    let (shape, widen): (Vec<usize>, usize) = if image {
        (vec![1, 4, 4], 2)
    } else {
        (vec![8], 1)
    };
    let inputs = |name: &'static str, x: &[f32], n: usize| {
        let x: Vec<f32> = x.chunks(8).flat_map(|s| s.repeat(widen)).collect();
        let mut s = vec![n];
        s.extend(&shape);
        f32_tensor(name, &s, &x)
    };
    let labels = |name: &'static str, y: Vec<u8>| T {
        name,
        dtype: Dtype::U8,
        shape: vec![y.len()],
        data: y,
    };
    safetensors(
        &[
            inputs("train_inputs", &xtr, 512),
            labels("train_labels", ytr),
            inputs("test_inputs", &xte, 128),
            labels("test_labels", yte),
        ],
        None,
    )
}

pub(crate) async fn upload_dataset(app: &TestApp, bytes: Vec<u8>) -> reqwest::Response {
    let form = multipart::Form::new().text("name", "blobs").part(
        "file",
        multipart::Part::bytes(bytes).file_name("blobs.safetensors"),
    );
    app.http
        .post(app.url("/v1/datasets"))
        .multipart(form)
        .send()
        .await
        .unwrap()
}

pub(crate) async fn upload_architecture(
    app: &TestApp,
    arch: &str,
    weights: Option<Vec<u8>>,
) -> reqwest::Response {
    let mut form = multipart::Form::new()
        .text("name", "net")
        .text("architecture", arch.to_owned())
        .text("seed", "3");
    if let Some(w) = weights {
        form = form.part(
            "file",
            multipart::Part::bytes(w).file_name("net.safetensors"),
        );
    }
    app.http
        .post(app.url("/v1/models"))
        .multipart(form)
        .send()
        .await
        .unwrap()
}

/// A running app with the shared dataset and a freshly initialised model: the MLP on the
/// vector form of the data, or the CNN on its image form.
async fn app_with_model(backend: Backend, image: bool) -> Option<(TestApp, Value, Value)> {
    let app = TestApp::spawn(backend, |_| {}).await?;
    let data = created(upload_dataset(&app, dataset(image)).await).await;
    let arch = if image { CNN } else { MLP };
    let model = created(upload_architecture(&app, arch, None).await).await;
    Some((app, data, model))
}

async fn created(res: reqwest::Response) -> Value {
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{body:#}");
    body
}

async fn run(app: &TestApp, body: Value) -> Value {
    let res = app.post_job(body).await;
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_jobs().await;
    let job = app.job(&id).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    job
}

/// Every tensor of a downloaded file as (shape, values), read with compressd's reader (which
/// also reads the I64 batch-norm counters).
fn read_weights(bytes: &[u8]) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    std::fs::write(&path, bytes).unwrap();
    compressd::compress::format::reader::read_dense(&path)
        .unwrap()
        .into_iter()
        .map(|(k, (s, v))| (k, (s.into_iter().map(|d| d as usize).collect(), v)))
        .collect()
}

fn artifact_url(job: &Value, kind: &str) -> String {
    job["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} artifact"))["file_url"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn train_prune_evaluate_end_to_end(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let data = created(upload_dataset(&app, dataset(false)).await).await;
    assert_eq!(data["summary"]["num_classes"], 4);
    assert_eq!(data["summary"]["train"]["samples"], 512);
    let listed = app.get_json("/v1/datasets").await;
    assert_eq!(listed["data"][0]["id"], data["id"]);

    let model = created(upload_architecture(&app, MLP, None).await).await;
    assert_eq!(model["architecture"]["layers"][0]["name"], "0");
    assert_eq!(
        model["parameter_count"],
        8 * 32 + 32 + 32 * 16 + 16 + 16 * 4 + 4
    );

    let job = run(
        &app,
        json!({
            "model_id": model["id"], "dataset_id": data["id"],
            "pipeline": [
                {"op":"train","optimizer":"sgd","lr":0.05,"epochs":4,"batch_size":32,"seed":1},
                {"op":"prune","sparsity":0.75,"scope":"global",
                 "schedule":{"steps":3,"finetune_epochs":1,"finetune":{"lr":0.02,"batch_size":32}}},
                {"op":"evaluate","runs":3}
            ]
        }),
    )
    .await;
    let m = &job["metrics"];
    let initial = m["evaluation"]["initial"]["accuracy"].as_f64().unwrap();
    let before = m["evaluation"]["before"]["accuracy"].as_f64().unwrap();
    let after = m["evaluation"]["after"]["accuracy"].as_f64().unwrap();
    assert!(
        initial < 0.6,
        "an untrained model is near chance: {initial}"
    );
    // The compression's baseline is the trained model, not the one uploaded.
    assert!(before > 0.9, "trained, before pruning: {before}");
    assert!(after > 0.9, "trained and pruned: {after}");
    assert_eq!(m["summary"]["accuracy_initial"].as_f64().unwrap(), initial);
    assert_eq!(m["summary"]["accuracy_after"].as_f64().unwrap(), after);
    let curve = m["steps"][1]["curve"].as_array().unwrap();
    assert_eq!(curve.len(), 3);
    let last = curve[2]["sparsity"].as_f64().unwrap();
    assert!((last - 0.75).abs() < 0.01, "{curve:?}");
    assert!(
        curve[0]["sparsity"].as_f64().unwrap() > 0.25,
        "polynomial ramp starts fast"
    );
    assert!(curve.iter().all(|p| p["accuracy"].as_f64().is_some()));
    let eval = &m["steps"][2];
    assert_eq!(eval["op"], "evaluate");
    assert_eq!(eval["confusion_matrix"].as_array().unwrap().len(), 4);
    let macs = &eval["cost"];
    assert!(macs["macs_nonzero"].as_u64().unwrap() < macs["macs_dense"].as_u64().unwrap() / 3);
    assert!(eval["speed"]["latency_ms_batch1"].as_f64().unwrap() > 0.0);
    assert!(eval["f1_macro"].as_f64().unwrap() > 0.85);
    assert_eq!(m["steps"][0]["epochs"].as_array().unwrap().len(), 4);

    // The downloaded weights are as sparse as reported.
    let weights = read_weights(&app.download(&artifact_url(&job, "model")).await);
    let (z, n): (usize, usize) = ["0.weight", "2.weight", "4.weight"]
        .iter()
        .map(|w| (zeros(&weights[*w].1), weights[*w].1.len()))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert!((z as f64 / n as f64 - 0.75).abs() < 0.01, "{z}/{n}");
    let arch: Value =
        serde_json::from_slice(&app.download(&artifact_url(&job, "architecture")).await).unwrap();
    assert_eq!(arch["layers"].as_array().unwrap().len(), 5);

    // The report: one page with the summary and the charts, inline, no external assets.
    let id = job["id"].as_str().unwrap();
    let res = app
        .http
        .get(app.url(&format!("/v1/jobs/{id}/report")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    let page = res.text().await.unwrap();
    for needle in [
        "<table id=\"summary\"",
        "Accuracy vs sparsity",
        "Density per layer",
        "Confusion matrix, before",
        "Confusion matrix, after",
        "<svg",
    ] {
        assert!(page.contains(needle), "report lacks {needle}");
    }
    assert!(!page.contains("src=\"http"), "no external assets");
    let charts = job["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "chart")
        .count();
    assert!(charts >= 4, "{charts} chart artifacts");
    crate::report_browser::render_in_chromium(&app, id).await;
    let res = app
        .http
        .get(app.url("/v1/jobs/01890000-0000-7000-8000-000000000000/report"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    // No job uses the dataset any more, so it can go.
    let res = app
        .http
        .delete(app.url(&format!("/v1/datasets/{}", data["id"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    app.finish().await;
}

async fn structured_and_n_of_m_pruning(backend: Backend) {
    let Some((app, data, model)) = app_with_model(backend, true).await else {
        return;
    };
    let job = run(
        &app,
        json!({
            "model_id": model["id"], "dataset_id": data["id"],
            "pipeline": [
                {"op":"train","optimizer":"adam","lr":0.01,"epochs":3,"batch_size":32},
                {"op":"prune","method":"l1_filter","sparsity":0.5},
                {"op":"finetune","optimizer":"adam","lr":0.005,"epochs":2}
            ]
        }),
    )
    .await;
    let m = &job["metrics"];
    let cut = &m["steps"][1]["structured"];
    assert_eq!(cut["layers"][0]["units_after"], 4, "{cut:#}");
    assert_eq!(cut["layers"][1]["units_after"], 8, "{cut:#}");
    let arch: Value =
        serde_json::from_slice(&app.download(&artifact_url(&job, "architecture")).await).unwrap();
    assert_eq!(arch["layers"][0]["out_channels"], 4);
    assert_eq!(arch["layers"][5]["in_features"], 16);
    let weights = read_weights(&app.download(&artifact_url(&job, "model")).await);
    assert_eq!(weights["0.weight"].0, vec![4, 1, 3, 3]);
    assert_eq!(weights["1.running_mean"].0, vec![4]);
    assert_eq!(weights["5.weight"].0, vec![8, 16]);
    assert!(m["summary"]["parameters_after"].as_u64().unwrap() < 400);
    assert!(
        m["evaluation"]["after"]["accuracy"].as_f64().unwrap() > 0.85,
        "{:#}",
        m["evaluation"]["after"]["accuracy"]
    );
    assert!(m["summary"]["batch_throughput_speedup"].as_f64().is_some());

    // The smaller model can be uploaded back with its new architecture.
    let weights_bytes = app.download(&artifact_url(&job, "model")).await;
    let arch_text = serde_json::to_string(&arch).unwrap();
    created(upload_architecture(&app, &arch_text, Some(weights_bytes)).await).await;

    // N:M keeps 2 of every 4 along each row; sensitivity scans each layer.
    let job = run(
        &app,
        json!({
            "model_id": model["id"], "dataset_id": data["id"],
            "pipeline": [
                {"op":"prune","method":"nm","n":2,"m":4,"criterion":"taylor","batches":2},
                {"op":"sensitivity","sparsities":[0.5,0.9]}
            ]
        }),
    )
    .await;
    let weights = read_weights(&app.download(&artifact_url(&job, "model")).await);
    for name in ["5.weight", "8.weight"] {
        for group in weights[name].1.chunks(4) {
            assert_eq!(
                group.iter().filter(|v| **v != 0.0).count(),
                2,
                "{name}: {group:?}"
            );
        }
    }
    assert_eq!(
        job["metrics"]["steps"][0]["skipped"],
        json!(["0.weight"]),
        "conv rows of 9 are not groups of 4"
    );
    let table = job["metrics"]["steps"][1]["layers"].as_array().unwrap();
    assert_eq!(table.len(), 3);
    assert_eq!(table[0]["points"].as_array().unwrap().len(), 2);

    // Movement scores gathered during each round's fine-tuning pick the next round's cut.
    let job = run(
        &app,
        json!({
            "model_id": model["id"], "dataset_id": data["id"],
            "pipeline": [{"op":"prune","sparsity":0.6,"criterion":"movement","batches":2,
                          "schedule":{"steps":2,"finetune_epochs":1,"ramp":"linear"}}]
        }),
    )
    .await;
    let step = &job["metrics"]["steps"][0];
    assert_eq!(step["criterion"], "movement");
    let curve = step["curve"].as_array().unwrap();
    assert!(
        (curve[0]["target_sparsity"].as_f64().unwrap() - 0.3).abs() < 1e-9,
        "linear ramp"
    );
    assert!(
        (step["sparsity_after"].as_f64().unwrap() - 0.6).abs() < 0.01,
        "{step:#}"
    );
    app.finish().await;
}

async fn bad_models_datasets_and_jobs_are_refused(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    // A dataset whose labels exceed the declared class count.
    let out_of_range = safetensors(
        &[
            f32_tensor("train_inputs", &[2, 8], &[0.0; 16]),
            T {
                name: "train_labels",
                dtype: Dtype::U8,
                shape: vec![2],
                data: vec![0, 7],
            },
            f32_tensor("test_inputs", &[1, 8], &[0.0; 8]),
            T {
                name: "test_labels",
                dtype: Dtype::U8,
                shape: vec![1],
                data: vec![0],
            },
        ],
        Some([("num_classes".to_string(), "4".to_string())].into()),
    );
    let res = upload_dataset(&app, out_of_range).await;
    assert_eq!(res.status(), 422);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: Value = res.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("'train_labels'[1] is 7"),
        "{body:#}"
    );

    // Architectures that are wrong, and weights that do not fit.
    let res = upload_architecture(
        &app,
        r#"{"input_shape":[8],"layers":[{"type":"attention"}]}"#,
        None,
    )
    .await;
    assert_eq!(res.status(), 422);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("unknown variant `attention`"));
    let wrong = safetensors(&[f32_tensor("0.weight", &[32, 7], &[0.0; 224])], None);
    let res = upload_architecture(&app, MLP, Some(wrong)).await;
    assert_eq!(res.status(), 422);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["type"], "urn:compressd:problem:weights-mismatch");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("'0.weight' has shape [32, 7]"),
        "{body:#}"
    );

    // Jobs that need what the model or request lacks never reach the queue.
    let plain = app.upload_ok(crate::models::mlp(), "plain").await;
    let data = created(upload_dataset(&app, dataset(false)).await).await;
    let cnn_data = created(upload_dataset(&app, dataset(true)).await).await;
    let net = created(upload_architecture(&app, MLP, None).await).await;
    for (body, code) in [
        (
            json!({"model_id": plain, "pipeline":[{"op":"evaluate"}], "dataset_id": data["id"]}),
            "architecture-required",
        ),
        (
            json!({"model_id": net["id"], "pipeline":[{"op":"train"}]}),
            "dataset-required",
        ),
        (
            json!({"model_id": net["id"], "pipeline":[{"op":"prune","sparsity":0.5,"criterion":"taylor"}]}),
            "dataset-required",
        ),
        (
            json!({"model_id": net["id"], "pipeline":[{"op":"train"}], "dataset_id": "01890000-0000-7000-8000-000000000000"}),
            "dataset-not-found",
        ),
        (
            json!({"model_id": net["id"], "pipeline":[{"op":"evaluate"}], "dataset_id": cnn_data["id"]}),
            "dataset-mismatch",
        ),
        (
            json!({"model_id": net["id"], "pipeline":[{"op":"train","lr":-1}], "dataset_id": data["id"]}),
            "invalid-pipeline",
        ),
        (
            json!({"model_id": net["id"], "pipeline":[{"op":"prune","method":"nm","n":5,"m":4}]}),
            "invalid-pipeline",
        ),
        (
            json!({"model_id": net["id"], "pipeline":[{"op":"finetune","init":"architecture"}], "dataset_id": data["id"]}),
            "invalid-pipeline",
        ),
    ] {
        let res = app.post_job(body.clone()).await;
        assert_eq!(res.status(), 422, "{body}");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(
            problem["type"],
            format!("urn:compressd:problem:{code}"),
            "{body}: {problem:#}"
        );
    }
    assert_eq!(app.get_json("/v1/jobs").await["data"], json!([]));

    // PUT architecture checks the weights too, then lets a plain model run.
    let res = app
        .http
        .put(app.url(&format!("/v1/models/{plain}/architecture")))
        .json(&serde_json::from_str::<Value>(MLP).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("missing tensor '0.weight'"));
    app.finish().await;
}

async fn training_reports_epochs_and_cancels_between_batches(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |c| {
        c.workers = Some(1);
        c.test_chunk_delay_ms = 5;
        c.lease_ms = 600;
    })
    .await
    else {
        return;
    };
    let data = created(upload_dataset(&app, dataset(false)).await).await;
    let model = created(upload_architecture(&app, MLP, None).await).await;
    // 16 batches an epoch, each slowed by the test hook: about a second per epoch.
    let res = app
        .post_job(json!({"model_id": model["id"], "dataset_id": data["id"],
            "pipeline":[{"op":"train","epochs":200,"batch_size":32}]}))
        .await;
    assert_eq!(res.status(), 202);
    let job = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let detail = loop {
        let j = app.job(&job).await;
        if j["progress_detail"]["epoch"]
            .as_u64()
            .is_some_and(|e| e >= 1)
        {
            break j["progress_detail"].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no epoch reported: {j:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(detail["op"], "train");
    assert_eq!(detail["step"], 0);
    assert_eq!(detail["epochs"], 200);
    let accuracy = detail["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy));
    let res = app
        .http
        .post(app.url(&format!("/v1/jobs/{job}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let done = app
        .wait_for(&job, "cancelled", std::time::Duration::from_secs(10))
        .await;
    assert!(
        done["progress"].as_f64().unwrap() < 0.5,
        "stopped early: {done:#}"
    );
    assert_eq!(done["artifacts"], json!([]));
    app.finish().await;
}

/// A half-size student distilled from a trained teacher, compared with the same student on
/// labels alone, then pruned in the same pipeline.
async fn distillation_trains_a_smaller_student(backend: Backend) {
    let Some((app, data, model)) = app_with_model(backend, false).await else {
        return;
    };
    let job = run(
        &app,
        json!({
            "model_id": model["id"], "dataset_id": data["id"],
            "pipeline": [
                {"op":"train","lr":0.05,"epochs":4,"batch_size":32,"seed":1},
                {"op":"distill","shrink":0.5,"temperature":3,"alpha":0.8,"baseline":true,
                 "train":{"lr":0.05,"epochs":4,"batch_size":32,"seed":2}},
                {"op":"prune","sparsity":0.5}
            ]
        }),
    )
    .await;
    let d = &job["metrics"]["steps"][1];
    assert_eq!(d["op"], "distill");
    let (teacher, student) = (&d["teacher"], &d["student"]);
    assert_eq!(student["parameters"], 8 * 16 + 16 + 16 * 8 + 8 + 8 * 4 + 4);
    assert!(teacher["parameters"].as_u64() > student["parameters"].as_u64());
    assert!(student["accuracy"].as_f64().unwrap() > 0.85, "{d:#}");
    let gain = d["gain_points"].as_f64().unwrap();
    let base = d["baseline"]["accuracy"].as_f64().unwrap();
    assert!((100.0 * (student["accuracy"].as_f64().unwrap() - base) - gain).abs() < 1e-9);
    // The student is the job's model from then on: pruned, and shipped with its architecture.
    let arch: Value =
        serde_json::from_slice(&app.download(&artifact_url(&job, "architecture")).await).unwrap();
    assert_eq!(arch["layers"][0]["out_features"], 16);
    let weights = read_weights(&app.download(&artifact_url(&job, "model")).await);
    assert_eq!(weights["0.weight"].0, vec![16, 8]);
    assert_eq!(zeros(&weights["0.weight"].1), 64);
    let after = job["metrics"]["evaluation"]["after"]["cost"]["parameters"]
        .as_u64()
        .unwrap();
    assert_eq!(after, student["parameters"].as_u64().unwrap());

    // A given student that also imitates the teacher's second hidden layer.
    let student_arch: Value = serde_json::from_str(&MLP.replace(
        r#"{"type":"linear","in_features":8,"out_features":32},{"type":"relu"},
  {"type":"linear","in_features":32,"out_features":16}"#,
        r#"{"type":"linear","in_features":8,"out_features":12},{"type":"relu"},
  {"type":"linear","in_features":12,"out_features":16}"#,
    ))
    .unwrap();
    assert_eq!(student_arch["layers"][0]["out_features"], 12);
    let pipeline = |pairs: Value| {
        json!({"model_id": model["id"], "dataset_id": data["id"], "pipeline": [
            {"op":"train","lr":0.05,"epochs":3,"batch_size":32,"seed":1},
            {"op":"distill","student":student_arch,"features":pairs,"beta":0.5,
             "train":{"lr":0.05,"epochs":3,"batch_size":32}}]})
    };
    let job = run(&app, pipeline(json!([{"teacher":"3","student":"3"}]))).await;
    let d = &job["metrics"]["steps"][1];
    assert_eq!(d["features"][0]["teacher"], "3");
    assert!(d["student"]["accuracy"].as_f64().unwrap() > 0.8, "{d:#}");
    let res = app
        .post_job(pipeline(json!([{"teacher":"1","student":"1"}])))
        .await;
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_jobs().await;
    let failed = app.job(&id).await;
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("same shape"),
        "{failed:#}"
    );
    app.finish().await;
}

/// Quantization-aware fine-tuning reports post-training quantization and QAT side by side,
/// keeps pruned weights at zero, and writes the quantized model.
async fn qat_reports_ptq_and_qat_and_writes_the_quantized_model(backend: Backend) {
    let Some((app, data, model)) = app_with_model(backend, false).await else {
        return;
    };
    let job = run(&app, json!({
        "model_id": model["id"], "dataset_id": data["id"],
        "pipeline": [
            {"op":"train","lr":0.05,"epochs":4,"batch_size":32,"seed":1},
            {"op":"prune","sparsity":0.5},
            {"op":"qat","quantize":{"scheme":"int4","group_size":32,"include":["2.weight"],"dequantized_copy":true},
             "train":{"lr":0.01,"epochs":2,"batch_size":32}}
        ]
    }))
    .await;
    let q = &job["metrics"]["steps"][2];
    assert_eq!(q["op"], "qat");
    for k in ["accuracy_float", "accuracy_ptq", "accuracy_qat"] {
        let a = q[k].as_f64().unwrap();
        assert!((0.8..=1.0).contains(&a), "{k}: {q:#}");
    }
    assert_eq!(q["quantize"]["quantized_tensors"], 1);
    let stored = read_weights(&app.download(&artifact_url(&job, "model")).await);
    let dense = read_weights(&app.download(&artifact_url(&job, "model_dequantized")).await);
    assert_eq!(stored["2.weight"], dense["2.weight"]);
    // Half of every weight matrix was pruned before QAT; the zeros are still there.
    assert!(zeros(&dense["0.weight"].1) >= 128);
    assert!(zeros(&dense["2.weight"].1) >= 256);
    let after = job["metrics"]["evaluation"]["after"]["accuracy"]
        .as_f64()
        .unwrap();
    assert_eq!(after, q["accuracy_qat"].as_f64().unwrap());
    let res = app
        .post_job(json!({"model_id": model["id"], "dataset_id": data["id"],
            "pipeline":[{"op":"qat","quantize":{"scheme":"fp8_e4m3"}}]}))
        .await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("int8 and int4"));
    app.finish().await;
}

/// `auto` keeps to its budget, never returns a model outside the accuracy budget, verifies
/// its winner on the half of the evaluation split the search never saw, and says why every
/// other trial lost.
async fn auto_finds_a_smaller_model_within_budget(backend: Backend) {
    let Some((app, data, model)) = app_with_model(backend, false).await else {
        return;
    };
    let trained = run(
        &app,
        json!({"model_id": model["id"], "dataset_id": data["id"],
        "pipeline":[{"op":"train","lr":0.05,"epochs":6,"batch_size":32,"seed":1}]}),
    )
    .await;
    let weights = app.download(&artifact_url(&trained, "model")).await;
    let arch: Value =
        serde_json::from_slice(&app.download(&artifact_url(&trained, "architecture")).await)
            .unwrap();
    let net = created(upload_architecture(&app, &arch.to_string(), Some(weights)).await).await;
    for trials in [1usize, 6] {
        let job = run(&app, json!({"model_id": net["id"], "dataset_id": data["id"],
            "pipeline":[{"op":"auto","max_accuracy_drop":0.02,"budget":{"trials":trials,"seconds":120},
                         "finetune":{"lr":0.02,"epochs":1,"batch_size":32}}]})).await;
        let a = &job["metrics"]["steps"][0];
        assert_eq!(a["op"], "auto");
        let tried = a["trials"].as_array().unwrap();
        assert!(
            !tried.is_empty() && tried.len() <= trials,
            "{} trials for a budget of {trials}",
            tried.len()
        );
        assert_eq!(a["trials_used"], tried.len());
        assert!(tried.iter().any(|t| t["on_frontier"] == true));
        // The search chose on one half of the evaluation split and verified on the other.
        let samples = job["metrics"]["evaluation"]["before"]["samples"]
            .as_u64()
            .unwrap();
        let (searched, held_out) = (
            a["validation_samples"].as_u64().unwrap(),
            a["holdout_samples"].as_u64().unwrap(),
        );
        assert_eq!(searched + held_out, samples);
        let base = a["baseline_test_accuracy"].as_f64().unwrap();
        // Every trial that did not win says why.
        let winner = a["winner"]["trial"].as_u64();
        for (i, t) in tried.iter().enumerate() {
            assert_eq!(t["rejected"].is_null(), winner == Some(i as u64), "{t:#}");
        }
        match a["winner"].as_object() {
            Some(w) => {
                let verified = w["test_accuracy"].as_f64().unwrap();
                assert!(
                    verified >= base - 0.02 - 1e-9,
                    "never outside the budget on the held-out half: {verified} vs {base}"
                );
                assert!(tried[winner.unwrap() as usize]["on_frontier"] == true);
                let model = job["artifacts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|a| a["kind"] == "model")
                    .unwrap();
                assert!(model["file_name"]
                    .as_str()
                    .unwrap()
                    .ends_with(".safetensors.zst"));
                assert_eq!(w["bytes"], model["size_bytes"]);
                // A 3.5 KB model is mostly header at this size; MNIST figures are in the README.
                assert!(w["compression_ratio"].as_f64().unwrap() > 1.0, "{w:?}");
            }
            None => assert!(a["note"].as_str().unwrap().contains("baseline")),
        }
    }
    app.finish().await;
}

/// The latency objective removes whole filters, times every trial, and hands on a smaller
/// architecture when a trial is both faster and within the budget.
async fn auto_for_latency_shrinks_the_architecture(backend: Backend) {
    let Some((app, data, model)) = app_with_model(backend, true).await else {
        return;
    };
    let job = run(
        &app,
        json!({"model_id": model["id"], "dataset_id": data["id"], "pipeline": [
            {"op":"train","optimizer":"adam","lr":0.01,"epochs":3,"batch_size":32},
            {"op":"auto","objective":"latency","max_accuracy_drop":0.05,"budget":{"trials":3},
             "finetune":{"optimizer":"adam","lr":0.005,"epochs":1,"batch_size":32}}]}),
    )
    .await;
    let a = &job["metrics"]["steps"][1];
    assert_eq!(a["objective"], "latency");
    let trials = a["trials"].as_array().unwrap();
    assert!(!trials.is_empty() && trials.len() <= 3);
    assert!(trials
        .iter()
        .all(|t| t["throughput"].as_f64().unwrap() > 0.0));
    let base = a["baseline_test_accuracy"].as_f64().unwrap();
    let after = &job["metrics"]["evaluation"]["after"];
    assert!(after["accuracy"].as_f64().unwrap() >= base - 0.05 - 1e-9);
    let arch: Value =
        serde_json::from_slice(&app.download(&artifact_url(&job, "architecture")).await).unwrap();
    let filters = arch["layers"][0]["out_channels"].as_u64().unwrap();
    match a["winner"].as_object() {
        Some(_) => {
            assert!(filters < 8, "the winner has fewer filters: {filters}");
            assert!(
                after["cost"]["parameters"].as_u64()
                    < job["metrics"]["evaluation"]["before"]["cost"]["parameters"].as_u64()
            );
        }
        None => assert_eq!(filters, 8),
    }
    app.finish().await;
}

/// A pipeline that only measures writes no model: the model's stored file stays where it is
/// (it used to be moved into the job's artifact, and the model answered 500 afterwards).
async fn measuring_leaves_the_model_file_in_place(backend: Backend) {
    let Some((app, data, model)) = app_with_model(backend, false).await else {
        return;
    };
    let file = format!("/v1/models/{}/file", model["id"].as_str().unwrap());
    let original = app.download(&file).await;
    for pipeline in [
        json!([{"op":"evaluate"}]),
        json!([{"op":"sensitivity","sparsities":[0.5]}]),
        json!([{"op":"evaluate","runs":2}]),
    ] {
        let job = run(
            &app,
            json!({"model_id": model["id"], "dataset_id": data["id"], "pipeline": pipeline, "cache": false}),
        )
        .await;
        let kinds: Vec<&str> = job["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["kind"].as_str())
            .collect();
        assert!(!kinds.contains(&"model"), "{kinds:?}");
        assert_eq!(app.download(&file).await, original, "{pipeline}");
    }
    app.finish().await;
}

crate::on_each_backend!(
    measuring_leaves_the_model_file_in_place,
    auto_for_latency_shrinks_the_architecture,
    auto_finds_a_smaller_model_within_budget,
    qat_reports_ptq_and_qat_and_writes_the_quantized_model,
    distillation_trains_a_smaller_student,
    training_reports_epochs_and_cancels_between_batches,
    train_prune_evaluate_end_to_end,
    structured_and_n_of_m_pruning,
    bad_models_datasets_and_jobs_are_refused,
);
