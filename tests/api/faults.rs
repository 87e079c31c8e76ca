//! Faults: the database restarting under running jobs, an artifact disk that cannot be written
//! or is full, SIGTERM during an upload. Jobs end finished or retried, never lost or doubled,
//! no partial file is listed, and the server keeps serving.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::cluster::PrivatePg;
use crate::helpers::{
    free_port, spawn_server, stop_server, test_config, wait_ready, Backend, Limits, TestApp,
};
use crate::models::{layered, mlp};

async fn get(http: &reqwest::Client, url: &str) -> Option<Value> {
    let res = http.get(url).send().await.ok()?;
    res.status().is_success().then_some(())?;
    res.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_restart_loses_and_doubles_no_job() {
    if std::env::var("TEST_DATABASE_URL").is_err() {
        eprintln!("skipped: TEST_DATABASE_URL is not set (PostgreSQL tests are off)");
        return;
    }
    let Some(pg) = PrivatePg::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&pg.url(), dir.path().join("data"));
    config.workers = Some(2);
    config.lease_ms = 3000;
    config.test_chunk_delay_ms = 40;
    let app = compressd::startup::Application::build(config)
        .await
        .unwrap();
    let base = format!("http://{}", app.address());
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{base}/v1/models?name=m"))
        .header("content-type", "application/octet-stream")
        .body(layered(12))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let model = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut jobs = Vec::new();
    for s in [0.3, 0.4, 0.5, 0.6] {
        let res = http
            .post(format!("{base}/v1/jobs"))
            .json(&json!({"model_id": model, "pipeline": [{"op": "prune", "sparsity": s}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
        jobs.push(
            res.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = get(&http, &format!("{base}/v1/jobs/{}", jobs[0]))
            .await
            .unwrap();
        if j["status"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "no job started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    pg.ctl(&["restart"]);

    let deadline = Instant::now() + Duration::from_secs(90);
    let mut finished = Vec::new();
    for id in &jobs {
        loop {
            if let Some(j) = get(&http, &format!("{base}/v1/jobs/{id}")).await {
                if ["succeeded", "failed", "cancelled"].contains(&j["status"].as_str().unwrap()) {
                    finished.push(j);
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "job {id} never finished after the restart"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for j in &finished {
        assert_eq!(j["status"], "succeeded", "{j:#}");
        let models = j["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["kind"] == "model")
            .count();
        assert_eq!(models, 1, "exactly one result per job: {j:#}");
    }
    let all = get(&http, &format!("{base}/v1/jobs?limit=200"))
        .await
        .unwrap();
    assert_eq!(
        all["data"].as_array().unwrap().len(),
        jobs.len(),
        "no job doubled"
    );
    app.stop().await.unwrap();
}

/// The scratch disk cannot be written: the worker takes no job (instead of spending its
/// attempts failing), readiness says why, the server goes on serving; once the disk is back,
/// the job runs on its first attempt.
async fn unwritable_disk_holds_the_queue_until_it_is_back(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |c| c.max_attempts = 1).await else {
        return;
    };
    let model = app.upload_ok(mlp(), "m").await;
    let scratch = app.config.scratch_dir();
    std::fs::remove_dir_all(&scratch).unwrap();
    std::fs::write(&scratch, b"not a directory").unwrap();
    let job = app
        .submit(&model, json!([{"op": "prune", "sparsity": 0.5}]))
        .await;
    let outcome = app.worker().run_next_job().await.unwrap();
    assert_eq!(outcome, compressd::worker::Outcome::StorageUnavailable);
    let waiting = app.job(&job).await;
    assert_eq!(waiting["status"], "queued", "{waiting:#}");
    assert_eq!(waiting["attempts"], 0);
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let problem: Value = ready.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("scratch"),
        "{problem}"
    );
    assert_eq!(app.get_json("/healthz").await["status"], "ok");
    app.upload_ok(crate::models::mlp(), "still-serving").await;
    std::fs::remove_file(&scratch).unwrap();
    std::fs::create_dir_all(&scratch).unwrap();
    // Health is probed again once the last result is two seconds old.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    app.run_jobs().await;
    let done = app.job(&job).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["attempts"], 1);
    assert_eq!(
        app.http
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    app.finish().await;
}

async fn wait_job(http: &reqwest::Client, base: &str, job: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = get(http, &format!("{base}/v1/jobs/{job}")).await.unwrap();
        if j["status"] == status {
            return j;
        }
        let terminal =
            ["succeeded", "failed", "cancelled"].contains(&j["status"].as_str().unwrap());
        assert!(
            !terminal && Instant::now() < deadline,
            "wanted {status}: {j:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An upload onto a full disk (the server's file size limit hit while receiving it) is
/// answered 507 with a retry hint, not 500, and nothing is kept.
async fn an_upload_onto_a_full_disk_is_answered_507(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let port = free_port();
    let mut child = spawn_server(
        &app,
        &format!("127.0.0.1:{port}"),
        Limits::FileBlocks(2048),
        &[],
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&app.http, &base).await;
    let res = app
        .http
        .post(format!("{base}/v1/models?name=big"))
        .header("content-type", "application/octet-stream")
        .body(layered(40))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 507);
    assert!(res.headers().contains_key("retry-after"));
    let problem: Value = res.json().await.unwrap();
    assert_eq!(
        problem["type"], "urn:compressd:problem:storage-full",
        "{problem:#}"
    );
    let listed = get(&app.http, &format!("{base}/v1/models")).await.unwrap();
    assert!(listed["data"].as_array().unwrap().is_empty());
    let _ = child.kill();
    let _ = child.wait();
    app.finish().await;
}

/// A full disk (the server's file size limit hit while writing the artifact). PostgreSQL only:
/// with SQLite the database's own files are on the same full disk, which is another fault.
async fn full_disk_fails_the_job_and_the_server_recovers(backend: Backend) {
    if backend == Backend::Sqlite {
        return;
    }
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    // The model arrives through a server with room; the worker's server has none.
    let bytes = layered(4);
    let model = app.upload_ok(bytes.clone(), "big").await;
    let port = free_port();
    let blocks = (bytes.len() / 512 / 8) as u32;
    let child = spawn_server(
        &app,
        &format!("127.0.0.1:{port}"),
        Limits::FileBlocks(blocks),
        &[("COMPRESSD_WORKERS", "1"), ("COMPRESSD_MAX_ATTEMPTS", "1")],
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&app.http, &base).await;
    let submit = || {
        app.http
            .post(format!("{base}/v1/jobs"))
            .json(&json!({"model_id": model, "pipeline": [{"op": "prune", "sparsity": 0.5}], "cache": false}))
            .send()
    };
    let job = submit().await.unwrap().json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let failed = wait_job(&app.http, &base, &job, "failed").await;
    assert!(failed["artifacts"].as_array().unwrap().is_empty());
    let detail = failed["error"]["detail"].as_str().unwrap().to_lowercase();
    assert!(
        detail.contains("too large") || detail.contains("space") || detail.contains("disk"),
        "{detail}"
    );
    assert_eq!(
        get(&app.http, &format!("{base}/healthz")).await.unwrap()["status"],
        "ok"
    );
    let listed = get(&app.http, &format!("{base}/v1/models")).await.unwrap();
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        1,
        "the full server still serves"
    );
    let scratch_left = std::fs::read_dir(app.config.scratch_dir()).unwrap().count();
    assert_eq!(
        scratch_left, 0,
        "the failed attempt's scratch files are gone"
    );
    stop_server(child).await;
    // With room again, the same job runs.
    let child = spawn_server(
        &app,
        &format!("127.0.0.1:{port}"),
        Limits::None,
        &[("COMPRESSD_WORKERS", "1")],
    );
    wait_ready(&app.http, &base).await;
    let job = submit().await.unwrap().json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_job(&app.http, &base, &job, "succeeded").await;
    stop_server(child).await;
    app.finish().await;
}

/// SIGTERM while a client is still sending an upload: the server stops cleanly, the partial
/// upload leaves no model and no file.
async fn sigterm_during_an_upload_leaves_nothing_behind(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let port = free_port();
    let mut child = spawn_server(
        &app,
        &format!("127.0.0.1:{port}"),
        Limits::None,
        &[
            ("COMPRESSD_BODY_IDLE_TIMEOUT_MS", "1000"),
            ("COMPRESSD_SHUTDOWN_GRACE_SECONDS", "1"),
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&app.http, &base).await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(b"POST /v1/models?name=half HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n")
        .await
        .unwrap();
    stream.write_all(&[0u8; 65536]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tmp = app.config.tmp_dir();
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        1,
        "the upload is being received"
    );
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let exit = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(move || child.wait()),
    )
    .await
    .expect("the server exits after SIGTERM")
    .unwrap()
    .unwrap();
    assert!(exit.success(), "{exit:?}");
    drop(stream);
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "no partial file is left"
    );
    assert!(app.get_json("/v1/models").await["data"]
        .as_array()
        .unwrap()
        .is_empty());
    app.finish().await;
}

crate::on_each_backend!(
    unwritable_disk_holds_the_queue_until_it_is_back,
    an_upload_onto_a_full_disk_is_answered_507,
    full_disk_fails_the_job_and_the_server_recovers,
    sigterm_during_an_upload_leaves_nothing_behind,
);
