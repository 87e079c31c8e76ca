//! Files over their life: resumable uploads, content addressing and the results cache,
//! webhooks on terminal states, time to live, and deletes that leave nothing on disk.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use base64::prelude::{Engine, BASE64_STANDARD};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::helpers::{files_under, Backend, TestApp};
use crate::models::mlp;
use crate::python_reference::reference_output;

async fn put_part(app: &TestApp, upload: &str, n: u32, bytes: Vec<u8>) -> reqwest::Response {
    app.http
        .put(app.url(&format!("/v1/uploads/{upload}/parts/{n}")))
        .body(bytes)
        .send()
        .await
        .unwrap()
}

async fn resumable_upload_joins_parts_in_any_order(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let file = mlp();
    let sha = hex::encode(Sha256::digest(&file));
    let res = app
        .http
        .post(app.url("/v1/uploads"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let upload: Value = res.json().await.unwrap();
    let id = upload["id"].as_str().unwrap();
    let chunks: Vec<Vec<u8>> = file
        .chunks(file.len() / 3 + 1)
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(chunks.len(), 3);
    // Out of order, part 2 first sent with wrong bytes and then resent.
    assert_eq!(put_part(&app, id, 3, chunks[2].clone()).await.status(), 200);
    assert_eq!(put_part(&app, id, 2, vec![0u8; 10]).await.status(), 200);
    let complete = |sha: String| {
        app.http
            .post(app.url(&format!("/v1/uploads/{id}/complete")))
            .json(&json!({"sha256": sha, "name": "joined"}))
            .send()
    };
    let res = complete(sha.clone()).await.unwrap();
    assert_eq!(res.status(), 409, "part 1 is missing");
    let problem: Value = res.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("[1]"),
        "{problem}"
    );
    assert_eq!(put_part(&app, id, 1, chunks[0].clone()).await.status(), 200);
    let res = complete(sha.clone()).await.unwrap();
    assert_eq!(res.status(), 422, "part 2 holds the wrong bytes");
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["type"], "urn:compressd:problem:checksum-mismatch");
    let res = put_part(&app, id, 2, chunks[1].clone()).await;
    let part: Value = res.json().await.unwrap();
    assert_eq!(part["sha256"], hex::encode(Sha256::digest(&chunks[1])));
    let listed = app.get_json(&format!("/v1/uploads/{id}")).await;
    assert_eq!(listed["received_bytes"], file.len() as u64);
    assert_eq!(listed["parts"].as_array().unwrap().len(), 3);
    let res = complete(sha.clone()).await.unwrap();
    assert_eq!(res.status(), 201);
    let model: Value = res.json().await.unwrap();
    assert_eq!(model["sha256"], sha);
    assert_eq!(model["name"], "joined");
    let id_model = model["id"].as_str().unwrap();
    assert_eq!(
        app.download(&format!("/v1/models/{id_model}/file")).await,
        file
    );
    // The upload and every part file are gone.
    let res = app
        .http
        .get(app.url(&format!("/v1/uploads/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert!(files_under(&app.config.data_dir.join("blobs/uploads")).is_empty());
    // Bad part numbers are refused.
    let res = app
        .http
        .post(app.url("/v1/uploads"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let other: Value = res.json().await.unwrap();
    for n in ["0", "10001", "x"] {
        let res = app
            .http
            .put(app.url(&format!(
                "/v1/uploads/{}/parts/{n}",
                other["id"].as_str().unwrap()
            )))
            .body(vec![1u8])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "part {n}");
    }
    app.finish().await;
}

async fn abandoned_uploads_expire(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |c| c.sweep_ms = 100).await else {
        return;
    };
    let res = app
        .http
        .post(app.url("/v1/uploads"))
        .json(&json!({"ttl_seconds": 1}))
        .send()
        .await
        .unwrap();
    let upload: Value = res.json().await.unwrap();
    let id = upload["id"].as_str().unwrap();
    assert_eq!(put_part(&app, id, 1, vec![7u8; 4096]).await.status(), 200);
    assert_eq!(
        files_under(&app.config.data_dir.join("blobs/uploads")).len(),
        1
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !files_under(&app.config.data_dir.join("blobs/uploads")).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the expired upload's part was not removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let res = app
        .http
        .get(app.url(&format!("/v1/uploads/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    // A time to live past ten years (a date no RFC 3339 timestamp can carry) is refused.
    for ttl in [0u64, 315_360_001, u64::MAX] {
        let res = app
            .http
            .post(app.url("/v1/uploads"))
            .json(&json!({ "ttl_seconds": ttl }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 422, "ttl {ttl}");
    }
    let model = app.upload_ok(mlp(), "m").await;
    let res = app
        .post_job(json!({"model_id": model, "pipeline": [{"op": "prune", "sparsity": 0.5}], "artifact_ttl_seconds": 315_360_001u64}))
        .await;
    assert_eq!(res.status(), 422);
    app.finish().await;
}

async fn same_model_and_pipeline_is_a_cache_hit(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let first = app.upload_ok(mlp(), "a").await;
    let second = app.upload_ok(mlp(), "b").await;
    let pipeline = json!([{"op": "prune", "sparsity": 0.5}, {"op": "quantize", "scheme": "int8"}]);
    let job = app.submit(&first, pipeline.clone()).await;
    app.run_jobs().await;
    let done = app.job(&job).await;
    assert_eq!(done["status"], "succeeded");
    // Another model record with the same bytes, the same pipeline: answered at once.
    let res = app
        .post_job(json!({"model_id": second, "pipeline": pipeline}))
        .await;
    assert_eq!(res.status(), 202);
    let hit: Value = res.json().await.unwrap();
    assert_eq!(hit["status"], "succeeded");
    assert_eq!(hit["cache_hit"], true);
    assert_eq!(hit["cached_from"], done["id"]);
    // The answer to a submission is a status poll's view: the source's summary figures.
    let polled = app.get_json(&format!("/v1/jobs/{job}")).await;
    assert_eq!(hit["metrics"], polled["metrics"]);
    assert_eq!(hit["metrics"]["summary"], done["metrics"]["summary"]);
    let sha = |j: &Value| {
        j["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["sha256"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(sha(&hit), sha(&done));
    assert_eq!(
        app.model_artifact(&hit).await,
        app.model_artifact(&done).await
    );
    assert!(app.run_jobs().await.is_empty(), "a cache hit runs nothing");
    // Opting out, or a different pipeline, runs the job.
    let res = app
        .post_job(json!({"model_id": second, "pipeline": pipeline, "cache": false}))
        .await;
    let fresh: Value = res.json().await.unwrap();
    assert_eq!(fresh["status"], "queued");
    assert_eq!(fresh["cache_hit"], false);
    let res = app
        .post_job(json!({"model_id": second, "pipeline": [{"op": "prune", "sparsity": 0.6}]}))
        .await;
    let other: Value = res.json().await.unwrap();
    assert_eq!(other["status"], "queued");
    // Deleting the original keeps the hit's files: they are shared, not copied.
    let res = app
        .http
        .delete(app.url(&format!("/v1/jobs/{job}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        app.model_artifact(&hit).await.len() as u64,
        hit["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["kind"] == "model")
            .unwrap()["size_bytes"]
            .as_u64()
            .unwrap()
    );
    app.finish().await;
}

type Received = (HeaderMap, Bytes);

/// A loopback webhook receiver that fails its first `fail_first` deliveries with 500.
async fn receiver(fail_first: usize) -> (String, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            let seen = seen.clone();
            async move {
                let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = tx.send((headers, body));
                if n < fail_first {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

async fn webhooks_are_signed_and_retried(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |c| c.webhook_retry_base_ms = 50).await else {
        return;
    };
    let (url, mut rx) = receiver(1).await;
    let model = app.upload_ok(mlp(), "m").await;
    let res = app
        .post_job(json!({"model_id": model, "pipeline": [{"op": "prune", "sparsity": 0.5}], "webhook_url": url}))
        .await;
    let job: Value = res.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["webhook"]["status"], "pending");
    app.run_jobs().await;
    // The open server's tenant 'local' and its webhook secret, as the operator reads them.
    let secret = app
        .app
        .as_ref()
        .unwrap()
        .store()
        .tenant("local")
        .await
        .unwrap()
        .unwrap()
        .webhook_secret;
    let mut deliveries = Vec::new();
    for _ in 0..2 {
        let got = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("a delivery")
            .unwrap();
        deliveries.push(got);
    }
    for (headers, body) in &deliveries {
        assert_eq!(headers["compressd-delivery"], id.as_str());
        let ts: i64 = headers["compressd-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (chrono::Utc::now().timestamp() - ts).abs() < 60,
            "fresh timestamp"
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{ts}.").as_bytes());
        mac.update(body);
        let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(headers["compressd-signature"], expected.as_str());
        // The Standard Webhooks form, as its libraries check it: the key is the base64 after
        // `whsec_`, the signed text "{webhook-id}.{webhook-timestamp}.{body}".
        assert_eq!(headers["webhook-id"], id.as_str());
        assert_eq!(headers["webhook-timestamp"], ts.to_string().as_str());
        let key = BASE64_STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap())
            .unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(body);
        let standard = format!("v1,{}", BASE64_STANDARD.encode(mac.finalize().into_bytes()));
        assert_eq!(headers["webhook-signature"], standard.as_str());
        standard_webhooks_library_verifies(&secret, headers, body);
        let sent: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(sent["id"], id.as_str());
        assert_eq!(sent["status"], "succeeded");
        assert!(!sent["artifacts"].as_array().unwrap().is_empty());
    }
    // A changed body no longer matches the signature.
    let (headers, body) = &deliveries[1];
    let ts = headers["compressd-timestamp"].to_str().unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(&body[1..]);
    assert_ne!(
        headers["compressd-signature"],
        format!("v1={}", hex::encode(mac.finalize().into_bytes())).as_str()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let job = app.job(&id).await;
        if job["webhook"]["status"] == "delivered" {
            assert_eq!(job["webhook"]["attempts"], 2);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{job:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Cancelling a queued job is a terminal state too.
    let res = app
        .post_job(json!({"model_id": model, "pipeline": [{"op": "prune", "sparsity": 0.7}], "webhook_url": url}))
        .await;
    let queued: Value = res.json().await.unwrap();
    let qid = queued["id"].as_str().unwrap();
    app.http
        .post(app.url(&format!("/v1/jobs/{qid}/cancel")))
        .send()
        .await
        .unwrap();
    let (_, body) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a delivery")
        .unwrap();
    let sent: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(sent["id"], qid);
    assert_eq!(sent["status"], "cancelled");
    // Not a URL, or not http(s): refused before queueing.
    for bad in ["not a url", "ftp://example.com/x", "file:///etc/passwd"] {
        let res = app.post_job(json!({"model_id": model, "pipeline": [{"op": "prune", "sparsity": 0.5}], "webhook_url": bad})).await;
        assert_eq!(res.status(), 422, "{bad}");
    }
    app.finish().await;
}

async fn artifacts_expire_and_deletes_leave_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |c| c.sweep_ms = 100).await else {
        return;
    };
    let blobs = app.config.data_dir.join("blobs");
    let model = app.upload_ok(mlp(), "m").await;
    let res = app
        .post_job(json!({"model_id": model, "pipeline": [{"op": "prune", "sparsity": 0.5}], "artifact_ttl_seconds": 1}))
        .await;
    let short: Value = res.json().await.unwrap();
    let kept = app
        .submit(&model, json!([{"op": "prune", "sparsity": 0.25}]))
        .await;
    app.run_jobs().await;
    let short_id = short["id"].as_str().unwrap();
    let done = app.job(short_id).await;
    assert!(done["artifacts"][0]["expires_at"].is_string());
    let file_url = done["artifacts"][0]["file_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let res = app.http.get(app.url(&file_url)).send().await.unwrap();
        if res.status() == 404 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the artifact outlived its time to live"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(app.job(short_id).await["artifacts"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(!app.job(&kept).await["artifacts"]
        .as_array()
        .unwrap()
        .is_empty());
    // Deleting the job, then the model (which takes its remaining jobs), empties the disk.
    let res = app
        .http
        .delete(app.url(&format!("/v1/jobs/{short_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert!(!files_under(&blobs).is_empty());
    let res = app
        .http
        .delete(app.url(&format!("/v1/models/{model}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(files_under(&blobs), Vec::<std::path::PathBuf>::new());
    let res = app
        .http
        .get(app.url(&format!("/v1/jobs/{kept}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404, "the model's jobs went with it");
    // A running or queued job cannot be deleted.
    let model = app.upload_ok(mlp(), "m2").await;
    let queued = app
        .submit(&model, json!([{"op": "prune", "sparsity": 0.5}]))
        .await;
    let res = app
        .http
        .delete(app.url(&format!("/v1/jobs/{queued}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    app.finish().await;
}

crate::on_each_backend!(
    resumable_upload_joins_parts_in_any_order,
    abandoned_uploads_expire,
    same_model_and_pipeline_is_a_cache_hit,
    webhooks_are_signed_and_retried,
    artifacts_expire_and_deletes_leave_nothing,
);

/// The Standard Webhooks reference library (PyPI `standardwebhooks`) accepts the delivery as
/// it came. CI installs it and sets COMPRESSD_REQUIRE_STANDARDWEBHOOKS.
fn standard_webhooks_library_verifies(secret: &str, headers: &HeaderMap, body: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("body");
    std::fs::write(&path, body).unwrap();
    let script = r#"
import sys
try:
    from standardwebhooks.webhooks import Webhook
except ImportError:
    print("NO_STANDARDWEBHOOKS"); sys.exit(0)
secret, msg_id, ts, sig, path = sys.argv[1:6]
payload = Webhook(secret).verify(open(path, "rb").read(),
    {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": sig})
print(payload["id"])
"#;
    let header = |name: &str| headers[name].to_str().unwrap().to_owned();
    let mut python = std::process::Command::new("python3");
    python
        .arg("-c")
        .arg(script)
        .arg(secret)
        .arg(header("webhook-id"))
        .arg(header("webhook-timestamp"))
        .arg(header("webhook-signature"))
        .arg(&path);
    let Some(text) = reference_output(
        "standardwebhooks",
        &mut python,
        "NO_STANDARDWEBHOOKS",
        "COMPRESSD_REQUIRE_STANDARDWEBHOOKS",
        "standardwebhooks",
    ) else {
        return;
    };
    assert_eq!(text.trim(), header("webhook-id"));
}
