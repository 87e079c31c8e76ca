//! Quantization through the API: every scheme, composed with pruning, read back by the
//! project's own reader and compared with the dequantized copy.

use serde_json::{json, Value};

use crate::helpers::{Backend, TestApp};
use crate::models::{f32_tensor, mlp, read_f32, safetensors, values, zeros};

fn artifact<'a>(job: &'a Value, kind: &str) -> &'a Value {
    job["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} artifact in {job:#}"))
}

/// Reads a compressed model with compressd's reader.
fn read_back(bytes: &[u8]) -> std::collections::BTreeMap<String, (Vec<u64>, Vec<f32>)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    std::fs::write(&path, bytes).unwrap();
    compressd::compress::format::reader::read_dense(&path).unwrap()
}

async fn run(app: &TestApp, model: &str, pipeline: Value) -> Value {
    let job = app.submit(model, pipeline).await;
    app.run_jobs().await;
    let job = app.job(&job).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    job
}

async fn every_scheme_reads_back_as_its_dequantized_copy(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let model = app.upload_ok(mlp(), "mlp").await;
    let schemes = [
        json!({"scheme":"int8"}),
        json!({"scheme":"int8","granularity":"tensor","symmetric":false}),
        json!({"scheme":"int8","granularity":"group","group_size":32}),
        json!({"scheme":"int4","group_size":32}),
        json!({"scheme":"int4","group_size":32,"symmetric":false}),
        json!({"scheme":"fp8_e4m3"}),
        json!({"scheme":"fp8_e4m3","granularity":"channel"}),
        json!({"scheme":"fp16"}),
        json!({"scheme":"bf16"}),
        json!({"scheme":"kmeans","bits":4}),
        json!({"scheme":"int8","store":"sparse"}),
    ];
    for scheme in schemes {
        let mut step = scheme.clone();
        step["op"] = json!("quantize");
        step["dequantized_copy"] = json!(true);
        let job = run(
            &app,
            &model,
            json!([{"op":"prune","method":"magnitude","sparsity":0.5,"scope":"global"}, step]),
        )
        .await;
        let quantized = app
            .download(artifact(&job, "model")["file_url"].as_str().unwrap())
            .await;
        let dequantized = read_f32(
            &app.download(
                artifact(&job, "model_dequantized")["file_url"]
                    .as_str()
                    .unwrap(),
            )
            .await,
        );
        let restored = read_back(&quantized);
        for name in ["fc1.weight", "fc2.weight", "fc1.bias"] {
            let (shape, values) = &restored[name];
            assert_eq!(
                shape.iter().map(|d| *d as usize).collect::<Vec<_>>(),
                dequantized[name].1,
                "{scheme} {name}"
            );
            assert_eq!(
                values, &dequantized[name].2,
                "{scheme} {name}: reader and dequantized copy agree"
            );
        }
        // Pruned zeros stay exactly zero through quantization.
        let zeros_after: usize = ["fc1.weight", "fc2.weight"]
            .iter()
            .map(|n| zeros(&dequantized[*n].2))
            .sum();
        assert!(
            zeros_after >= (0.5f64 * (32 * 64 + 10 * 32) as f64).round() as usize,
            "{scheme}"
        );

        let step = &job["metrics"]["steps"][1];
        assert_eq!(step["op"], "quantize");
        assert_eq!(step["quantized_tensors"], 2, "{scheme}");
        let err = &step["error"];
        assert!(
            err["cosine_similarity"].as_f64().unwrap() > 0.9,
            "{scheme}: {err}"
        );
        assert!(
            err["sqnr_db"].as_f64().unwrap() > 5.0 || err["sqnr_db"].is_null(),
            "{scheme}: {err}"
        );
        let bits = step["bits_per_weight"].as_f64().unwrap();
        let expected_max = match scheme["scheme"].as_str().unwrap() {
            "int4" => 6.0,
            "kmeans" => 4.6,
            "fp16" | "bf16" => 16.0,
            _ => 9.0,
        };
        assert!(
            bits <= expected_max && bits > 0.0,
            "{scheme}: {bits} bits per weight"
        );
        assert!(
            step["compression_ratio"].as_f64().unwrap() > 1.9,
            "{scheme}"
        );
        let tensors = step["tensors"].as_array().unwrap();
        let fc1 = tensors.iter().find(|t| t["name"] == "fc1.weight").unwrap();
        assert!(
            fc1["error"]["max_abs_error"].as_f64().unwrap() < 0.2,
            "{scheme}: {fc1}"
        );
        if scheme["scheme"] == "kmeans" {
            assert!(fc1["codebook_size"].as_u64().unwrap() <= 16);
        }
    }
    app.finish().await;
}

async fn int8_file_follows_compressed_tensors(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let model = app.upload_ok(mlp(), "mlp").await;
    let job = run(&app, &model, json!([{"op":"quantize","scheme":"int8"}])).await;
    let bytes = app
        .download(artifact(&job, "model")["file_url"].as_str().unwrap())
        .await;
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let w = st.tensor("fc1.weight").unwrap();
    assert_eq!(w.dtype(), safetensors::Dtype::I8);
    assert_eq!(w.shape(), &[32, 64]);
    let s = st.tensor("fc1.weight_scale").unwrap();
    assert_eq!(
        (s.dtype(), s.shape()),
        (safetensors::Dtype::F32, &[32usize, 1][..])
    );
    assert_eq!(
        st.tensor("fc1.bias").unwrap().dtype(),
        safetensors::Dtype::F32,
        "biases stay as they were"
    );
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let config: Value = serde_json::from_str(&meta["quantization_config"]).unwrap();
    assert_eq!(config["quant_method"], "compressed-tensors");
    assert_eq!(config["format"], "int-quantized");
    let weights = &config["config_groups"]["group_0"]["weights"];
    assert_eq!(
        (weights["num_bits"].as_u64(), weights["strategy"].as_str()),
        (Some(8), Some("channel"))
    );
    assert_eq!(meta["format"], "pt", "the upload's metadata is kept");
    assert_eq!(
        artifact(&job, "model")["file_name"],
        "mlp.compressed.safetensors"
    );
    app.finish().await;
}

/// A 90 % sparse model in bitmask form is about density × bits + one bit per weight.
async fn sparse_storage_is_small(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let n = 512 * 512;
    let bytes = safetensors(&[f32_tensor("w", &[512, 512], &values(n, 9))], None);
    let model = app.upload_ok(bytes.clone(), "big").await;
    let job = run(
        &app,
        &model,
        json!([{"op":"prune","method":"magnitude","sparsity":0.9},{"op":"quantize","scheme":"int8","store":"sparse"}]),
    )
    .await;
    let file = app
        .download(artifact(&job, "model")["file_url"].as_str().unwrap())
        .await;
    let predicted = n / 8 + n / 10 + 512 * 4; // mask + one byte per non-zero + per-channel scales
    let ratio = file.len() as f64 / predicted as f64;
    assert!(
        (0.97..1.05).contains(&ratio),
        "{} bytes vs {predicted} predicted",
        file.len()
    );
    assert!(bytes.len() as f64 / file.len() as f64 > 15.0);
    let restored = read_back(&file);
    assert_eq!(zeros(&restored["w"].1), n - n / 10);

    // Sparse storage on a prune step alone, round-tripping exactly.
    let job = run(
        &app,
        &model,
        json!([{"op":"prune","method":"magnitude","sparsity":0.9,"store":"sparse"}]),
    )
    .await;
    let file = app
        .download(artifact(&job, "model")["file_url"].as_str().unwrap())
        .await;
    let restored = read_back(&file);
    let original = &read_f32(&bytes)["w"].2;
    let mut expected = original.clone();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| {
        original[*a]
            .abs()
            .total_cmp(&original[*b].abs())
            .then(a.cmp(b))
    });
    for i in &order[..(n as f64 * 0.9).round() as usize] {
        expected[*i] = 0.0;
    }
    let got = &restored["w"].1;
    let wrong: Vec<usize> = (0..n).filter(|i| got[*i] != expected[*i]).collect();
    assert!(
        wrong.is_empty(),
        "{} elements differ, first at {:?}: got {} want {}",
        wrong.len(),
        wrong.first(),
        got[wrong[0]],
        expected[wrong[0]]
    );
    let predicted = n / 8 + n / 10 * 4;
    assert!((file.len() as f64 / predicted as f64) < 1.03);
    app.finish().await;
}

async fn bad_quantization_requests_are_refused(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let model = app.upload_ok(mlp(), "m").await;
    for (pipeline, needle) in [
        (
            json!([{"op":"quantize","scheme":"kmeans","bits":9}]),
            "2 to 8",
        ),
        (
            json!([{"op":"quantize","scheme":"int8","granularity":"group","group_size":0}]),
            "group_size must be",
        ),
        (
            json!([{"op":"quantize","scheme":"int8","granularity":"group","group_size":128}]),
            "does not divide the row length 64",
        ),
        (
            json!([{"op":"quantize","scheme":"int4","group_size":48}]),
            "one of [32, 64, 128]",
        ),
        (
            json!([{"op":"quantize","scheme":"int4","group_size":128}]),
            "does not divide",
        ),
        (
            json!([{"op":"quantize","scheme":"int8"},{"op":"prune","method":"magnitude","sparsity":0.5}]),
            "must be the last step",
        ),
        (
            json!([{"op":"quantize","scheme":"int3"}]),
            "unknown variant",
        ),
    ] {
        let res = app
            .post_job(json!({"model_id": model, "pipeline": pipeline}))
            .await;
        assert_eq!(res.status(), 422, "{pipeline}");
        let text = res.text().await.unwrap();
        assert!(text.contains(needle), "{pipeline}: {text}");
    }
    assert_eq!(app.get_json("/v1/jobs").await["data"], json!([]));
    app.finish().await;
}

/// A config.json uploaded with the model comes back beside the quantized model, with the
/// quantization_config that vLLM reads from it.
async fn config_json_travels_with_the_artifact(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let config = json!({"architectures": ["MLP"], "hidden_size": 32, "torch_dtype": "float32"});
    let form = reqwest::multipart::Form::new()
        .text("name", "mlp")
        .text("config", config.to_string())
        .part(
            "file",
            reqwest::multipart::Part::bytes(mlp()).file_name("mlp.safetensors"),
        );
    let res = app
        .http
        .post(app.url("/v1/models"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let model: Value = res.json().await.unwrap();
    assert_eq!(model["config"], config);
    let job = run(
        &app,
        model["id"].as_str().unwrap(),
        json!([{"op":"quantize","scheme":"int4","group_size":32}]),
    )
    .await;
    let written: Value = serde_json::from_slice(
        &app.download(artifact(&job, "config")["file_url"].as_str().unwrap())
            .await,
    )
    .unwrap();
    assert_eq!(written["hidden_size"], 32);
    assert_eq!(written["quantization_config"]["format"], "pack-quantized");
    assert_eq!(artifact(&job, "config")["file_name"], "config.json");
    // Without a config upload there is no config artifact; a bad one is refused.
    let plain = app.upload_ok(mlp(), "plain").await;
    let job = run(&app, &plain, json!([{"op":"quantize","scheme":"int8"}])).await;
    assert!(job["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["kind"] != "config"));
    let form = reqwest::multipart::Form::new()
        .text("config", "[1,2]")
        .part(
            "file",
            reqwest::multipart::Part::bytes(mlp()).file_name("mlp.safetensors"),
        );
    let res = app
        .http
        .post(app.url("/v1/models"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    app.finish().await;
}

/// Deep Compression's three stages in one job: prune, share weights (k-means), entropy-code.
async fn entropy_coding_shrinks_the_file_and_reads_back(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let model = app.upload_ok(mlp(), "mlp").await;
    let stages = json!([
        {"op":"prune","method":"magnitude","sparsity":0.9,"scope":"global"},
        {"op":"quantize","scheme":"kmeans","bits":4,"store":"sparse","dequantized_copy":true}
    ]);
    let plain = run(&app, &model, stages.clone()).await;
    let mut with_entropy = stages.as_array().unwrap().clone();
    with_entropy.push(json!({"op":"entropy","codec":"zstd"}));
    let coded = run(&app, &model, Value::Array(with_entropy)).await;
    let (a, b) = (artifact(&plain, "model"), artifact(&coded, "model"));
    assert!(b["file_name"]
        .as_str()
        .unwrap()
        .ends_with(".compressed.safetensors.zst"));
    assert!(
        b["size_bytes"].as_u64().unwrap() < a["size_bytes"].as_u64().unwrap() * 9 / 10,
        "{a} vs {b}"
    );
    let step = &coded["metrics"]["steps"][2];
    assert_eq!(step["op"], "entropy");
    assert_eq!(step["bytes_after"], b["size_bytes"]);
    assert_eq!(
        coded["metrics"]["summary"]["file_bytes_after"],
        b["size_bytes"]
    );
    // compressd's reader takes the .zst as it is, and it equals the dequantized copy.
    let restored = read_back(&app.download(b["file_url"].as_str().unwrap()).await);
    let dequantized = read_f32(
        &app.download(
            artifact(&coded, "model_dequantized")["file_url"]
                .as_str()
                .unwrap(),
        )
        .await,
    );
    for name in ["fc1.weight", "fc2.weight", "fc1.bias"] {
        assert_eq!(restored[name].1, dequantized[name].2, "{name}");
    }
    for (bad, needle) in [
        (
            json!([{"op":"entropy","codec":"zstd"},{"op":"prune","method":"magnitude","sparsity":0.5}]),
            "must be the last step",
        ),
        (json!([{"op":"entropy","codec":"gzip"}]), "unknown variant"),
        (
            json!([{"op":"entropy","codec":"zstd","level":42}]),
            "level must be 1–19",
        ),
    ] {
        let res = app
            .post_job(json!({"model_id": model, "pipeline": bad}))
            .await;
        assert_eq!(res.status(), 422, "{bad}");
        assert!(res.text().await.unwrap().contains(needle), "{bad}");
    }
    app.finish().await;
}

crate::on_each_backend!(
    entropy_coding_shrinks_the_file_and_reads_back,
    config_json_travels_with_the_artifact,
    every_scheme_reads_back_as_its_dequantized_copy,
    int8_file_follows_compressed_tensors,
    sparse_storage_is_small,
    bad_quantization_requests_are_refused,
);
