//! Calibration-based pruning of a transformer through the API: Wanda reads the text dataset's
//! calibration split (never its evaluation split), prunes every block linear to exactly the
//! asked sparsity per output row (or N of every M), reports each layer's reconstruction error,
//! and keeps the model closer to the original than magnitude pruning at the same sparsity.

use serde_json::{json, Value};

use crate::helpers::{Backend, TestApp};
use crate::transformers::{created, fixture, folder_files, upload_folder, upload_text};

/// The fixture text split in two: calibration first, evaluation after, disjoint.
pub(crate) fn split_text() -> (Vec<u8>, Value) {
    let text = std::fs::read(fixture("text.txt")).unwrap();
    let half = text.len() / 2;
    let split = json!({"by":"bytes","calibration":[0, half],"evaluation":[half, text.len()]});
    (text, split)
}

pub(crate) async fn finished(app: &TestApp, model: &Value, data: &Value, pipeline: Value) -> Value {
    let job = app.submit_with_dataset(model, data, pipeline).await;
    app.run_jobs().await;
    let job = app.job(&job).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    job
}

/// Each block linear of the downloaded model: (name, rows of f32 values).
pub(crate) fn block_linears(model: &[u8]) -> Vec<(String, Vec<Vec<f32>>)> {
    let st = safetensors::SafeTensors::deserialize(model).unwrap();
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        if !(name.starts_with("model.layers.") && name.ends_with("_proj.weight")) {
            continue;
        }
        assert_eq!(view.dtype(), safetensors::Dtype::F32);
        let cols = view.shape()[1];
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.push((name, values.chunks(cols).map(<[f32]>::to_vec).collect()));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

async fn wanda_prunes_rows_exactly_and_beats_magnitude(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let model = created(upload_folder(&app, folder_files(&fixture("llama")), "llama").await).await;
    let (text, split) = split_text();
    let data = created(upload_text(&app, &text, Some(split)).await).await;
    let evaluate = json!({"op":"evaluate","window":64,"max_tokens":1024});
    let calibration = json!({"tokens": 1024, "window": 64});

    let wanda = finished(
        &app,
        &model,
        &data,
        json!([{"op":"prune","criterion":"wanda","sparsity":0.5,"calibration":calibration}, evaluate]),
    )
    .await;
    let step = &wanda["metrics"]["steps"][0];
    assert_eq!(step["method"], "wanda");
    assert_eq!(step["scope"], "row");
    let used = &step["calibration"];
    assert_eq!(used["window"], 64);
    assert!(used["data"].as_str().unwrap().contains("calibration"));
    let tokens = used["tokens"].as_u64().unwrap();
    assert!(tokens > 64 && tokens <= 1024, "{tokens} calibration tokens");
    assert_eq!(used["windows"].as_u64().unwrap(), tokens.div_ceil(64));
    // Every block linear of both blocks, each with its error measured on real inputs.
    let layers = step["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 14, "{layers:#?}");
    for l in layers {
        let e = l["reconstruction_error"].as_f64().unwrap();
        assert!(e > 0.0 && e < 1.0, "{l}");
        assert_eq!(l["sparsity"], 0.5, "{l}");
    }
    assert_eq!(layers[0]["block"], 0);
    assert_eq!(layers[13]["block"], 1);
    // Exactly half of every output row is zero: Wanda compares within rows.
    let pruned = block_linears(&app.model_artifact(&wanda).await);
    assert_eq!(pruned.len(), 14);
    for (name, rows) in &pruned {
        for row in rows {
            let zeros = row.iter().filter(|v| **v == 0.0).count();
            assert_eq!(zeros, row.len() / 2, "{name}");
        }
    }

    let magnitude = finished(
        &app,
        &model,
        &data,
        json!([{"op":"prune","sparsity":0.5}, evaluate]),
    )
    .await;
    let kl = |job: &Value| {
        job["metrics"]["fidelity"]["versus_before"]["kl_mean"]
            .as_f64()
            .unwrap()
    };
    let ppl = |job: &Value| {
        job["metrics"]["fidelity"]["after"]["perplexity"]
            .as_f64()
            .unwrap()
    };
    eprintln!(
        "50 %: wanda KL {:.4} ppl {:.3}; magnitude KL {:.4} ppl {:.3}",
        kl(&wanda),
        ppl(&wanda),
        kl(&magnitude),
        ppl(&magnitude)
    );
    assert!(
        kl(&wanda) < kl(&magnitude),
        "KL to the original: wanda {} vs magnitude {}",
        kl(&wanda),
        kl(&magnitude)
    );
    assert!(
        ppl(&wanda) < ppl(&magnitude),
        "perplexity: wanda {} vs magnitude {}",
        ppl(&wanda),
        ppl(&magnitude)
    );

    let nm = finished(
        &app,
        &model,
        &data,
        json!([{"op":"prune","method":"nm","n":2,"m":4,"criterion":"wanda","calibration":calibration}]),
    )
    .await;
    assert_eq!(nm["metrics"]["steps"][0]["pattern"], "2:4");
    for (name, rows) in block_linears(&app.model_artifact(&nm).await) {
        for group in rows.iter().flat_map(|r| r.chunks(4)) {
            assert_eq!(group.iter().filter(|v| **v != 0.0).count(), 2, "{name}");
        }
    }
    app.finish().await;
}

async fn wanda_without_calibration_text_is_refused(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let model = created(upload_folder(&app, folder_files(&fixture("llama")), "llama").await).await;
    let step = json!({"op":"prune","criterion":"wanda","sparsity":0.5});
    let problem = |res: reqwest::Response| async move {
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        (
            status,
            body["detail"].as_str().unwrap_or_default().to_owned(),
        )
    };
    // No dataset at all.
    let (status, detail) = problem(
        app.post_job(json!({"model_id": model["id"], "pipeline": [step]}))
            .await,
    )
    .await;
    assert_eq!(status, 422, "{detail}");
    assert!(detail.contains("calibration text"), "{detail}");
    // A dataset whose calibration part is empty.
    let text = std::fs::read(fixture("text.txt")).unwrap();
    let all_evaluation = json!({"by":"bytes","evaluation":[0, text.len()],"calibration":[0, 0]});
    let data = created(upload_text(&app, &text, Some(all_evaluation)).await).await;
    let (status, detail) = problem(
        app.post_job(
            json!({"model_id": model["id"], "dataset_id": data["id"], "pipeline": [step]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 422, "{detail}");
    assert!(detail.contains("calibration split"), "{detail}");
    // Global scope and a threshold make no sense for a per-row score.
    for bad in [
        json!({"op":"prune","criterion":"wanda","sparsity":0.5,"scope":"global"}),
        json!({"op":"prune","criterion":"wanda","threshold":0.1}),
        json!({"op":"prune","sparsity":0.5,"calibration":{"tokens":64}}),
    ] {
        let (status, detail) = problem(
            app.post_job(
                json!({"model_id": model["id"], "dataset_id": data["id"], "pipeline": [bad]}),
            )
            .await,
        )
        .await;
        assert!(status == 400 || status == 422, "{status}: {detail}");
        assert!(!detail.is_empty());
    }
    // Calibration text shorter than one window: the job fails saying so, nothing is kept.
    let mut text = b"A short line.\n".to_vec();
    let line = text.len();
    text.extend(std::fs::read(fixture("text.txt")).unwrap());
    let split = json!({"by":"bytes","calibration":[0, line],"evaluation":[line, text.len()]});
    let data = created(upload_text(&app, &text, Some(split)).await).await;
    let wide =
        json!({"op":"prune","criterion":"wanda","sparsity":0.5,"calibration":{"window": 64}});
    let job = app.submit_with_dataset(&model, &data, json!([wide])).await;
    app.run_jobs().await;
    let job = app.job(&job).await;
    assert_eq!(job["status"], "failed", "{job:#}");
    let error = job["error"].to_string();
    assert!(error.contains("shorter than one window"), "{error}");
    assert!(job["artifacts"].as_array().unwrap().is_empty());
    app.finish().await;
}

/// A BERT encoder: Wanda calibrates on the calibration split's sentences, one at a time, and
/// keeps the sentence embeddings closer to the original's than magnitude pruning does.
async fn wanda_keeps_an_encoders_embeddings_closer(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let model = created(upload_folder(&app, folder_files(&fixture("bert")), "bert").await).await;
    let (text, split) = split_text();
    let data = created(upload_text(&app, &text, Some(split)).await).await;
    let cosine = |job: &Value| {
        job["metrics"]["fidelity"]["versus_before"]["cosine_mean"]
            .as_f64()
            .unwrap()
    };
    let wanda = finished(
        &app,
        &model,
        &data,
        json!([{"op":"prune","criterion":"wanda","sparsity":0.5}]),
    )
    .await;
    let step = &wanda["metrics"]["steps"][0];
    assert_eq!(step["layers"].as_array().unwrap().len(), 12, "{step:#}");
    assert!(step["calibration"]["windows"].as_u64().unwrap() >= 2);
    let magnitude = finished(&app, &model, &data, json!([{"op":"prune","sparsity":0.5}])).await;
    eprintln!(
        "encoder 50 %: cosine wanda {:.4}, magnitude {:.4}",
        cosine(&wanda),
        cosine(&magnitude)
    );
    assert!(
        cosine(&wanda) > cosine(&magnitude),
        "cosine to the original: wanda {} vs magnitude {}",
        cosine(&wanda),
        cosine(&magnitude)
    );
    app.finish().await;
}

crate::on_each_backend!(
    wanda_keeps_an_encoders_embeddings_closer,
    wanda_prunes_rows_exactly_and_beats_magnitude,
    wanda_without_calibration_text_is_refused,
);
