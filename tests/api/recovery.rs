//! Crashes, expired leases, shutdowns and several servers on one database: every job ends
//! exactly once.

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use compressd::store::Finish;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{spawn_server, stop_server, Backend, Limits, TestApp};
use crate::models::{layered, mlp};

const PRUNE: &str = r#"[{"op":"prune","method":"magnitude","sparsity":0.5,"scope":"global"}]"#;

fn pipeline() -> Value {
    serde_json::from_str(PRUNE).unwrap()
}

fn model_artifacts(job: &Value) -> usize {
    job["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "model")
        .count()
}

/// A worker that claimed a job and vanished: its lease expires, another worker finishes the
/// job, and the vanished worker's late answers are discarded.
async fn expired_lease_is_taken_over_and_fenced(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |c| c.lease_ms = 400).await else {
        return;
    };
    let model = app.upload_ok(mlp(), "m").await;
    let job = app.submit(&model, pipeline()).await;
    let store = app.app.as_ref().unwrap().store().clone();
    let stale = store
        .claim_job("vanished-worker", 400, 8)
        .await
        .unwrap()
        .expect("claimed");
    assert!(app.run_jobs().await.is_empty(), "a live lease is not taken");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let outcomes = app.run_jobs().await;
    assert_eq!(outcomes.len(), 1);
    let done = app.job(&job).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["attempts"], 2);
    assert_eq!(model_artifacts(&done), 1);
    assert_ne!(app.worker_of(&job).await, "vanished-worker");
    assert!(
        done.get("worker").is_none(),
        "tenants are not told which host ran a job"
    );

    let id = Uuid::parse_str(&job).unwrap();
    assert_eq!(
        store.heartbeat(id, stale.token, 400).await.unwrap(),
        None,
        "stale heartbeat refused"
    );
    assert!(!store
        .set_progress(id, stale.token, 0.3, None)
        .await
        .unwrap());
    let late = Finish::Failed {
        error: json!({"detail": "late"}),
    };
    assert!(
        !store.finish_job(id, stale.token, late).await.unwrap(),
        "stale finish refused"
    );
    let after = app.job(&job).await;
    assert_eq!(after["status"], "succeeded");
    assert_eq!(after["progress"], 1.0);
    app.finish().await;
}

/// A job whose workers keep dying fails after its last attempt, with the reason.
async fn attempts_run_out(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |c| {
        c.lease_ms = 300;
        c.max_attempts = 2;
    })
    .await
    else {
        return;
    };
    let model = app.upload_ok(mlp(), "m").await;
    let job = app.submit(&model, pipeline()).await;
    let store = app.app.as_ref().unwrap().store().clone();
    for _ in 0..2 {
        store
            .claim_job("dies", 300, 8)
            .await
            .unwrap()
            .expect("claimed");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(app.run_jobs().await.is_empty());
    let failed = app.job(&job).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["attempts"], 2);
    assert_eq!(failed["error"]["type"], "urn:compressd:problem:worker-lost");
    app.finish().await;
}

/// `kill -9` mid-job: the job is retried by another process and finishes exactly once.
async fn killed_worker_process_is_recovered(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |c| c.lease_ms = 1000).await else {
        return;
    };
    let model = app.upload_ok(layered(20), "m").await;
    let job = app.submit(&model, pipeline()).await;
    let mut child = spawn_server(
        &app,
        "127.0.0.1:0",
        Limits::None,
        &[
            ("COMPRESSD_WORKERS", "1"),
            ("COMPRESSD_LEASE_MS", "1000"),
            ("COMPRESSD_TEST_CHUNK_DELAY_MS", "100"),
        ],
    );
    let running = app.wait_for(&job, "running", Duration::from_secs(20)).await;
    let _ = running;
    let victim = app.worker_of(&job).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        app.job(&job).await["status"],
        "running",
        "the dead worker's claim stays until its lease runs out"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.run_jobs().await;
    let done = app.job(&job).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["attempts"], 2);
    assert_ne!(app.worker_of(&job).await, victim);
    assert_eq!(model_artifacts(&done), 1);
    app.finish().await;
}

/// SIGTERM: the server stops taking work, and a job that outlasts the grace period goes back
/// to the queue without spending an attempt.
async fn sigterm_releases_running_jobs(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let model = app.upload_ok(layered(30), "m").await;
    let job = app.submit(&model, pipeline()).await;
    let mut child = spawn_server(
        &app,
        "127.0.0.1:0",
        Limits::None,
        &[
            ("COMPRESSD_WORKERS", "1"),
            ("COMPRESSD_SHUTDOWN_GRACE_SECONDS", "1"),
            ("COMPRESSD_TEST_CHUNK_DELAY_MS", "100"),
        ],
    );
    app.wait_for(&job, "running", Duration::from_secs(20)).await;
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "clean exit after SIGTERM: {exit:?}");
    let released = app.job(&job).await;
    assert_eq!(released["status"], "queued", "{released:#}");
    assert_eq!(released["attempts"], 0);

    app.run_jobs().await;
    let done = app.job(&job).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["attempts"], 1);
    app.finish().await;
}

/// Two server processes on one database share the queue: every job runs once, both work.
async fn two_servers_share_the_queue(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let workers = [
        ("COMPRESSD_WORKERS", "2"),
        ("COMPRESSD_TEST_CHUNK_DELAY_MS", "20"),
    ];
    let servers = [
        spawn_server(&app, "127.0.0.1:0", Limits::None, &workers),
        spawn_server(&app, "127.0.0.1:0", Limits::None, &workers),
    ];
    let model = app.upload_ok(layered(4), "m").await;
    let mut jobs = Vec::new();
    for i in 0..12 {
        let target = json!([{"op":"prune","method":"magnitude","sparsity": 0.05 * (i + 1) as f64,"scope":"layer"}]);
        jobs.push(app.submit(&model, target).await);
    }
    let mut processes = HashSet::new();
    for job in &jobs {
        let done = app
            .wait_for(job, "succeeded", Duration::from_secs(90))
            .await;
        assert_eq!(done["attempts"], 1, "{done:#}");
        assert_eq!(model_artifacts(&done), 1);
        // Worker ids are host/pid/random: the pid names the process.
        let worker = app.worker_of(job).await;
        processes.insert(worker.split('/').nth(1).unwrap().to_owned());
    }
    assert_eq!(processes.len(), 2, "both servers took jobs: {processes:?}");
    for server in servers {
        stop_server(server).await;
    }
    let attempt_dirs: usize = std::fs::read_dir(app.config.data_dir.join("blobs/artifacts"))
        .unwrap()
        .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(attempt_dirs, jobs.len(), "one set of files per job");
    app.finish().await;
}

/// Workers whose clocks are ten minutes fast: one that dies holding a job leaves a lease that
/// runs out by the database's clock (not ten minutes later), and one that joins while another
/// worker holds a live lease does not take it.
async fn skewed_clocks_neither_keep_dead_leases_nor_steal_live_ones(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |c| c.lease_ms = 1000).await else {
        return;
    };
    let model = app.upload_ok(layered(20), "m").await;
    let worker = |skew: &'static str| {
        spawn_server(
            &app,
            "127.0.0.1:0",
            Limits::None,
            &[
                ("COMPRESSD_WORKERS", "1"),
                ("COMPRESSD_LEASE_MS", "1000"),
                ("COMPRESSD_TEST_CHUNK_DELAY_MS", "200"),
                ("COMPRESSD_TEST_CLOCK_SKEW_MS", skew),
            ],
        )
    };

    let job = app.submit(&model, pipeline()).await;
    let mut fast = worker("600000");
    app.wait_for(&job, "running", Duration::from_secs(20)).await;
    let victim = app.worker_of(&job).await;
    fast.kill().unwrap();
    fast.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        app.run_jobs().await.len(),
        1,
        "the dead worker's lease ran out by the database's clock"
    );
    let done = app.job(&job).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["attempts"], 2);
    assert_ne!(app.worker_of(&job).await, victim);

    // Another pipeline: the same one would be answered from the results cache.
    let other = json!([{"op":"prune","method":"magnitude","sparsity":0.4,"scope":"global"}]);
    let job = app.submit(&model, other).await;
    let holder = worker("0");
    app.wait_for(&job, "running", Duration::from_secs(20)).await;
    let owner = app.worker_of(&job).await;
    let fast = worker("600000");
    // Three lease lengths while the holder renews its lease and the fast worker polls.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let running = app.job(&job).await;
    assert_eq!(running["status"], "running", "{running:#}");
    assert_eq!(running["attempts"], 1, "the live lease was not taken");
    assert_eq!(app.worker_of(&job).await, owner);
    let done = app
        .wait_for(&job, "succeeded", Duration::from_secs(60))
        .await;
    assert_eq!(done["attempts"], 1, "{done:#}");
    stop_server(holder).await;
    stop_server(fast).await;
    app.finish().await;
}

crate::on_each_backend!(
    skewed_clocks_neither_keep_dead_leases_nor_steal_live_ones,
    expired_lease_is_taken_over_and_fenced,
    attempts_run_out,
    killed_worker_process_is_recovered,
    sigterm_releases_running_jobs,
    two_servers_share_the_queue,
);
