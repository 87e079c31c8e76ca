//! The user's path: upload, submit, follow, download.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{Backend, TestApp};
use crate::models::{mlp, read_f32, zeros};

async fn upload_prune_download(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let bytes = mlp();
    let res = app.upload(bytes.clone(), "lenet").await;
    assert_eq!(res.status(), 201);
    let model: Value = res.json().await.unwrap();
    assert_eq!(model["name"], "lenet");
    assert_eq!(model["format"], "safetensors");
    assert_eq!(model["size_bytes"], bytes.len());
    assert_eq!(model["sha256"], hex::encode(Sha256::digest(&bytes)));
    assert_eq!(model["tensor_count"], 4);
    assert_eq!(model["parameter_count"], 32 * 64 + 32 + 10 * 32 + 10);
    assert_eq!(model["metadata"]["format"], "pt");
    let model_id = model["id"].as_str().unwrap().to_owned();

    let res = app
        .post_job(json!({"model_id": model_id, "pipeline": [{"op":"prune","method":"magnitude","sparsity":0.9,"scope":"global"}]}))
        .await;
    assert_eq!(res.status(), 202);
    assert!(res.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/v1/jobs/"));
    let job: Value = res.json().await.unwrap();
    assert_eq!(job["status"], "queued");
    assert_eq!(job["progress"], 0.0);
    assert!(job["result"].is_null(), "no result before the job has run");
    assert_eq!(job["pipeline"][0]["scope"], "global");
    let job_id = job["id"].as_str().unwrap().to_owned();

    let events = tokio::spawn({
        let (http, url) = (
            app.http.clone(),
            app.url(&format!("/v1/jobs/{job_id}/events")),
        );
        async move { collect_events(http, url).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.run_jobs().await;

    let job = app.job(&job_id).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(job["progress"], 1.0);
    assert_eq!(job["attempts"], 1);
    for field in ["created_at", "started_at", "finished_at"] {
        chrono::DateTime::parse_from_rfc3339(job[field].as_str().unwrap()).expect("RFC 3339");
    }
    let summary = &job["metrics"]["summary"];
    let step = &job["metrics"]["steps"][0];
    let selected = (32 * 64 + 10 * 32) as f64;
    assert_eq!(step["selected"]["parameters"], selected as u64);
    assert_eq!(
        step["selected"]["nonzero_after"],
        (selected * 0.1).round() as u64
    );
    assert_eq!(summary["file_bytes_before"], bytes.len());
    assert_eq!(summary["file_bytes_after"], bytes.len());
    assert_eq!(step["tensors"].as_array().unwrap().len(), 4);
    let bias = step["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "fc1.bias")
        .unwrap();
    assert_eq!(bias["pruned"], false);
    assert_eq!(bias["nonzero_after"], bias["nonzero_before"]);

    // The artifact is a safetensors file any reader opens, with names, shapes and metadata kept.
    let pruned = app.model_artifact(&job).await;
    let tensors = read_f32(&pruned);
    let original = read_f32(&bytes);
    let pruned_weights: usize = ["fc1.weight", "fc2.weight"]
        .iter()
        .map(|n| zeros(&tensors[*n].2))
        .sum();
    assert_eq!(pruned_weights, (selected * 0.9).round() as usize);
    assert_eq!(tensors["fc1.bias"].2, original["fc1.bias"].2);
    for (name, (dtype, shape, _)) in &original {
        assert_eq!(
            (&tensors[name].0, &tensors[name].1),
            (dtype, shape),
            "{name}"
        );
    }
    let meta = safetensors::SafeTensors::read_metadata(&pruned).unwrap().1;
    assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
    // Survivors are unchanged and are the largest magnitudes.
    let kept_min = tensors["fc1.weight"]
        .2
        .iter()
        .chain(&tensors["fc2.weight"].2)
        .filter(|v| **v != 0.0)
        .map(|v| v.abs())
        .fold(f32::MAX, f32::min);
    for name in ["fc1.weight", "fc2.weight"] {
        for (new, old) in tensors[name].2.iter().zip(&original[name].2) {
            assert!(*new == 0.0 || new == old);
            if *new == 0.0 {
                assert!(old.abs() <= kept_min);
            }
        }
    }

    // Artifact metadata and hashes match the bytes served.
    let artifact = job["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "model")
        .unwrap();
    assert_eq!(artifact["sha256"], hex::encode(Sha256::digest(&pruned)));
    assert_eq!(artifact["size_bytes"], pruned.len());
    assert_eq!(
        &job["result"], artifact,
        "the job names its model as its result"
    );
    let report_meta = job["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "report")
        .unwrap();
    let report: Value = serde_json::from_slice(
        &app.download(report_meta["file_url"].as_str().unwrap())
            .await,
    )
    .unwrap();
    assert_eq!(report["metrics"], job["metrics"]);
    assert_eq!(report["artifacts"][0]["sha256"], artifact["sha256"]);

    // A status poll is lean: the figures and the result, without what grows with the model.
    let poll = app.get_json(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(poll["metrics"]["summary"], job["metrics"]["summary"]);
    assert_eq!(poll["result"], job["result"]);
    for heavy in ["steps", "histograms"] {
        assert!(poll["metrics"].get(heavy).is_none(), "{heavy} in a poll");
        assert!(job["metrics"][heavy].is_array(), "{heavy} with view=full");
    }
    let polled = serde_json::to_vec(&poll).unwrap().len();
    let full = serde_json::to_vec(&job).unwrap().len();
    assert!(polled < full, "poll {polled} bytes, full view {full}");
    let res = app
        .http
        .get(app.url(&format!("/v1/jobs/{job_id}?view=everything")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "an unknown view is refused");

    // Live events saw the job start, progress and finish.
    let events = tokio::time::timeout(Duration::from_secs(10), events)
        .await
        .unwrap()
        .unwrap();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"status"), "{events:?}");
    assert_eq!(names.last(), Some(&"done"), "{events:?}");
    assert!(
        events
            .iter()
            .any(|(n, d)| n == "status" && d["status"] == "succeeded"),
        "{events:?}"
    );

    app.finish().await;
}

/// Reads an SSE stream to its end: (event name, JSON data) pairs.
async fn collect_events(http: reqwest::Client, url: String) -> Vec<(String, Value)> {
    events_with_ids(http.get(url))
        .await
        .into_iter()
        .map(|(name, _, data)| (name, data))
        .collect()
}

/// Reads the SSE stream `request` answers to its end: (event name, id, JSON data).
async fn events_with_ids(request: reqwest::RequestBuilder) -> Vec<(String, String, Value)> {
    let res = request.send().await.unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    text.split("\n\n")
        .filter_map(|block| {
            let name = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let id = block.lines().find_map(|l| l.strip_prefix("id: "))?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((
                name.to_owned(),
                id.to_owned(),
                serde_json::from_str(data).unwrap(),
            ))
        })
        .collect()
}

/// Every event has an id; a client reconnecting with `Last-Event-ID` is sent only what
/// changed after that event (here: nothing but the end), and an id the server cannot read
/// counts as none.
async fn events_resume_from_the_last_event_seen(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let model = app.upload_ok(mlp(), "m").await;
    let job = app
        .submit(&model, json!([{ "op": "prune", "sparsity": 0.5 }]))
        .await;
    let url = app.url(&format!("/v1/jobs/{job}/events"));
    let first = tokio::time::timeout(Duration::from_secs(5), async {
        let mut events = app.http.get(&url).send().await.unwrap().bytes_stream();
        String::from_utf8(events.next().await.unwrap().unwrap().to_vec()).unwrap()
    })
    .await
    .unwrap();
    assert!(first.contains("id: 0:queued:0"), "{first}");
    app.run_jobs().await;

    let whole = events_with_ids(app.http.get(&url)).await;
    let names: Vec<&str> = whole.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["status", "done"], "{whole:?}");
    let (_, last_id, _) = whole.last().unwrap();
    assert_eq!(last_id, "1:succeeded:1");

    let resumed = events_with_ids(app.http.get(&url).header("last-event-id", last_id)).await;
    let names: Vec<&str> = resumed.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["done"], "{resumed:?}");
    assert_eq!(resumed[0].2["status"], "succeeded");

    let from_queued =
        events_with_ids(app.http.get(&url).header("last-event-id", "0:queued:0")).await;
    assert_eq!(from_queued[0].2["status"], "succeeded", "{from_queued:?}");
    let unreadable = events_with_ids(app.http.get(&url).header("last-event-id", "x:y")).await;
    assert_eq!(unreadable.len(), 2, "{unreadable:?}");
    app.finish().await;
}

/// On PostgreSQL the database announces each change of a job: an event stream hears of it at
/// once, not at its next read (here a minute away), whichever process moved the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_announces_job_changes_to_event_streams() {
    let Some(app) = TestApp::spawn(Backend::Postgres, |c| c.events_poll_ms = Some(60_000)).await
    else {
        return;
    };
    let model = app.upload_ok(mlp(), "m").await;
    let job = app
        .submit(&model, json!([{ "op": "prune", "sparsity": 0.5 }]))
        .await;
    let url = app.url(&format!("/v1/jobs/{job}/events"));
    let events = tokio::spawn(events_with_ids(app.http.get(&url)));
    // The stream has read the queued job; from here only an announcement wakes it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.run_jobs().await;
    let events = tokio::time::timeout(Duration::from_secs(10), events)
        .await
        .expect("the stream heard the job finish well before its next read")
        .unwrap();
    let names: Vec<&str> = events.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names.last(), Some(&"done"), "{events:?}");
    assert_eq!(events.last().unwrap().2["status"], "succeeded");
    app.finish().await;
}

async fn downloads_support_ranges_and_etags(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let bytes = mlp();
    let id = app.upload_ok(bytes.clone(), "m").await;
    let url = app.url(&format!("/v1/models/{id}/file"));

    let res = app.http.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-length"],
        bytes.len().to_string().as_str()
    );
    assert_eq!(res.headers()["accept-ranges"], "bytes");
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", hex::encode(Sha256::digest(&bytes))));
    assert_eq!(res.bytes().await.unwrap().as_ref(), bytes.as_slice());

    let res = app
        .http
        .get(&url)
        .header("range", "bytes=8-15")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(
        res.headers()["content-range"],
        format!("bytes 8-15/{}", bytes.len()).as_str()
    );
    assert_eq!(res.bytes().await.unwrap().as_ref(), &bytes[8..16]);

    let res = app
        .http
        .get(&url)
        .header("range", "bytes=-5")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.bytes().await.unwrap().as_ref(),
        &bytes[bytes.len() - 5..]
    );

    let res = app
        .http
        .get(&url)
        .header("range", format!("bytes={}-", bytes.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 416);
    assert_eq!(
        res.headers()["content-range"],
        format!("bytes */{}", bytes.len()).as_str()
    );

    let res = app
        .http
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);

    app.finish().await;
}

async fn models_list_paginate_and_delete(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.upload_ok(mlp(), &format!("m{i}")).await);
    }
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let path = match &next {
            Some(after) => format!("/v1/models?limit=2&after={after}"),
            None => "/v1/models?limit=2".to_owned(),
        };
        let page = app.get_json(&path).await;
        for m in page["data"].as_array().unwrap() {
            assert!(m.get("tensors").is_none(), "lists leave tensors out");
            seen.push(m["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(n) => next = Some(n.to_owned()),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, each once");

    let res = app
        .http
        .get(app.url("/v1/models?limit=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.headers()["content-type"], "application/problem+json");

    let one = app.get_json(&format!("/v1/models/{}", ids[0])).await;
    assert_eq!(one["tensors"].as_array().unwrap().len(), 4);
    let fc1 = one["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "fc1.weight");
    assert_eq!(
        fc1,
        Some(&json!({"name":"fc1.weight","dtype":"F32","shape":[32,64]}))
    );

    let res = app
        .http
        .delete(app.url(&format!("/v1/models/{}", ids[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = app
        .http
        .get(app.url(&format!("/v1/models/{}", ids[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = app
        .http
        .get(app.url(&format!("/v1/models/{}/file", ids[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    // The five uploads had the same bytes: one file, kept while any model names it.
    let files = || {
        std::fs::read_dir(app.config.data_dir.join("blobs/tenants/local/sha256"))
            .unwrap()
            .count()
    };
    assert_eq!(files(), 1, "identical bytes are stored once");
    for id in &ids[1..] {
        let res = app
            .http
            .delete(app.url(&format!("/v1/models/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
    }
    assert_eq!(files(), 0, "the last delete removed the shared file");
    app.finish().await;
}

async fn operations_endpoints_answer(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    assert_eq!(app.get_json("/healthz").await["status"], "ok");
    let ready = app.get_json("/readyz").await;
    assert_eq!(
        ready["store"],
        if backend == Backend::Sqlite {
            "sqlite"
        } else {
            "postgres"
        }
    );

    let id = app.upload_ok(mlp(), "m").await;
    app.submit(
        &id,
        json!([{"op":"prune","method":"magnitude","threshold":0.1}]),
    )
    .await;
    app.run_jobs().await;
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "compressd_jobs{status=\"succeeded\"} 1",
        "compressd_jobs{status=\"queued\"} 0",
        "compressd_job_duration_seconds_bucket",
        "compressd_upload_bytes_total",
        "compressd_http_request_duration_seconds_bucket",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }

    let res = app
        .http
        .get(app.url("/v1/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["status"], 404);
    assert!(problem["type"]
        .as_str()
        .unwrap()
        .starts_with("urn:compressd:problem:"));
    let res = app.http.put(app.url("/v1/jobs")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    app.finish().await;
}

crate::on_each_backend!(
    upload_prune_download,
    events_resume_from_the_last_event_seen,
    downloads_support_ranges_and_etags,
    models_list_paginate_and_delete,
    operations_endpoints_answer,
);
