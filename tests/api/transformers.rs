//! Hugging Face folders through the API: uploaded as parts or a tar, sharded or not, checked
//! against their config; text datasets; evaluate and compression jobs that report perplexity,
//! KL and top-1 agreement (decoders) or embedding agreement (encoders) before and after, equal
//! to what PyTorch computes; the compressed folder back, file by file and as one tar.

use std::path::{Path, PathBuf};

use reqwest::multipart;
use serde_json::{json, Value};

use crate::helpers::{Backend, TestApp};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/transformers")
        .join(name)
}

/// A folder's files as (path inside it, bytes), without the test's own references.
pub fn folder_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for path in crate::helpers::files_under(dir) {
        let rel = path
            .strip_prefix(dir)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if rel == "reference.safetensors" || rel == "perplexity.json" {
            continue;
        }
        out.push((rel, std::fs::read(&path).unwrap()));
    }
    out.sort();
    out
}

pub async fn upload_folder(
    app: &TestApp,
    files: Vec<(String, Vec<u8>)>,
    name: &str,
) -> reqwest::Response {
    let mut form = multipart::Form::new().text("name", name.to_owned());
    for (path, bytes) in files {
        form = form.part("files", multipart::Part::bytes(bytes).file_name(path));
    }
    app.http
        .post(app.url("/v1/models"))
        .multipart(form)
        .send()
        .await
        .unwrap()
}

pub async fn upload_text(app: &TestApp, text: &[u8], split: Option<Value>) -> reqwest::Response {
    let mut form = multipart::Form::new().text("name", "text").part(
        "file",
        multipart::Part::bytes(text.to_vec()).file_name("text.txt"),
    );
    if let Some(s) = split {
        form = form.text("split", s.to_string());
    }
    app.http
        .post(app.url("/v1/datasets"))
        .multipart(form)
        .send()
        .await
        .unwrap()
}

pub async fn created(res: reqwest::Response) -> Value {
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{body:#}");
    body
}

async fn refused(res: reqwest::Response, needle: &str) {
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert!(status.is_client_error(), "{status}: {body:#}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains(needle), "{needle:?} not in {detail:?}");
}

/// The whole fixture text evaluates; nothing calibrates.
fn whole_text() -> (Vec<u8>, Value) {
    let text = std::fs::read(fixture("text.txt")).unwrap();
    let split = json!({"by":"bytes","evaluation":[0, text.len()],"calibration":[0, 0]});
    (text, split)
}

fn pytorch() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("llama/perplexity.json")).unwrap())
        .unwrap()
}

fn close(a: &Value, b: &Value, tol: f64, what: &str) {
    let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
    assert!((a / b - 1.0).abs() < tol, "{what}: {a} vs PyTorch {b}");
}

/// The Llama folder, pruned to half its block weights by magnitude: the job's before/after
/// perplexity, KL and top-1 agreement equal PyTorch's on the same windows, and the result comes
/// back as a folder.
async fn a_llama_folder_is_pruned_and_measured_like_pytorch(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let model = created(upload_folder(&app, folder_files(&fixture("llama")), "llama").await).await;
    assert_eq!(model["format"], "hf");
    assert_eq!(model["transformer"]["family"], "decoder");
    assert_eq!(model["transformer"]["runs"], true);
    let paths: Vec<&str> = model["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["generation_config.json", "tokenizer.json"]);
    let (text, split) = whole_text();
    let data = created(upload_text(&app, &text, Some(split)).await).await;
    assert_eq!(data["summary"]["kind"], "text");
    let job = app
        .submit_with_dataset(
            &model,
            &data,
            json!([
                {"op":"prune","sparsity":0.5},
                {"op":"evaluate","window":64,"max_tokens":512}
            ]),
        )
        .await;
    app.run_jobs().await;
    let job = app.job(&job).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    let want = pytorch();
    let f = &job["metrics"]["fidelity"];
    assert_eq!(f["kind"], "decoder");
    assert_eq!(
        f["protocol"],
        json!({"window": 64, "stride": 64, "bos": false})
    );
    assert_eq!(f["before"]["predictions"], want["predictions"]);
    close(
        &f["before"]["perplexity"],
        &want["perplexity"],
        1e-5,
        "perplexity before",
    );
    close(
        &f["after"]["perplexity"],
        &want["perplexity_pruned"],
        1e-5,
        "perplexity after",
    );
    close(&f["versus_before"]["kl_mean"], &want["kl_mean"], 1e-4, "KL");
    assert_eq!(f["versus_before"]["top1_agreement"], want["top1_agreement"]);
    assert!(job["metrics"]["summary"]["perplexity_after"]
        .as_f64()
        .is_some());
    // The default selection is the blocks' linear layers: embeddings and norms untouched.
    let pruned: Vec<&str> = job["metrics"]["steps"][0]["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["sparsity_after"].as_f64().unwrap() > 0.4)
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(pruned.len(), 14, "{pruned:?}");
    assert!(pruned
        .iter()
        .all(|n| n.starts_with("model.layers.") && n.ends_with("_proj.weight")));
    let names: Vec<&str> = job["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["file_name"].as_str().unwrap())
        .collect();
    for wanted in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "generation_config.json",
        "llama.tar",
    ] {
        assert!(names.contains(&wanted), "{wanted} not in {names:?}");
    }
    let tar = job["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "model_folder")
        .unwrap();
    assert_eq!(&job["result"], tar, "a folder's result is the whole folder");
    let bytes = app.download(tar["file_url"].as_str().unwrap()).await;
    let mut archive = tar::Archive::new(bytes.as_slice());
    let mut inside: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    inside.sort();
    assert_eq!(
        inside,
        [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json"
        ]
    );
    app.finish().await;
}

/// The same folder as a tar stream, and sharded behind an index: the same model.
async fn tar_and_sharded_uploads_make_the_same_model(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let files = folder_files(&fixture("llama"));
    let mut builder = tar::Builder::new(Vec::new());
    for (path, bytes) in &files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, format!("llama/{path}"), bytes.as_slice())
            .unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let res = app
        .http
        .post(app.url("/v1/models?name=tarred"))
        .header("content-type", "application/x-tar")
        .body(tar.clone())
        .send()
        .await
        .unwrap();
    let tarred = created(res).await;
    // The same tar in two parts of a resumable upload, completed as a folder.
    let upload: Value = app
        .http
        .post(app.url("/v1/uploads"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = upload["id"].as_str().unwrap();
    let half = tar.len() / 2;
    for (n, part) in [(1, &tar[..half]), (2, &tar[half..])] {
        let res = app
            .http
            .put(app.url(&format!("/v1/uploads/{id}/parts/{n}")))
            .body(part.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&tar));
    let res = app
        .http
        .post(app.url(&format!("/v1/uploads/{id}/complete")))
        .json(&json!({"sha256": sha, "as": "folder", "name": "resumed"}))
        .send()
        .await
        .unwrap();
    let resumed = created(res).await;
    assert_eq!(resumed["sha256"], tarred["sha256"]);
    assert_eq!(resumed["files"], tarred["files"]);
    let sharded = created(upload_folder(&app, shard(&files), "sharded").await).await;
    let plain = created(upload_folder(&app, files, "plain").await).await;
    assert_eq!(tarred["sha256"], plain["sha256"]);
    assert_eq!(tarred["files"], plain["files"]);
    assert_eq!(sharded["parameter_count"], plain["parameter_count"]);
    assert_eq!(sharded["tensor_count"], plain["tensor_count"]);
    let params: u64 = plain["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .product::<u64>()
        })
        .sum();
    assert_eq!(plain["parameter_count"], params);
    app.finish().await;
}

/// model.safetensors cut into two shards and an index, as save_pretrained shards a large model.
pub fn shard(files: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    let weights = &files
        .iter()
        .find(|(p, _)| p == "model.safetensors")
        .unwrap()
        .1;
    let st = safetensors::SafeTensors::deserialize(weights).unwrap();
    let mut names: Vec<String> = st.names().into_iter().cloned().collect();
    names.sort();
    let (a, b) = names.split_at(names.len() / 2);
    let mut out: Vec<(String, Vec<u8>)> = files
        .iter()
        .filter(|(p, _)| p != "model.safetensors")
        .cloned()
        .collect();
    let mut map = serde_json::Map::new();
    for (i, part) in [a, b].iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let views: Vec<(String, safetensors::tensor::TensorView)> = part
            .iter()
            .map(|n| (n.clone(), st.tensor(n).unwrap()))
            .collect();
        out.push((file.clone(), safetensors::serialize(views, &None).unwrap()));
        for n in part.iter() {
            map.insert(n.clone(), file.clone().into());
        }
    }
    out.push((
        "model.safetensors.index.json".into(),
        json!({"metadata": {}, "weight_map": map})
            .to_string()
            .into_bytes(),
    ));
    out
}

/// Folders that do not hold together are refused, naming the file and the tensor; nothing is
/// stored.
async fn folders_that_do_not_fit_are_refused(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let files = folder_files(&fixture("llama"));
    let without = |name: &str| {
        files
            .iter()
            .filter(|(p, _)| p != name)
            .cloned()
            .collect::<Vec<_>>()
    };
    refused(
        upload_folder(&app, without("config.json"), "x").await,
        "no config.json",
    )
    .await;
    let sharded = shard(&files);
    let missing_shard: Vec<_> = sharded
        .iter()
        .filter(|(p, _)| p != "model-00002-of-00002.safetensors")
        .cloned()
        .collect();
    refused(
        upload_folder(&app, missing_shard, "x").await,
        "names model-00002-of-00002.safetensors, which the upload does not hold",
    )
    .await;
    let truncated: Vec<_> = sharded
        .iter()
        .map(|(p, b)| {
            if p.starts_with("model-00001") {
                (p.clone(), b[..b.len() - 100].to_vec())
            } else {
                (p.clone(), b.clone())
            }
        })
        .collect();
    refused(
        upload_folder(&app, truncated, "x").await,
        "model-00001-of-00002.safetensors",
    )
    .await;
    let mut config: Value =
        serde_json::from_slice(&files.iter().find(|(p, _)| p == "config.json").unwrap().1).unwrap();
    config["intermediate_size"] = 96.into();
    let mut wrong = without("config.json");
    wrong.push(("config.json".into(), config.to_string().into_bytes()));
    refused(upload_folder(&app, wrong, "x").await, "tensor 'model.layers.0.mlp.gate_proj.weight' has shape [128, 64]; the config asks for [96, 64]").await;
    let mut bad_tokenizer = without("tokenizer.json");
    bad_tokenizer.push(("tokenizer.json".into(), b"{\"model\":{}}".to_vec()));
    refused(
        upload_folder(&app, bad_tokenizer, "x").await,
        "tokenizer.json does not parse",
    )
    .await;
    let mut pickled = without("model.safetensors");
    pickled.push(("pytorch_model.bin".into(), vec![0x80, 0x02, 0x7d]));
    refused(
        upload_folder(&app, pickled, "x").await,
        "PyTorch checkpoint",
    )
    .await;
    let mut escaping = files.clone();
    escaping.push(("../etc/passwd".into(), b"x".to_vec()));
    refused(
        upload_folder(&app, escaping, "x").await,
        "is not a path inside a folder",
    )
    .await;
    // Single files in formats compressd does not read.
    for (bytes, name, needle) in [
        (vec![0x80u8, 0x04, 0x95, 0x00], "model.pt", "pickle"),
        (b"PK\x03\x04rest".to_vec(), "model.pt", "zip archive"),
        (vec![0x08, 0x07, 0x12, 0x07], "model.onnx", "ONNX"),
    ] {
        let form =
            multipart::Form::new().part("file", multipart::Part::bytes(bytes).file_name(name));
        let res = app
            .http
            .post(app.url("/v1/models"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        refused(res, needle).await;
    }
    refused(
        upload_text(&app, b"caf\xe9 au lait\n", None).await,
        "not UTF-8",
    )
    .await;
    let models = app.get_json("/v1/models").await;
    assert!(models["data"].as_array().unwrap().is_empty(), "{models:#}");
    let blobs = crate::helpers::files_under(&app.config.data_dir.join("blobs/tenants"));
    assert!(blobs.is_empty(), "{blobs:?}");
    app.finish().await;
}

/// The BERT encoder quantized to int8: its sentence embeddings stay close to the original's
/// (cosine, nearest neighbours, pairwise ranks) and the report says so; a decoder-only step
/// order is refused for it before queueing, as a tensor dataset is.
async fn a_bert_encoder_is_quantized_and_its_embeddings_compared(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let model = created(upload_folder(&app, folder_files(&fixture("bert")), "bert").await).await;
    assert_eq!(model["transformer"]["family"], "encoder");
    let (text, split) = whole_text();
    let data = created(upload_text(&app, &text, Some(split)).await).await;
    let job = app
        .submit_with_dataset(
            &model,
            &data,
            json!([{"op":"quantize","scheme":"int8","granularity":"channel"}]),
        )
        .await;
    app.run_jobs().await;
    let job = app.job(&job).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    let v = &job["metrics"]["fidelity"]["versus_before"];
    assert_eq!(job["metrics"]["fidelity"]["kind"], "encoder");
    assert!(v["cosine_mean"].as_f64().unwrap() > 0.999, "{v:#}");
    assert!(v["cosine_min"].as_f64().unwrap() > 0.99, "{v:#}");
    assert!(v["spearman"].as_f64().unwrap() > 0.99, "{v:#}");
    assert!(
        v["nearest_neighbour_agreement"].as_f64().unwrap() > 0.8,
        "{v:#}"
    );
    assert_eq!(job["metrics"]["fidelity"]["before"]["sequences"], 220);
    let report = app
        .http
        .get(app.url(&format!("/v1/jobs/{}/report", job["id"].as_str().unwrap())))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        report.contains("embedding cosine to the original, mean"),
        "the summary's fidelity rows"
    );
    assert!(
        report.contains("Relative weight error per layer"),
        "the per-layer error chart"
    );
    let res = app
        .post_job(json!({"model_id": model["id"], "dataset_id": data["id"], "pipeline": [{"op":"train","epochs":1}]}))
        .await;
    refused(
        res,
        "transformer models take evaluate and the weight-only steps",
    )
    .await;
    app.finish().await;
}

/// The Llama fixture as llama.cpp's converter writes it (GGUF, q/k rows permuted, the
/// vocabulary and merges in the metadata): imported with its config and a rebuilt tokenizer,
/// it evaluates to PyTorch's perplexity on the Hugging Face weights, token for token.
async fn a_gguf_model_runs_like_its_hugging_face_original(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let gguf = std::fs::read(fixture("llama.gguf")).unwrap();
    let form = multipart::Form::new().part(
        "file",
        multipart::Part::bytes(gguf.clone()).file_name("llama.gguf"),
    );
    let model = created(
        app.http
            .post(app.url("/v1/models"))
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(model["format"], "gguf");
    assert_eq!(model["name"], "llama");
    assert_eq!(model["transformer"]["runs"], true, "{model:#}");
    assert_eq!(model["config"]["num_key_value_heads"], 2);
    assert_eq!(model["config"]["tie_word_embeddings"], true);
    assert!(model["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "model.layers.1.self_attn.k_proj.weight"));
    let (text, split) = whole_text();
    let data = created(upload_text(&app, &text, Some(split)).await).await;
    let job = app
        .submit_with_dataset(
            &model,
            &data,
            json!([{"op":"evaluate","window":64,"max_tokens":512}]),
        )
        .await;
    app.run_jobs().await;
    let job = app.job(&job).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    let f = &job["metrics"]["steps"][0]["fidelity"];
    let want = pytorch();
    assert_eq!(f["before"]["predictions"], want["predictions"]);
    close(
        &f["before"]["perplexity"],
        &want["perplexity"],
        1e-5,
        "perplexity",
    );
    // A header that lies about its sizes is refused before anything is allocated for it.
    let mut forged = gguf[..64].to_vec();
    forged[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    let form =
        multipart::Form::new().part("file", multipart::Part::bytes(forged).file_name("x.gguf"));
    refused(
        app.http
            .post(app.url("/v1/models"))
            .multipart(form)
            .send()
            .await
            .unwrap(),
        "the GGUF file",
    )
    .await;
    let mut other = gguf.clone();
    let at = other.windows(5).position(|w| w == b"llama").unwrap();
    other[at..at + 5].copy_from_slice(b"gemma");
    let form =
        multipart::Form::new().part("file", multipart::Part::bytes(other).file_name("x.gguf"));
    refused(
        app.http
            .post(app.url("/v1/models"))
            .multipart(form)
            .send()
            .await
            .unwrap(),
        "architecture is 'gemma'",
    )
    .await;
    app.finish().await;
}

crate::on_each_backend!(
    a_gguf_model_runs_like_its_hugging_face_original,
    a_llama_folder_is_pruned_and_measured_like_pytorch,
    tar_and_sharded_uploads_make_the_same_model,
    folders_that_do_not_fit_are_refused,
    a_bert_encoder_is_quantized_and_its_embeddings_compared,
);
