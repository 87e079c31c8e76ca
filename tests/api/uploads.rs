//! Every kind of bad upload is refused with a problem naming it, leaving no row and no file.

use serde_json::Value;

use crate::helpers::{Backend, TestApp};
use crate::models::{f32_tensor, mlp, safetensors};

/// A file with the given header text and `data_len` zero bytes of data.
fn with_header(header: &str, data_len: usize) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend(std::iter::repeat_n(0u8, data_len));
    out
}

async fn assert_nothing_stored(app: &TestApp) {
    let page = app.get_json("/v1/models").await;
    assert_eq!(page["data"], serde_json::json!([]), "no row was written");
    for dir in ["tmp", "blobs/models"] {
        let path = app.config.data_dir.join(dir);
        let left: Vec<_> = std::fs::read_dir(&path)
            .map(|d| d.collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{dir} still holds {left:?}");
    }
}

async fn malformed_files_are_refused(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let good = mlp();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("too short", vec![1, 2, 3], 422, "8-byte header length"),
        (
            "truncated",
            good[..good.len() - 100].to_vec(),
            422,
            "truncated",
        ),
        (
            "header length past the end",
            {
                let mut b = good.clone();
                b[..8].copy_from_slice(&(good.len() as u64).to_le_bytes());
                b
            },
            422,
            "only",
        ),
        (
            "absurd header length",
            {
                let mut b = good.clone();
                b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
                b
            },
            422,
            "refused",
        ),
        (
            "not JSON",
            with_header("{\"a\": nope}", 4),
            422,
            "not valid JSON",
        ),
        (
            "not an object",
            with_header("[1,2,3]", 0),
            422,
            "not a JSON object",
        ),
        (
            "unknown dtype",
            with_header(
                r#"{"w":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}"#,
                1,
            ),
            422,
            "unknown dtype 'Q4'",
        ),
        (
            "shape/offset mismatch",
            with_header(
                r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                8,
            ),
            422,
            "needs 12 bytes",
        ),
        (
            "offsets past the data",
            with_header(
                r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
                8,
            ),
            422,
            "truncated",
        ),
        (
            "overlap",
            with_header(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                12,
            ),
            422,
            "overlaps",
        ),
        (
            "trailing bytes",
            with_header(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                8,
            ),
            422,
            "trailing",
        ),
        (
            "absurd shape",
            with_header(
                r#"{"a":{"dtype":"F32","shape":[18446744073709551615,4],"data_offsets":[0,4]}}"#,
                4,
            ),
            422,
            "overflows",
        ),
        ("no tensors", with_header("{}", 0), 422, "no tensors"),
        ("empty", vec![], 400, "empty"),
    ];
    for (what, bytes, status, needle) in cases {
        let res = app.upload(bytes, "bad").await;
        assert_eq!(res.status().as_u16(), status, "{what}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["status"], status, "{what}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(needle), "{what}: {detail}");
    }
    assert_nothing_stored(&app).await;
    app.finish().await;
}

async fn raw_uploads_and_request_errors(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let bytes = mlp();
    let res = app
        .http
        .post(app.url("/v1/models?name=raw-model"))
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let model: Value = res.json().await.unwrap();
    assert_eq!(model["name"], "raw-model");
    assert_eq!(
        app.download(model["file_url"].as_str().unwrap()).await,
        bytes
    );

    let res = app
        .http
        .post(app.url("/v1/models"))
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);

    let form = reqwest::multipart::Form::new().text("name", "x");
    let res = app
        .http
        .post(app.url("/v1/models"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("no 'file' part"));

    let res = app
        .http
        .post(app.url("/v1/models"))
        .header("content-type", "multipart/form-data; boundary=XYZ")
        .body("--XYZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "a cut-off multipart body");

    let res = app.upload(bytes.clone(), "bad\u{7}name").await;
    assert_eq!(res.status(), 400);
    app.finish().await;
}

async fn oversized_uploads_get_413(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |c| c.max_upload_bytes = 4096).await else {
        return;
    };
    // Larger than the limit plus the allowance for multipart framing.
    let big = safetensors(&[f32_tensor("w", &[160, 160], &vec![0.5; 160 * 160])], None);
    assert!(big.len() > 4096 + (64 << 10));

    // Declared up front: refused before the body is read.
    let res = app
        .http
        .post(app.url("/v1/models"))
        .header("content-type", "application/octet-stream")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(res.headers()["content-type"], "application/problem+json");

    // Streamed with no length: refused once the limit is passed.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(1024).map(|c| Ok(c.to_vec())).collect();
    let res = app
        .http
        .post(app.url("/v1/models"))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);

    // Inside a multipart form, declared and not.
    let res = app.upload(big.clone(), "big").await;
    assert_eq!(res.status(), 413);
    let res = app.upload(big[..8192].to_vec(), "big").await;
    assert_eq!(res.status(), 413);
    assert_nothing_stored(&app).await;
    app.finish().await;
}

crate::on_each_backend!(
    malformed_files_are_refused,
    raw_uploads_and_request_errors,
    oversized_uploads_get_413
);
