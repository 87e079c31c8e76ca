//! What one client cannot do to the others or to the operator: hold up their webhooks, pin
//! the server's threads with slow uploads, read every tenant's counts; and what a killed
//! process leaves behind, which the orphan sweep removes.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::helpers::{files_under, spawn_server, Backend, Limits, TestApp};
use crate::models::{f32_tensor, mlp, safetensors, values};
use crate::tenants::{spawn, tenant};

/// A receiver that answers after `delay`, and reports when each delivery arrived.
async fn receiver(delay: Duration) -> (String, tokio::sync::mpsc::UnboundedReceiver<Instant>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let tx = tx.clone();
            async move {
                let _ = tx.send(Instant::now());
                tokio::time::sleep(delay).await;
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

/// Tenant A's receiver takes 3 s per delivery and A has eight due; tenant B's one delivery
/// still arrives at once (deliveries used to go one at a time, for every tenant).
async fn a_slow_webhook_receiver_holds_up_only_its_tenant(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let a = tenant(&app, "alpha", json!({})).await;
    let b = tenant(&app, "beta", json!({})).await;
    let (slow, _slow_rx) = receiver(Duration::from_secs(3)).await;
    let (fast, mut fast_rx) = receiver(Duration::ZERO).await;
    let job = |http: &reqwest::Client, model: &str, url: &str| {
        http.post(app.url("/v1/jobs"))
            .json(&json!({"model_id": model, "pipeline": [{"op":"prune","sparsity":0.5}], "webhook_url": url, "cache": false}))
            .send()
    };
    let upload = |http: &reqwest::Client| {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(mlp()).file_name("m.safetensors"),
        );
        http.post(app.url("/v1/models")).multipart(form).send()
    };
    let model_a: Value = upload(&a.http).await.unwrap().json().await.unwrap();
    let model_b: Value = upload(&b.http).await.unwrap().json().await.unwrap();
    for _ in 0..8 {
        let res = job(&a.http, model_a["id"].as_str().unwrap(), &slow)
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
    }
    app.run_jobs().await;
    // A's deliveries are under way; B's job finishes now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = job(&b.http, model_b["id"].as_str().unwrap(), &fast)
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let finished = Instant::now();
    app.run_jobs().await;
    let arrived = tokio::time::timeout(Duration::from_secs(20), fast_rx.recv())
        .await
        .expect("B's delivery")
        .unwrap();
    assert!(
        arrived.duration_since(finished) < Duration::from_secs(2),
        "B waited {:?} behind A's slow receiver",
        arrived.duration_since(finished)
    );
    app.finish().await;
}

/// What a process killed at the wrong moment leaves: a stored file no row names, an
/// artifact folder of an attempt that never recorded it, a scratch folder. The orphan sweep
/// removes all three and nothing that a row names or a live attempt writes.
async fn the_orphan_sweep_removes_what_killed_processes_left(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let model = app.upload_ok(mlp(), "kept").await;
    let job = app
        .submit(&model, json!([{"op":"prune","sparsity":0.5}]))
        .await;
    app.run_jobs().await;
    let blobs = app.config.blob_dir();
    let before = files_under(&blobs);
    let dead_job = uuid::Uuid::now_v7();
    let orphans = [
        blobs.join(
            "tenants/local/sha256/0000000000000000000000000000000000000000000000000000000000000000",
        ),
        blobs.join(format!(
            "artifacts/{dead_job}/{}/m.compressed.safetensors",
            uuid::Uuid::new_v4().simple()
        )),
    ];
    for path in &orphans {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"left behind").unwrap();
    }
    let scratch = app
        .config
        .scratch_dir()
        .join(format!("{dead_job}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::write(scratch.join("step-0.safetensors"), b"half written").unwrap();

    let sweeper = compressd::sweeper::Sweeper {
        store: app.app.as_ref().unwrap().store().clone(),
        blobs: std::sync::Arc::new(compressd::store::LocalBlobs::new(&blobs).unwrap()),
        tmp_dir: app.config.tmp_dir(),
        scratch_dir: app.config.scratch_dir(),
        orphans_every: Duration::from_secs(3600),
        settle: Duration::from_secs(300),
    };
    let removed = sweeper.sweep_orphans(Duration::ZERO).await.unwrap();
    assert_eq!(removed, 3);
    for path in &orphans {
        assert!(!path.exists(), "{} survived", path.display());
    }
    assert!(!scratch.exists());
    let mut after = files_under(&blobs);
    let mut before = before;
    after.sort();
    before.sort();
    assert_eq!(after, before, "every file a row names is still there");
    assert_eq!(app.job(&job).await["status"], "succeeded");
    app.model_artifact(&app.job(&job).await).await;
    app.finish().await;
}

/// 100 uploads that each trickle a byte and then stall hold no thread of the server's (each
/// used to pin a blocking thread for its whole life): its thread count stays small, and
/// other requests are answered meanwhile.
async fn trickling_uploads_pin_no_threads(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let port = portpicker();
    let mut child = spawn_server(
        &app,
        &format!("127.0.0.1:{port}"),
        Limits::None,
        &[
            ("COMPRESSD_WORKERS", "0"),
            ("COMPRESSD_BODY_IDLE_TIMEOUT_MS", "60000"),
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let threads = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .unwrap()
            .trim()
            .parse::<usize>()
            .unwrap()
    };
    let idle = threads();
    let mut held = Vec::new();
    for _ in 0..100 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(b"POST /v1/models?name=slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\nx")
            .await
            .unwrap();
        held.push(s);
    }
    // Opening each upload's spool file may briefly wake blocking threads; tokio lets an idle
    // one go after 10 s, whereas a thread pinned by a stalled body would stay for the body's
    // 60 s timeout, so the count must fall back while all 100 uploads are still held.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settle = Instant::now() + Duration::from_secs(25);
    let mut busy = threads();
    while busy >= idle + 20 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(500)).await;
        busy = threads();
    }
    assert!(
        busy < idle + 20,
        "{busy} threads with 100 stalled uploads, {idle} idle"
    );
    let started = Instant::now();
    let res = reqwest::Client::new()
        .post(format!("{base}/v1/models?name=quick"))
        .header("content-type", "application/octet-stream")
        .body(mlp())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(held);
    let _ = child.kill();
    let _ = child.wait();
    app.finish().await;
}

fn portpicker() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// /metrics counts every tenant's jobs: a tenant's key does not read it, the admin key does,
/// and so does anyone on the metrics listener (which only the cluster reaches).
async fn metrics_are_for_the_operator(backend: Backend) {
    let port = portpicker();
    let Some(app) = TestApp::spawn(backend, |c| {
        c.admin_key = Some("admin-secret-for-tests".into());
        c.metrics_bind = Some(format!("127.0.0.1:{port}"));
    })
    .await
    else {
        return;
    };
    let t = tenant(&app, "alpha", json!({})).await;
    let res = t.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = app
        .http
        .get(app.url("/metrics"))
        .bearer_auth("admin-secret-for-tests")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("compressd_jobs"));
    let scraped = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(scraped.text().await.unwrap().contains("compressd_jobs"));
    let ready = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let other = reqwest::get(format!("http://127.0.0.1:{port}/v1/models"))
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        404,
        "the metrics listener serves nothing else"
    );
    app.finish().await;
}

/// A model of 3 000 tensors: a page of models does not carry their list, a page of jobs does
/// not carry per-tensor metrics, and the report's density chart shows the layers that
/// changed most rather than 3 000 bars.
async fn lists_and_reports_stay_small_for_many_tensors(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let tensors: Vec<_> = (0..3000)
        .map(|i| {
            f32_tensor(
                Box::leak(format!("layer{i}.weight").into_boxed_str()),
                &[4, 4],
                &values(16, i),
            )
        })
        .collect();
    let model = app.upload_ok(safetensors(&tensors, None), "wide").await;
    let job = app
        .submit(&model, json!([{"op":"prune","sparsity":0.5}]))
        .await;
    app.run_jobs().await;
    let page = app
        .http
        .get(app.url("/v1/models?limit=2"))
        .send()
        .await
        .unwrap();
    let page = page.text().await.unwrap();
    assert!(
        page.len() < 4096,
        "a page of one model took {} bytes",
        page.len()
    );
    let jobs = app.http.get(app.url("/v1/jobs")).send().await.unwrap();
    let jobs = jobs.text().await.unwrap();
    assert!(
        jobs.len() < 4096,
        "a page of one job took {} bytes",
        jobs.len()
    );
    let one = app.job(&job).await;
    assert_eq!(
        one["metrics"]["steps"][0]["tensors"]
            .as_array()
            .unwrap()
            .len(),
        3000
    );
    let report = app
        .http
        .get(app.url(&format!("/v1/jobs/{job}/report")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        report.contains("64 of 3000 that changed most"),
        "the density chart's title"
    );
    assert!(report.len() < 2 << 20, "a {} byte report", report.len());
    app.finish().await;
}

crate::on_each_backend!(
    a_slow_webhook_receiver_holds_up_only_its_tenant,
    the_orphan_sweep_removes_what_killed_processes_left,
    trickling_uploads_pin_no_threads,
    metrics_are_for_the_operator,
    lists_and_reports_stay_small_for_many_tensors,
);
