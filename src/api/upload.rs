//! Receiving an upload: stream the body to a temporary file, hashing as it goes on a blocking
//! thread, and stop at the size limit. The temporary file is removed unless it is kept.

use std::io::Write;
use std::path::{Path, PathBuf};

use axum::body::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use uuid::Uuid;

use std::collections::HashMap;

use axum::extract::Request;
use axum::http::header;
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ApiError;
use super::AppState;
use crate::domain::Code;

/// A received upload on local disk; deleted on drop unless `keep` was called.
#[derive(Debug)]
pub struct TempUpload {
    path: PathBuf,
    pub size: u64,
    pub sha256: String,
    kept: bool,
}

impl TempUpload {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adopts a file the server wrote itself (e.g. generated weights).
    pub fn adopt(path: PathBuf) -> std::io::Result<TempUpload> {
        let bytes = std::fs::read(&path)?;
        Ok(TempUpload {
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(&bytes)),
            path,
            kept: false,
        })
    }

    /// The file now belongs elsewhere (it was moved); do not delete it.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for TempUpload {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Why receiving stopped early.
pub enum ReceiveError {
    TooLarge,
    /// Nothing arrived for the idle timeout (a stalled or slow-loris client).
    Stalled(std::time::Duration),
    Body(String),
    Io(std::io::Error),
}

impl ReceiveError {
    pub fn into_api(self, limit: u64) -> ApiError {
        match self {
            ReceiveError::TooLarge => ApiError::too_large(limit),
            ReceiveError::Stalled(idle) => ApiError::new(Code::UploadStalled, format!("no data arrived for {} s; the upload was cut off (resend it, or use resumable uploads for slow links)", idle.as_secs()),
            ),
            ReceiveError::Body(msg) => ApiError::new(Code::UploadInterrupted, format!("reading the upload failed: {msg}"),
            ),
            ReceiveError::Io(e) => ApiError::internal(e),
        }
    }
}

/// Reads and discards what is left of a refused body, a little of it: a client that is still
/// sending when the connection closes often sees a reset instead of the answer, so a small
/// overshoot is absorbed and a large one is cut off.
pub async fn drain<S, E>(body: std::pin::Pin<&mut S>)
where
    S: Stream<Item = Result<Bytes, E>>,
{
    const MAX_BYTES: usize = 1 << 20;
    let mut body = body;
    let mut seen = 0usize;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
    while seen < MAX_BYTES {
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(Ok(bytes))) => seen += bytes.len(),
            _ => break,
        }
    }
}

/// Streams `body` into a new file under `tmp_dir`, refusing to go past `limit` bytes.
pub async fn receive<S, E>(
    body: S,
    tmp_dir: &Path,
    limit: u64,
    idle: std::time::Duration,
) -> Result<TempUpload, ReceiveError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    tokio::fs::create_dir_all(tmp_dir)
        .await
        .map_err(ReceiveError::Io)?;
    let path = tmp_dir.join(format!("upload-{}.part", Uuid::new_v4().simple()));
    let mut upload = TempUpload {
        path: path.clone(),
        size: 0,
        sha256: String::new(),
        kept: false,
    };
    let file = std::fs::File::create(&path).map_err(ReceiveError::Io)?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(32);
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        let mut file = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut hasher = Sha256::new();
        while let Some(chunk) = rx.blocking_recv() {
            hasher.update(&chunk);
            file.write_all(&chunk)?;
        }
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(hex::encode(hasher.finalize()))
    });

    let mut body = std::pin::pin!(body);
    let mut failure = None;
    loop {
        let chunk = match tokio::time::timeout(idle, body.next()).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(_) => {
                failure = Some(ReceiveError::Stalled(idle));
                break;
            }
        };
        match chunk {
            Ok(bytes) => {
                upload.size += bytes.len() as u64;
                if upload.size > limit {
                    failure = Some(ReceiveError::TooLarge);
                    drain(body.as_mut()).await;
                    break;
                }
                metrics::counter!("compressd_upload_bytes_total").increment(bytes.len() as u64);
                if tx.send(bytes).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failure = Some(ReceiveError::Body(e.to_string()));
                break;
            }
        }
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| ReceiveError::Io(std::io::Error::other(e)))?;
    if let Some(f) = failure {
        return Err(f);
    }
    upload.sha256 = written.map_err(ReceiveError::Io)?;
    Ok(upload)
}

/// A multipart form: at most one `file` part streamed to disk, plus short text parts.
pub struct Form {
    pub file: Option<TempUpload>,
    pub file_name: Option<String>,
    pub texts: std::collections::HashMap<String, String>,
}

/// Reads a multipart body whose text parts are `texts` (name, size limit in bytes).
pub async fn receive_form(
    tmp_dir: &Path,
    limit: u64,
    idle: std::time::Duration,
    content_type: &str,
    body: axum::body::Body,
    texts: &[(&str, u64)],
) -> Result<Form, ApiError> {
    use futures::TryStreamExt;
    let boundary = multer::parse_boundary(content_type).map_err(|e| {
        ApiError::new(
            Code::InvalidMultipart,
            format!("bad multipart Content-Type: {e}"),
        )
    })?;
    let mut sizes = multer::SizeLimit::new();
    for (name, max) in texts {
        sizes = sizes.for_field(*name, *max);
    }
    let constraints = multer::Constraints::new().size_limit(sizes);
    let mut form =
        multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let bad = |e: multer::Error| {
        ApiError::new(
            Code::InvalidMultipart,
            format!("malformed multipart body: {e}"),
        )
    };
    let mut out = Form {
        file: None,
        file_name: None,
        texts: Default::default(),
    };
    let expected = || {
        let names: Vec<&str> = texts.iter().map(|(n, _)| *n).collect();
        format!("'file' and optionally {names:?}")
    };
    let stalled = |_| ReceiveError::Stalled(idle).into_api(limit);
    while let Some(field) = tokio::time::timeout(idle, form.next_field())
        .await
        .map_err(stalled)?
        .map_err(bad)?
    {
        let name = field.name().map(str::to_owned);
        match name.as_deref() {
            Some("file") if out.file.is_some() => {
                return Err(ApiError::new(
                    Code::InvalidMultipart,
                    "send exactly one 'file' part",
                ));
            }
            Some("file") => {
                out.file_name = field.file_name().map(str::to_owned);
                let stream = field.map_err(|e| e.to_string());
                out.file = Some(
                    receive(stream, tmp_dir, limit, idle)
                        .await
                        .map_err(|e| e.into_api(limit))?,
                );
            }
            Some(n) if texts.iter().any(|(t, _)| *t == n) => {
                if out.texts.contains_key(n) {
                    return Err(ApiError::new(
                        Code::InvalidMultipart,
                        format!("send at most one '{n}' part"),
                    ));
                }
                let text = tokio::time::timeout(idle, field.text())
                    .await
                    .map_err(stalled)?
                    .map_err(bad)?;
                out.texts.insert(n.to_owned(), text);
            }
            other => {
                return Err(ApiError::new(
                    Code::InvalidMultipart,
                    format!("unexpected part {other:?}; send {}", expected()),
                ))
            }
        }
    }
    Ok(out)
}

const MAX_NAME_CHARS: usize = 200;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Model name (raw uploads; multipart uploads may send a `name` part instead).
    pub name: Option<String>,
}

/// Receives a raw or multipart upload: the file (if any), the text parts, the file's name.
pub(super) async fn receive_upload(
    app: &AppState,
    request: Request,
    limit: u64,
    parts: &[(&str, u64)],
) -> Result<(Option<TempUpload>, HashMap<String, String>, Option<String>), ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let too_large = |n: u64| n > limit.saturating_add(64 << 10).saturating_add(1 << 20);
    if declared.is_some_and(too_large) {
        drain(std::pin::pin!(request.into_body().into_data_stream())).await;
        return Err(ApiError::too_large(limit));
    }
    if content_type.starts_with("multipart/form-data") {
        let form = receive_form(
            &app.config.tmp_dir(),
            limit,
            app.body_idle(),
            &content_type,
            request.into_body(),
            parts,
        )
        .await?;
        Ok((form.file, form.texts, form.file_name))
    } else if content_type.starts_with("application/octet-stream") {
        let stream = request.into_body().into_data_stream();
        let upload = receive(stream, &app.config.tmp_dir(), limit, app.body_idle())
            .await
            .map_err(|e| e.into_api(limit))?;
        Ok((Some(upload), HashMap::new(), None))
    } else {
        Err(ApiError::new(Code::UnsupportedMediaType, format!("Content-Type '{content_type}' is not accepted: send multipart/form-data with a 'file' part, or application/octet-stream"),
        ))
    }
}

/// A model or dataset name: trimmed, at most 200 characters, no control characters.
pub(super) fn validate_name(name: Option<String>) -> Result<String, ApiError> {
    let name = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    let Some(name) = name else {
        return Ok("model".into());
    };
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::new(Code::InvalidName, format!("a model name must be at most {MAX_NAME_CHARS} characters with no control characters"),
        ));
    }
    Ok(name)
}
