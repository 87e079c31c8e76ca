//! GGUF export with an importance matrix (llama.cpp's imatrix): the matrix is computed on the
//! text dataset's calibration split, weights the block linears' scale search, comes back in
//! llama.cpp's imatrix format, and the weighted file is closer to the original on the
//! evaluation split than the same type without it; llama.cpp loads it and agrees.

use reqwest::multipart;
use serde_json::{json, Value};

use crate::calibration::{finished, split_text};
use crate::helpers::{Backend, TestApp};
use crate::llama_export::llama_cpp_perplexity;
use crate::transformers::{created, fixture, folder_files, upload_folder, upload_text};
use compressd::compress::format::gguf::reader::{GgufIndex, GgufValue};

fn artifact<'a>(job: &'a Value, kind: &str) -> &'a Value {
    job["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} artifact: {job:#}"))
}

/// The perplexity compressd measures on the evaluation split for a GGUF file, imported back.
async fn perplexity_of(app: &TestApp, gguf: Vec<u8>, data: &Value) -> f64 {
    let form =
        multipart::Form::new().part("file", multipart::Part::bytes(gguf).file_name("m.gguf"));
    let res = app
        .http
        .post(app.url("/v1/models"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let model = created(res).await;
    let job = finished(
        app,
        &model,
        data,
        json!([{"op":"evaluate","window":64,"max_tokens":2048}]),
    )
    .await;
    job["metrics"]["steps"][0]["fidelity"]["before"]["perplexity"]
        .as_f64()
        .unwrap()
}

async fn an_importance_matrix_weights_the_gguf_blocks(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let model = created(upload_folder(&app, folder_files(&fixture("llama")), "llama").await).await;
    let (text, split) = split_text();
    let data = created(upload_text(&app, &text, Some(split)).await).await;
    let export = |imatrix: bool| {
        let mut step = json!({"op":"export","format":"gguf","type":"Q4_0"});
        if imatrix {
            step["imatrix"] = json!(true);
            step["calibration"] = json!({"tokens": 2048, "window": 64});
        }
        json!([{"op":"evaluate","window":64,"max_tokens":2048}, step])
    };
    let weighted = finished(&app, &model, &data, export(true)).await;
    let plain = finished(&app, &model, &data, export(false)).await;
    let report = &weighted["metrics"]["steps"][1];
    assert_eq!(report["calibration"]["window"], 64);
    let tensors = report["tensors"].as_array().unwrap();
    let marked: Vec<&str> = tensors
        .iter()
        .filter(|t| t["imatrix"] == true)
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    // Every block linear, not the embeddings (the matrix covers what multiplies inputs).
    assert_eq!(marked.len(), 14, "{marked:?}");
    assert!(!marked.contains(&"token_embd.weight"));

    // The matrix, as llama-imatrix writes it.
    let imatrix = artifact(&weighted, "imatrix");
    assert!(imatrix["file_name"]
        .as_str()
        .unwrap()
        .ends_with(".imatrix.gguf"));
    let bytes = app.download(imatrix["file_url"].as_str().unwrap()).await;
    let index = GgufIndex::parse(&bytes).unwrap();
    assert_eq!(
        index.get("general.type"),
        Some(&GgufValue::Str("imatrix".into()))
    );
    assert_eq!(
        index.get("imatrix.chunk_size").and_then(|v| v.as_u64()),
        Some(64)
    );
    let chunks = index
        .get("imatrix.chunk_count")
        .and_then(|v| v.as_u64())
        .unwrap();
    assert_eq!(chunks, report["calibration"]["windows"].as_u64().unwrap());
    assert_eq!(index.tensors.len(), 28);
    let sums = index
        .tensors
        .iter()
        .find(|t| t.name == "blk.1.ffn_down.weight.in_sum2")
        .unwrap();
    assert_eq!(
        sums.shape,
        vec![1, 128],
        "one Σx² per input column of ffn_down"
    );
    // Weight by weight in name order, each weight's sums then its count.
    let names: Vec<&str> = index.tensors.iter().map(|t| t.name.as_str()).collect();
    for pair in names.chunks(2) {
        let weight = pair[0].strip_suffix(".in_sum2").unwrap();
        assert_eq!(pair[1], format!("{weight}.counts"));
    }
    assert!(names
        .chunks(2)
        .collect::<Vec<_>>()
        .windows(2)
        .all(|w| w[0][0] < w[1][0]));

    // Closer to the original on text it never saw: the result's blocks as llama.cpp reads
    // them, against the dense model on the evaluation split.
    let kl = |job: &Value| {
        job["metrics"]["fidelity"]["versus_before"]["kl_mean"]
            .as_f64()
            .unwrap()
    };
    let (with, without) = (kl(&weighted), kl(&plain));
    eprintln!("Q4_0 KL to the original: imatrix {with:.5}, plain {without:.5}");
    assert!(with < without, "imatrix {with} vs plain {without}");
    assert!(weighted["metrics"]["fidelity"]["after_note"]
        .as_str()
        .unwrap()
        .contains("dequantized"));
    // llama.cpp reads both files and scores the fixture text about as compressd scores them
    // imported back (the same 64-token windows over the first 512 tokens). llama.cpp
    // multiplies Q4_0 blocks with activations rounded to 8 bits, which moves this random
    // model's near-uniform predictions by a few percent; the weighted file must not move
    // further from compressd's figure than the plain one does.
    let whole = json!({"by":"bytes","evaluation":[0, text.len()],"calibration":[0, 0]});
    let all_text = created(upload_text(&app, &text, Some(whole)).await).await;
    let mut gaps = Vec::new();
    for job in [&weighted, &plain] {
        let file = app.model_artifact(job).await;
        let Some(llama) = llama_cpp_perplexity(&file) else {
            break;
        };
        let ours = perplexity_of(&app, file, &all_text).await;
        let theirs = llama["perplexity"].as_f64().unwrap();
        eprintln!("llama.cpp {theirs:.3}, compressd {ours:.3}");
        gaps.push((theirs / ours - 1.0).abs());
    }
    if let [weighted_gap, plain_gap] = gaps[..] {
        assert!(
            weighted_gap < 0.1 && weighted_gap <= plain_gap + 0.01,
            "llama.cpp against compressd: imatrix {weighted_gap:.4}, plain {plain_gap:.4}"
        );
    }
    // Types whose search takes no importance are refused before queueing.
    let res = app
        .post_job(json!({"model_id": model["id"], "dataset_id": data["id"],
                          "pipeline": [{"op":"export","format":"gguf","type":"Q8_0","imatrix":true}]}))
        .await;
    assert_eq!(res.status(), 422);
    app.finish().await;
}

crate::on_each_backend!(an_importance_matrix_weights_the_gguf_blocks);
