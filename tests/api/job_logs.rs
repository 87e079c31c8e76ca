//! A job's own log over the API: the worker's word on each attempt and what the job's process
//! wrote, in order, numbered, and followed while the job runs.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{Backend, TestApp};
use crate::models::{f32_tensor, mlp, safetensors};

async fn log(app: &TestApp, job: &str, query: &str) -> reqwest::Response {
    app.http
        .get(app.url(&format!("/v1/jobs/{job}/logs{query}")))
        .send()
        .await
        .unwrap()
}

async fn a_job_log_tells_each_attempt(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |c| c.workers = Some(1)).await else {
        return;
    };
    let model = app.upload_ok(mlp(), "mlp").await;
    let job = app
        .submit(&model, json!([{ "op": "prune", "sparsity": 0.5 }]))
        .await;

    // Followed from submission on, the answer ends once the job has ended.
    let res = log(&app, &job, "?follow=true").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
    let text = res.text().await.unwrap();
    assert_eq!(app.job(&job).await["status"], "succeeded");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].contains("[attempt 1] attempt 1 of 3 started on worker"),
        "{text}"
    );
    assert!(
        text.contains("step 1/1 prune started") && text.contains("step 1/1 prune finished in"),
        "the job process's own lines are there: {text}"
    );
    assert!(
        lines.last().unwrap().contains("attempt 1 succeeded in"),
        "{text}"
    );

    // JSON lines number themselves; `after` gives only what came later.
    let res = log(&app, &job, "?format=json").await;
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let entries: Vec<Value> = res
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), lines.len());
    let seqs: Vec<i64> = entries.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    assert!(entries
        .iter()
        .all(|e| e["attempt"] == 1 && e["at"].is_string()));
    let before_last = seqs.len() - 1;
    let rest = log(&app, &job, &format!("?format=json&after={before_last}"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(rest.lines().count(), 1, "{rest}");

    let bad = log(&app, &job, "?format=xml").await;
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.headers()["content-type"], "application/problem+json");
    assert_eq!(
        log(&app, "0193d6f0-0000-7000-8000-000000000000", "")
            .await
            .status(),
        404
    );
    app.finish().await;
}

/// A job that fails says why in its log, and the log goes with the job when it is deleted.
async fn a_failed_job_says_why_and_its_log_goes_with_it(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |c| c.workers = Some(1)).await else {
        return;
    };
    let nan = safetensors(
        &[f32_tensor("w", &[2, 2], &[1.0, f32::NAN, 0.5, 0.25])],
        None,
    );
    let model = app.upload_ok(nan, "nan").await;
    let job = app
        .submit(&model, json!([{ "op": "prune", "sparsity": 0.5 }]))
        .await;
    app.wait_for(&job, "failed", Duration::from_secs(60)).await;
    let text = log(&app, &job, "").await.text().await.unwrap();
    let last = text.lines().last().unwrap();
    assert!(
        last.contains("attempt 1 failed:") && last.contains("'w'"),
        "{text}"
    );
    let res = app
        .http
        .delete(app.url(&format!("/v1/jobs/{job}")))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    assert_eq!(log(&app, &job, "").await.status(), 404);
    app.finish().await;
}

crate::on_each_backend!(
    a_job_log_tells_each_attempt,
    a_failed_job_says_why_and_its_log_goes_with_it,
);
