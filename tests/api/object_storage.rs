//! Blobs in S3-compatible object storage: an API replica and a worker replica with separate
//! disks serve one model and its job through the bucket alone, and downloads can come straight
//! from the bucket at presigned URLs. The bucket is moto's S3 server
//! (PyPI `moto[server]`), started by the test; without it the test is skipped and says so,
//! unless COMPRESSD_REQUIRE_S3=1 (set by CI) makes that a failure.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{
    files_under, free_port, spawn_server, stop_server, wait_ready, Backend, Limits, TestApp,
};
use crate::models::mlp;

/// moto's S3 server on a port of its own; killed on drop.
struct Bucket {
    server: Child,
    endpoint: String,
    name: &'static str,
}

impl Drop for Bucket {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

impl Bucket {
    async fn start(http: &reqwest::Client) -> Option<Bucket> {
        let port = free_port();
        let server = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(server) = server else {
            assert!(
                std::env::var("COMPRESSD_REQUIRE_S3").is_err(),
                "COMPRESSD_REQUIRE_S3 is set but moto_server could not be started"
            );
            eprintln!("object_storage: no moto_server (pip install 'moto[server]'); skipped");
            return None;
        };
        let bucket = Bucket {
            server,
            endpoint: format!("http://127.0.0.1:{port}"),
            name: "compressd-test",
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let made = http
                .put(format!("{}/{}", bucket.endpoint, bucket.name))
                .send()
                .await;
            if made.is_ok_and(|r| r.status().is_success()) {
                return Some(bucket);
            }
            assert!(Instant::now() < deadline, "moto_server did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The keys in the bucket under `prefix`.
    async fn keys(&self, http: &reqwest::Client, prefix: &str) -> Vec<String> {
        let listing = http
            .get(format!(
                "{}/{}?list-type=2&prefix={prefix}",
                self.endpoint, self.name
            ))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        listing
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_owned)
            .collect()
    }

    fn env<'a>(&'a self, prefix: &'a str, data_dir: &'a str) -> Vec<(&'a str, String)> {
        vec![
            ("COMPRESSD_BLOB_URL", format!("s3://{}/{prefix}", self.name)),
            ("COMPRESSD_DATA_DIR", data_dir.to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false".into()),
        ]
    }
}

fn start(app: &TestApp, bind: &str, role: &str, env: &[(&str, String)]) -> Child {
    let mut extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    extra.push(("COMPRESSD_ROLE", role));
    extra.push(("COMPRESSD_WORKERS", "1"));
    spawn_server(app, bind, Limits::None, &extra)
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
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let job: Value = app
            .http
            .get(format!("{base}/v1/jobs/{job_id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["status"] == "succeeded" {
            break job;
        }
        assert!(job["status"] != "failed", "{job}");
        assert!(Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

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
