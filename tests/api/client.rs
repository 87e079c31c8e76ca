//! The command-line client, run as a user or a CI job runs it: the real binary against a real
//! server, both as processes where a restart matters. What is checked is what a script relies
//! on: the ids and documents printed, the files written, the exit codes.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::{
    create_key, free_port, spawn_server, stop_server, wait_ready, Backend, Limits, TestApp,
};
use crate::models::{f32_tensor, mlp, safetensors, values};

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not one JSON document ({e}): {}", self.stdout))
    }
}

/// The client with a home of its own (config and resumable-upload state under `home`).
fn client(home: &Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_compressd"));
    cmd.args(args)
        .env_remove("COMPRESSD_URL")
        .env_remove("COMPRESSD_API_KEY")
        .env_remove("COMPRESSD_CLIENT_STOP_AFTER_PARTS")
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn run(mut cmd: tokio::process::Command) -> Ran {
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the client finished within two minutes")
        .unwrap();
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Upload (interrupted, then resumed), prune with --wait and --download, list, show, download
/// another artifact by kind; each command's output is what a script would capture.
async fn upload_run_and_download_from_the_command_line(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |c| c.workers = Some(1)).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let model = mlp();
    let file = home.path().join("mlp.safetensors");
    std::fs::write(&file, &model).unwrap();
    let file = file.to_str().unwrap();
    let base = app.base.as_str();

    // Parts of 2 KiB make a resumable upload; the first try gives up after two parts.
    let upload = ["upload", file, "--url", base, "--part-size", "2048"];
    let mut cut = client(home.path(), &upload);
    cut.env("COMPRESSD_CLIENT_STOP_AFTER_PARTS", "2");
    let cut = run(cut).await;
    assert_eq!(cut.code, 3, "{}", cut.stderr);
    assert!(
        cut.stderr.contains("run the same command again"),
        "{}",
        cut.stderr
    );
    let parts = model.len().div_ceil(2048);
    let resumed = run(client(home.path(), &upload)).await;
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert!(
        resumed
            .stderr
            .contains(&format!("(2 of {parts} parts already there)")),
        "{}",
        resumed.stderr
    );
    let model_id = resumed.stdout.trim().to_owned();
    let stored = app.get_json(&format!("/v1/models/{model_id}")).await;
    assert_eq!(stored["sha256"], sha256(&model));
    assert_eq!(stored["name"], "mlp.safetensors");

    // Prune by half into the sparse layout, wait, and download the result.
    let out = home.path().join("pruned.safetensors");
    let ran = run(client(
        home.path(),
        &[
            "run",
            &model_id,
            "--prune",
            "0.5",
            "--store",
            "sparse",
            "--wait",
            "--download",
            out.to_str().unwrap(),
            "--json",
            "--url",
            base,
        ],
    ))
    .await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let job = ran.json();
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["pipeline"][0]["store"], "sparse");
    let pruned = std::fs::read(&out).unwrap();
    assert_eq!(sha256(&pruned), job["result"]["sha256"]);
    assert!(
        pruned.len() < model.len(),
        "the sparse file ({} bytes) is smaller than the dense one ({})",
        pruned.len(),
        model.len()
    );
    let job_id = job["id"].as_str().unwrap();

    let listed = run(client(
        home.path(),
        &[
            "jobs",
            "list",
            "--status",
            "succeeded",
            "--json",
            "--url",
            base,
        ],
    ))
    .await;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert_eq!(listed.json()["data"][0]["id"], job_id);
    let shown = run(client(
        home.path(),
        &["jobs", "show", job_id, "--url", base],
    ))
    .await;
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(shown.stdout.contains("succeeded") && shown.stdout.contains("prune"));
    let full = run(client(
        home.path(),
        &["jobs", "show", job_id, "--full", "--json", "--url", base],
    ))
    .await;
    assert_eq!(full.code, 0, "{}", full.stderr);
    let tensors = &full.json()["metrics"]["steps"][0]["tensors"];
    assert!(
        tensors.as_array().is_some_and(|t| !t.is_empty()),
        "{tensors}"
    );

    let logged = run(client(
        home.path(),
        &["jobs", "logs", job_id, "--url", base],
    ))
    .await;
    assert_eq!(logged.code, 0, "{}", logged.stderr);
    assert!(
        logged.stdout.contains("[attempt 1] attempt 1 of 3 started")
            && logged.stdout.contains("attempt 1 succeeded in"),
        "{}",
        logged.stdout
    );

    let report = home.path().join("report.json");
    let fetched = run(client(
        home.path(),
        &[
            "download",
            job_id,
            "--kind",
            "report",
            "-o",
            report.to_str().unwrap(),
            "--url",
            base,
        ],
    ))
    .await;
    assert_eq!(fetched.code, 0, "{}", fetched.stderr);
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert!(report.is_object());
    app.finish().await;
}

/// Exit codes a CI script branches on: 1 for a job that failed, 2 for what the user must
/// change, 3 for a server that cannot be reached; the message says which.
async fn exit_codes_say_whose_problem_it_is(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |c| c.workers = Some(1)).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let base = app.base.as_str();
    let missing = "0193d6f0-0000-7000-8000-000000000000";

    let mut weights = values(100, 5);
    weights[17] = f32::NAN;
    let nan = home.path().join("nan.safetensors");
    std::fs::write(
        &nan,
        safetensors(&[f32_tensor("bad.weight", &[10, 10], &weights)], None),
    )
    .unwrap();
    let uploaded = run(client(
        home.path(),
        &["upload", nan.to_str().unwrap(), "--url", base],
    ))
    .await;
    assert_eq!(uploaded.code, 0, "{}", uploaded.stderr);
    let ran = run(client(
        home.path(),
        &[
            "run",
            uploaded.stdout.trim(),
            "--prune",
            "0.5",
            "--wait",
            "--url",
            base,
        ],
    ))
    .await;
    assert_eq!(ran.code, 1, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("failed") && ran.stderr.contains("'bad.weight'"),
        "the job's own reason: {}",
        ran.stderr
    );

    let ran = run(client(
        home.path(),
        &["run", missing, "--prune", "0.5", "--url", base],
    ))
    .await;
    assert_eq!(ran.code, 2, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("422 no model with id") && ran.stderr.contains("request id"),
        "{}",
        ran.stderr
    );
    let ran = run(client(home.path(), &["run", missing, "--url", base])).await;
    assert_eq!(ran.code, 2, "{}", ran.stderr);
    assert!(ran.stderr.contains("--prune"), "{}", ran.stderr);
    let ran = run(client(
        home.path(),
        &["download", missing, "--url", base, "--json"],
    ))
    .await;
    assert_eq!(ran.code, 2, "{}", ran.stderr);
    assert_eq!(ran.json()["exit_code"], 2);
    let ran = run(client(
        home.path(),
        &["upload", "/no/such/file", "--url", base],
    ))
    .await;
    assert_eq!(ran.code, 2, "{}", ran.stderr);

    let nobody = format!("http://127.0.0.1:{}", free_port());
    let ran = run(client(
        home.path(),
        &["jobs", "list", "--url", &nobody, "--retry-seconds", "1"],
    ))
    .await;
    assert_eq!(ran.code, 3, "{}", ran.stderr);
    assert!(ran.stderr.contains("could not reach"), "{}", ran.stderr);

    // The config file is where the URL comes from when no flag or variable says.
    let config = home.path().join("config").join("compressd");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("client.json"),
        serde_json::json!({ "url": base }).to_string(),
    )
    .unwrap();
    let ran = run(client(home.path(), &["jobs", "list", "--json"])).await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(ran.json()["data"].is_array());
    app.finish().await;
}

/// A key over its rate limit gets 429s; the client waits as Retry-After says and finishes.
async fn a_rate_limited_upload_waits_and_finishes(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let key = create_key(&app, "ci", 120);
    let model = mlp();
    let file = home.path().join("mlp.safetensors");
    std::fs::write(&file, &model).unwrap();

    // 120 a minute allows 12 at once; this upload makes about 23 requests.
    let ran = run(client(
        home.path(),
        &[
            "upload",
            file.to_str().unwrap(),
            "--part-size",
            "512",
            "--url",
            &app.base,
            "--api-key",
            &key,
        ],
    ))
    .await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("429"),
        "no request was limited: {}",
        ran.stderr
    );
    let id = ran.stdout.trim();
    // The key's burst is spent: this check waits for a request to come back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let res = app
        .http
        .get(app.url(&format!("/v1/models/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let stored: Value = res.json().await.unwrap();
    assert_eq!(stored["sha256"], sha256(&model));
    app.finish().await;
}

/// `run --wait` outlives a restart of the server it follows: the job, queued on a server with
/// no workers, finishes on its successor, and the client reconnects and reports it.
async fn wait_outlives_a_server_restart(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let model_id = app.upload_ok(mlp(), "mlp").await;
    let bind = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{bind}");
    let first = spawn_server(&app, &bind, Limits::None, &[("COMPRESSD_WORKERS", "0")]);
    wait_ready(&app.http, &base).await;

    let mut waiting = client(
        home.path(),
        &["run", &model_id, "--prune", "0.5", "--wait", "--url", &base],
    )
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let job_id = loop {
        let jobs = app.get_json("/v1/jobs").await;
        if let Some(id) = jobs["data"][0]["id"].as_str() {
            break id.to_owned();
        }
        assert!(Instant::now() < deadline, "the client submitted no job");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Let the client get to the event stream before its server goes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_server(first).await;
    assert_eq!(app.job(&job_id).await["status"], "queued");
    let second = spawn_server(&app, &bind, Limits::None, &[("COMPRESSD_WORKERS", "1")]);

    let out = tokio::time::timeout(Duration::from_secs(120), async {
        let mut stderr = String::new();
        let mut stdout = String::new();
        use tokio::io::AsyncReadExt;
        waiting
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .await
            .unwrap();
        waiting
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .await
            .unwrap();
        (waiting.wait().await.unwrap(), stdout, stderr)
    })
    .await
    .expect("the client finished");
    stop_server(second).await;
    let (status, stdout, stderr) = out;
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("succeeded"), "{stdout}");
    assert!(
        stderr.contains("could not reach") || stderr.contains("reconnecting"),
        "the client never lost the server: {stderr}"
    );
    let job = app.job(&job_id).await;
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["attempts"], 1);
    app.finish().await;
}

crate::on_each_backend!(
    upload_run_and_download_from_the_command_line,
    exit_codes_say_whose_problem_it_is,
    a_rate_limited_upload_waits_and_finishes,
    wait_outlives_a_server_restart,
);
