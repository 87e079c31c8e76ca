//! Hostile clients: stalled bodies, oversized headers, names that try to climb out of the data
//! directory or carry control characters.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{paths_under, Backend, TestApp};
use crate::models::mlp;

/// Sends `head` and `body` on a raw connection, keeps it open, and returns what the server
/// answers within `wait` (None if it said nothing).
async fn raw(app: &TestApp, head: &str, body: &[u8], wait: Duration) -> Option<String> {
    let addr = app.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let _ = stream.write_all(body).await;
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(wait, stream.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    }
}

async fn stalled_uploads_are_cut_off(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |c| c.body_idle_timeout_ms = 300).await else {
        return;
    };
    let head = "POST /v1/models?name=slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n";
    let answer = raw(&app, head, &[0u8; 100], Duration::from_secs(10))
        .await
        .expect("the server answers a stalled upload");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("upload-stalled"), "{answer}");
    // A multipart body that stalls between parts is cut off too.
    let head = "POST /v1/models HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: 100000\r\n\r\n";
    let answer = raw(
        &app,
        head,
        b"--B\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nx\r\n",
        Duration::from_secs(10),
    )
    .await
    .expect("the server answers a stalled form");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let models = app.get_json("/v1/models").await;
    assert!(models["data"].as_array().unwrap().is_empty());
    let tmp = std::fs::read_dir(app.config.tmp_dir()).unwrap().count();
    assert_eq!(tmp, 0, "no partial upload file is left");
    app.finish().await;
}

async fn trickled_headers_are_cut_off(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |c| c.header_timeout_ms = 300).await else {
        return;
    };
    let addr = app.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            // Keep trickling, as a slow-loris client does, until the server gives up.
            if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
                return 0;
            }
            tokio::select! {
                n = stream.read(&mut buf) => return n.unwrap_or(0),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    })
    .await
    .expect("the server closes a connection whose headers never end");
    let answer = String::from_utf8_lossy(&buf[..read]);
    assert!(read == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(app.get_json("/healthz").await["status"], "ok");
    app.finish().await;
}

async fn oversized_headers_are_refused_and_the_server_keeps_serving(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let huge = "a".repeat(1 << 20);
    let head = format!("GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: {huge}\r\n\r\n");
    let answer = raw(&app, &head, b"", Duration::from_secs(10))
        .await
        .expect("an answer");
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    assert_eq!(app.get_json("/healthz").await["status"], "ok");
    app.finish().await;
}

async fn hostile_names_stay_names(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    // Path separators in a name are only characters: the file lives under its hash.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(mlp()).file_name("../../../etc/evil.safetensors"),
    );
    let res = app
        .http
        .post(app.url("/v1/models"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let model: serde_json::Value = res.json().await.unwrap();
    assert_eq!(model["name"], "../../../etc/evil");
    let res = app
        .http
        .get(app.url(&format!(
            "/v1/models/{}/file",
            model["id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    let disposition = res.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!disposition.contains('/'), "{disposition}");
    let root = app.config.data_dir.parent().unwrap();
    assert!(!root.join("etc").exists());
    for entry in paths_under(&app.config.data_dir) {
        assert!(
            !entry.to_string_lossy().contains("evil"),
            "{}",
            entry.display()
        );
    }
    // Control characters and overlong names are refused.
    for name in ["a%07b", "line%0Abreak", &"x".repeat(300)] {
        let res = app
            .http
            .post(app.url(&format!("/v1/models?name={name}")))
            .header("content-type", "application/octet-stream")
            .body(mlp())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{name}");
    }
    // Ids that are paths are just unknown ids.
    for path in [
        "/v1/models/..%2F..%2Fetc%2Fpasswd",
        "/v1/artifacts/%2e%2e/file",
        "/v1/jobs/..%00/events",
    ] {
        let res = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
    }
    app.finish().await;
}

/// Connections that send nothing are closed once the header timeout has passed since they were
/// accepted, and one address holds at most its share of connections: those over it are
/// answered 429 at once and closed. (1 100 silent connections once locked everyone out.)
async fn silent_and_surplus_connections_are_closed(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |c| {
        c.header_timeout_ms = 300;
        c.max_connections_per_ip = 4;
    })
    .await
    else {
        return;
    };
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(&addr).await.unwrap());
    }
    let (mut refused, mut closed) = (0, 0);
    for stream in &mut silent {
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("every silent connection is answered or closed")
            .unwrap_or(0);
        let answer = String::from_utf8_lossy(&buf[..n]);
        if n == 0 {
            closed += 1;
        } else {
            assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
            assert!(answer.contains("too-many-connections"), "{answer}");
            refused += 1;
        }
    }
    // The test's own HTTP client may hold one pooled connection from the same address.
    assert!(
        refused >= 4 - 1 && closed >= 4 - 1,
        "{refused} refused, {closed} closed"
    );
    drop(silent);
    assert_eq!(app.get_json("/healthz").await["status"], "ok");
    app.finish().await;
}

crate::on_each_backend!(
    silent_and_surplus_connections_are_closed,
    stalled_uploads_are_cut_off,
    trickled_headers_are_cut_off,
    oversized_headers_are_refused_and_the_server_keeps_serving,
    hostile_names_stay_names,
);
