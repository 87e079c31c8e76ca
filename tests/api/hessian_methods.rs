//! SparseGPT, GPTQ and AWQ on transformers through the API, calibrated on the text dataset's
//! calibration split and measured on its evaluation split: each keeps the model closer to the
//! original than the data-free method at the same sparsity or format, reports every layer's
//! reconstruction error and damping, and writes what vLLM and compressd's reader load.

use serde_json::{json, Value};

use crate::calibration::{block_linears, finished, split_text};
use crate::helpers::{Backend, TestApp};
use crate::transformers::{created, fixture, folder_files, upload_folder, upload_text};

fn kl(job: &Value) -> f64 {
    job["metrics"]["fidelity"]["versus_before"]["kl_mean"]
        .as_f64()
        .unwrap()
}

/// The compressing step's report (the pipelines measure first: a quantized file is final).
fn report(job: &Value) -> &Value {
    &job["metrics"]["steps"][1]
}

fn mean_layer_error(job: &Value) -> f64 {
    let layers = report(job)["layers"].as_array().unwrap();
    layers
        .iter()
        .map(|l| l["reconstruction_error"].as_f64().unwrap())
        .sum::<f64>()
        / layers.len() as f64
}

const CALIBRATION: &str = r#"{"tokens": 1024, "window": 64}"#;

/// Sets the fidelity protocol of the job's before/after measurement.
fn evaluate() -> Value {
    json!({"op":"evaluate","window":64,"max_tokens":1024})
}

async fn sparsegpt_prunes_rows_exactly_and_beats_wanda(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let model = created(upload_folder(&app, folder_files(&fixture("llama")), "llama").await).await;
    let (text, split) = split_text();
    let data = created(upload_text(&app, &text, Some(split)).await).await;
    let calibration: Value = serde_json::from_str(CALIBRATION).unwrap();
    let run = |criterion: &'static str, extra: Value| {
        let mut step = json!({"op":"prune","criterion":criterion,"calibration":calibration});
        step.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (app, model, data) = (&app, &model, &data);
        async move { finished(app, model, data, json!([evaluate(), step])).await }
    };
    let sparsegpt = run("sparsegpt", json!({"sparsity":0.5})).await;
    let step = report(&sparsegpt);
    assert_eq!(step["method"], "sparsegpt");
    let layers = step["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 14, "{layers:#?}");
    for l in layers {
        assert_eq!(l["dampening"], 0.01, "{l}");
        assert!(l.get("fallback").is_none(), "{l}");
        assert_eq!(l["sparsity"], 0.5, "{l}");
    }
    for (name, rows) in block_linears(&app.model_artifact(&sparsegpt).await) {
        for row in rows {
            assert_eq!(
                row.iter().filter(|v| **v == 0.0).count(),
                row.len() / 2,
                "{name}"
            );
        }
    }
    let wanda = run("wanda", json!({"sparsity":0.5})).await;
    eprintln!(
        "50 %: sparsegpt KL {:.4} layer error {:.4}; wanda KL {:.4} layer error {:.4}",
        kl(&sparsegpt),
        mean_layer_error(&sparsegpt),
        kl(&wanda),
        mean_layer_error(&wanda)
    );
    assert!(mean_layer_error(&sparsegpt) < mean_layer_error(&wanda));
    assert!(
        kl(&sparsegpt) < kl(&wanda),
        "{} vs {}",
        kl(&sparsegpt),
        kl(&wanda)
    );

    let nm = run("sparsegpt", json!({"method":"nm","n":2,"m":4})).await;
    assert_eq!(report(&nm)["pattern"], "2:4");
    for (name, rows) in block_linears(&app.model_artifact(&nm).await) {
        for group in rows.iter().flat_map(|r| r.chunks(4)) {
            assert_eq!(group.iter().filter(|v| **v != 0.0).count(), 2, "{name}");
        }
    }
    app.finish().await;
}

/// The quantization_config written into the result's config.json.
async fn written_config(app: &TestApp, job: &Value) -> Value {
    let config = job["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["file_name"] == "config.json")
        .expect("config.json comes back");
    let bytes = app.download(config["file_url"].as_str().unwrap()).await;
    serde_json::from_slice::<Value>(&bytes).unwrap()["quantization_config"].clone()
}

async fn gptq_and_awq_beat_round_to_nearest(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let model = created(upload_folder(&app, folder_files(&fixture("llama")), "llama").await).await;
    let (text, split) = split_text();
    let data = created(upload_text(&app, &text, Some(split)).await).await;
    let calibration: Value = serde_json::from_str(CALIBRATION).unwrap();
    let quantize = |method: &str, extra: Value| {
        let mut step = json!({"op":"quantize","scheme":"int4","group_size":32,"symmetric":false});
        if method != "rtn" {
            step["method"] = json!(method);
            step["calibration"] = calibration.clone();
        }
        step.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!([evaluate(), step])
    };
    let rtn = finished(&app, &model, &data, quantize("rtn", json!({}))).await;
    let gptq = finished(&app, &model, &data, quantize("gptq", json!({}))).await;
    let ordered = finished(
        &app,
        &model,
        &data,
        quantize("gptq", json!({"act_order": true})),
    )
    .await;
    let awq = finished(&app, &model, &data, quantize("awq", json!({}))).await;
    let both = finished(&app, &model, &data, quantize("awq_gptq", json!({}))).await;
    eprintln!(
        "int4 g32: KL rtn {:.5}, gptq {:.5}, gptq act-order {:.5}, awq {:.5}, awq+gptq {:.5}",
        kl(&rtn),
        kl(&gptq),
        kl(&ordered),
        kl(&awq),
        kl(&both)
    );
    for (name, job) in [
        ("gptq", &gptq),
        ("act-order", &ordered),
        ("awq+gptq", &both),
    ] {
        assert!(
            kl(job) < kl(&rtn),
            "{name}: {} vs rtn {}",
            kl(job),
            kl(&rtn)
        );
    }
    assert!(
        kl(&awq) <= kl(&rtn) * 1.05,
        "awq {} vs rtn {}",
        kl(&awq),
        kl(&rtn)
    );

    let step = report(&gptq);
    let layers = step["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 14);
    assert!(layers
        .iter()
        .all(|l| l["dampening"] == 0.01 && l["reconstruction_error"].as_f64().unwrap() > 0.0));
    assert_eq!(step["calibration"]["window"], 64);
    assert_eq!(step["quantized_tensors"], 14);
    // AWQ searched every pair of both blocks (grouped-query attention: no v → o) and never
    // left one worse than rounding alone.
    let pairs = report(&awq)["scaled"].as_array().unwrap();
    assert_eq!(pairs.len(), 6, "{pairs:#?}");
    for p in pairs {
        assert!(
            p["error_after"].as_f64().unwrap() <= p["error_before"].as_f64().unwrap(),
            "{p}"
        );
    }

    // What vLLM reads: pack-quantized int4 in groups of 32, static act-order named as such.
    let config = written_config(&app, &ordered).await;
    assert_eq!(config["format"], "pack-quantized");
    let weights = &config["config_groups"]["group_0"]["weights"];
    assert_eq!(weights["num_bits"], 4);
    assert_eq!(weights["group_size"], 32);
    assert_eq!(weights["actorder"], "weight");
    assert_eq!(
        written_config(&app, &gptq).await["config_groups"]["group_0"]["weights"]["actorder"],
        Value::Null
    );
    let bytes = app.model_artifact(&awq).await;
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(st
        .tensor("model.layers.0.mlp.down_proj.weight_packed")
        .is_ok());
    // AWQ's scales live in the norms now.
    let norm = st
        .tensor("model.layers.1.post_attention_layernorm.weight")
        .unwrap();
    let original = std::fs::read(fixture("llama").join("model.safetensors")).unwrap();
    let original = safetensors::SafeTensors::deserialize(&original).unwrap();
    assert_ne!(
        norm.data(),
        original
            .tensor("model.layers.1.post_attention_layernorm.weight")
            .unwrap()
            .data()
    );

    // int8 per channel through GPTQ, and refusals before anything is queued.
    let int8 = finished(
        &app,
        &model,
        &data,
        json!([evaluate(), {"op":"quantize","scheme":"int8","method":"gptq","calibration":calibration}]),
    )
    .await;
    assert_eq!(report(&int8)["quantized_tensors"], 14);
    for (bad, needle) in [
        (
            json!({"op":"quantize","scheme":"fp8_e4m3","method":"gptq"}),
            "int4",
        ),
        (
            json!({"op":"quantize","scheme":"int4","act_order":true}),
            "act_order",
        ),
        (
            json!({"op":"quantize","scheme":"int4","calibration":{"tokens":64}}),
            "calibration",
        ),
        (
            json!({"op":"quantize","scheme":"int4","method":"gptq","calibration":{"dampening":-1}}),
            "dampening",
        ),
    ] {
        let res = app
            .post_job(json!({"model_id": model["id"], "dataset_id": data["id"], "pipeline": [bad]}))
            .await;
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        assert!(status == 400 || status == 422, "{status}: {body}");
        assert!(body["detail"].as_str().unwrap().contains(needle), "{body}");
    }
    app.finish().await;
}

/// A BERT encoder through GPTQ: its embeddings stay closer to the original's than
/// round-to-nearest leaves them.
async fn gptq_keeps_an_encoders_embeddings_closer(backend: Backend) {
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
    let step = |method: &str| {
        let mut s = json!({"op":"quantize","scheme":"int4","group_size":32});
        if method != "rtn" {
            s["method"] = json!(method);
        }
        json!([s])
    };
    let rtn = finished(&app, &model, &data, step("rtn")).await;
    let gptq = finished(&app, &model, &data, step("gptq")).await;
    let awq = finished(&app, &model, &data, step("awq")).await;
    eprintln!(
        "encoder int4: cosine rtn {:.5}, gptq {:.5}, awq {:.5}",
        cosine(&rtn),
        cosine(&gptq),
        cosine(&awq)
    );
    assert!(cosine(&gptq) > cosine(&rtn));
    // BERT's one pair, value → attention output, in each block.
    assert_eq!(
        awq["metrics"]["steps"][0]["scaled"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    app.finish().await;
}

/// Calibrated steps on a model compressd does not run as a transformer are refused up front.
async fn calibrated_methods_need_a_transformer(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let model = app.upload_ok(crate::models::mlp(), "mlp").await;
    for step in [
        json!({"op":"quantize","scheme":"int4","group_size":32,"method":"gptq"}),
        json!({"op":"prune","criterion":"sparsegpt","sparsity":0.5}),
    ] {
        let res = app
            .post_job(json!({"model_id": model, "pipeline": [step]}))
            .await;
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 422, "{body}");
        assert!(
            body["detail"].as_str().unwrap().contains("transformer"),
            "{body}"
        );
    }
    app.finish().await;
}

crate::on_each_backend!(
    calibrated_methods_need_a_transformer,
    gptq_and_awq_beat_round_to_nearest,
    gptq_keeps_an_encoders_embeddings_closer,
    sparsegpt_prunes_rows_exactly_and_beats_wanda,
);
