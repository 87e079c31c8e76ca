//! Blobs in S3-compatible object storage: an API replica and a worker replica with separate
//! disks serve one model and its job through the bucket alone, and downloads can come straight
//! from the bucket at presigned URLs. The bucket is moto's S3 server
//! (PyPI `moto[server]`), started by the test; without it the test is skipped and says so,
//! unless COMPRESSD_REQUIRE_S3=1 (set by CI) makes that a failure.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::cluster::Bucket;
use crate::helpers::{
    files_under, free_port, get_text, spawn_server, stop_server, wait_ready, Backend, Limits,
    TestApp,
};
use crate::models::mlp;

fn start(app: &TestApp, bind: &str, role: &str, env: &[(&str, String)]) -> Child {
    let mut extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    extra.push(("COMPRESSD_ROLE", role));
    extra.push(("COMPRESSD_WORKERS", "1"));
    spawn_server(app, bind, Limits::None, &extra)
}

async fn wait_succeeded(http: &reqwest::Client, base: &str, job_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job: Value = http
            .get(format!("{base}/v1/jobs/{job_id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["status"] == "succeeded" {
            return job;
        }
        assert!(job["status"] != "failed", "{job}");
        assert!(Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn blob_files(data_dir: &Path) -> Vec<std::path::PathBuf> {
    files_under(&data_dir.join("blobs"))
}

async fn replicas_with_separate_disks_share_one_bucket(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let Some(bucket) = Bucket::start(&app.http).await else {
        app.finish().await;
        return;
    };
    let (disk_a, disk_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (
        disk_a.path().to_str().unwrap(),
        disk_b.path().to_str().unwrap(),
    );
    let prefix = format!("{backend:?}").to_lowercase();
    let api_bind = format!("127.0.0.1:{}", free_port());
    let worker_bind = format!("127.0.0.1:{}", free_port());
    let mut api_env = bucket.env(&prefix, a);
    api_env.push(("COMPRESSD_PRESIGNED_DOWNLOAD_SECONDS", "300".into()));
    let api = start(&app, &api_bind, "api", &api_env);
    let worker = start(&app, &worker_bind, "worker", &bucket.env(&prefix, b));
    let base = format!("http://{api_bind}");
    wait_ready(&app.http, &base).await;
    wait_ready(&app.http, &format!("http://{worker_bind}")).await;

    // A model sent in resumable parts (each part an object until the upload completes).
    let model = mlp();
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("mlp.safetensors");
    std::fs::write(&file, &model).unwrap();
    let uploaded = Command::new(env!("CARGO_BIN_EXE_compressd"))
        .args(["upload", file.to_str().unwrap(), "--part-size", "4096"])
        .args(["--url", &base])
        .env("XDG_CACHE_HOME", home.path())
        .output()
        .unwrap();
    assert!(
        uploaded.status.success(),
        "{}",
        String::from_utf8_lossy(&uploaded.stderr)
    );
    let model_id = String::from_utf8(uploaded.stdout)
        .unwrap()
        .trim()
        .to_owned();

    let res = app
        .http
        .post(format!("{base}/v1/jobs"))
        .json(&json!({ "model_id": model_id, "pipeline": [{ "op": "prune", "sparsity": 0.5 }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let job_id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = wait_succeeded(&app.http, &base, &job_id).await;

    // A plain download goes straight to the bucket at a presigned URL; what arrives is what
    // the worker wrote, byte for byte. Ranges are served by the API replica itself.
    let result = &job["result"];
    let url = format!("{base}{}", result["file_url"].as_str().unwrap());
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirect = no_redirects.get(&url).send().await.unwrap();
    assert_eq!(redirect.status(), 307);
    let location = redirect.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with(&bucket.endpoint) && location.contains("X-Amz-Signature="),
        "{location}"
    );
    let pruned = app
        .http
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(hex::encode(Sha256::digest(&pruned)), result["sha256"]);
    let tail = app
        .http
        .get(&url)
        .header("range", "bytes=100-")
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().await.unwrap(), pruned.slice(100..));

    // A second job on the same model starts from the worker's kept copy, not the bucket.
    let res = app
        .http
        .post(format!("{base}/v1/jobs"))
        .json(
            &json!({ "model_id": model_id, "pipeline": [{ "op": "quantize", "scheme": "int8" }] }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let second = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_succeeded(&app.http, &base, &second).await;
    let metrics = get_text(&app.http, &format!("http://{worker_bind}/metrics")).await;
    assert!(
        metrics.contains("compressd_input_cache_misses_total 1")
            && metrics.contains("compressd_input_cache_hits_total 1"),
        "{metrics}"
    );
    assert_eq!(files_under(&disk_b.path().join("inputs")).len(), 1);

    // Neither disk holds a blob; the bucket holds the model and the job's artifacts, and no
    // upload part outlives its upload.
    assert!(blob_files(disk_a.path()).is_empty() && blob_files(disk_b.path()).is_empty());
    let keys = bucket.keys(&app.http, &prefix).await;
    let stored = format!(
        "{prefix}/tenants/local/sha256/{}",
        hex::encode(Sha256::digest(&model))
    );
    assert!(keys.contains(&stored), "{keys:?}");
    assert!(
        keys.iter()
            .any(|k| k.starts_with(&format!("{prefix}/artifacts/{job_id}/"))),
        "{keys:?}"
    );
    assert!(!keys.iter().any(|k| k.contains("/uploads/")), "{keys:?}");

    // Deleting the job removes its objects.
    let res = app
        .http
        .delete(format!("{base}/v1/jobs/{job_id}"))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    let keys = bucket.keys(&app.http, &prefix).await;
    assert!(
        !keys.iter().any(|k| k.contains(&job_id)),
        "the job's artifacts are gone: {keys:?}"
    );
    stop_server(api).await;
    stop_server(worker).await;
    app.finish().await;
}

crate::on_each_backend!(replicas_with_separate_disks_share_one_bucket);
