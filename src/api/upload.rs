//! Receiving an upload: stream the body to a temporary file, hashing as it goes on a blocking
//! thread, and stop at the size limit. The temporary file is removed unless it is kept.

use std::io::Write;
use std::path::{Path, PathBuf};

use axum::body::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
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

    /// Adopts a file the server wrote itself (e.g. generated weights), hashing it as it reads.
    pub fn adopt(path: PathBuf) -> std::io::Result<TempUpload> {
        let mut upload = TempUpload {
            path,
            size: 0,
            sha256: String::new(),
            kept: false,
        };
        let mut file = std::fs::File::open(&upload.path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut file, &mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            upload.size += n as u64;
        }
        upload.sha256 = hex::encode(hasher.finalize());
        Ok(upload)
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
            ReceiveError::Io(e) => ApiError::from(e),
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

/// Bytes gathered before a write: a blocking thread is borrowed only to write (and hash) a
/// full batch, never to wait for a slow client.
const WRITE_BATCH: usize = 4 << 20;

/// The file being written and the hash of what it holds so far, handed to a blocking thread
/// for each batch and back.
struct Sink {
    file: std::fs::File,
    hasher: Sha256,
}

impl Sink {
    fn write(mut self, batch: Vec<Bytes>) -> std::io::Result<Sink> {
        for chunk in &batch {
            self.hasher.update(chunk);
            self.file.write_all(chunk)?;
        }
        Ok(self)
    }
}

/// Writes batches one at a time, each on a blocking thread, the next gathered meanwhile.
struct Writer {
    idle: Option<Sink>,
    busy: Option<tokio::task::JoinHandle<std::io::Result<Sink>>>,
}

impl Writer {
    async fn sink(&mut self) -> std::io::Result<Sink> {
        match (self.idle.take(), self.busy.take()) {
            (Some(sink), _) => Ok(sink),
            (None, Some(task)) => task.await.map_err(std::io::Error::other)?,
            (None, None) => Err(std::io::Error::other("the upload's file was lost")),
        }
    }

    async fn write(&mut self, batch: Vec<Bytes>) -> std::io::Result<()> {
        let sink = self.sink().await?;
        self.busy = Some(tokio::task::spawn_blocking(move || sink.write(batch)));
        Ok(())
    }

    /// Writes what is left, makes the file durable and returns its hash.
    async fn finish(mut self, batch: Vec<Bytes>) -> std::io::Result<String> {
        let sink = self.sink().await?;
        tokio::task::spawn_blocking(move || {
            let sink = sink.write(batch)?;
            sink.file.sync_all()?;
            Ok(hex::encode(sink.hasher.finalize()))
        })
        .await
        .map_err(std::io::Error::other)?
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
    let file = tokio::fs::File::create(&path)
        .await
        .map_err(ReceiveError::Io)?
        .into_std()
        .await;
    let mut writer = Writer {
        idle: Some(Sink {
            file,
            hasher: Sha256::new(),
        }),
        busy: None,
    };
    let (mut batch, mut batched) = (Vec::new(), 0usize);
    let mut body = std::pin::pin!(body);
    loop {
        let chunk = match tokio::time::timeout(idle, body.next()).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(_) => return Err(ReceiveError::Stalled(idle)),
        };
        let bytes = chunk.map_err(|e| ReceiveError::Body(e.to_string()))?;
        upload.size += bytes.len() as u64;
        if upload.size > limit {
            drain(body.as_mut()).await;
            return Err(ReceiveError::TooLarge);
        }
        metrics::counter!("compressd_upload_bytes_total").increment(bytes.len() as u64);
        batched += bytes.len();
        batch.push(bytes);
        if batched >= WRITE_BATCH {
            writer
                .write(std::mem::take(&mut batch))
                .await
                .map_err(ReceiveError::Io)?;
            batched = 0;
        }
    }
    upload.sha256 = writer.finish(batch).await.map_err(ReceiveError::Io)?;
    Ok(upload)
}

/// A multipart form: at most one `file` part, or the `files` of a folder (each named by its
/// path inside the folder), streamed to disk, plus short text parts.
pub struct Form {
    pub file: Option<TempUpload>,
    pub file_name: Option<String>,
    pub files: Vec<(String, TempUpload)>,
    pub texts: std::collections::HashMap<String, String>,
}

/// Files in one uploaded folder.
pub const MAX_FOLDER_FILES: usize = 1000;

/// A path inside an uploaded folder, as its part's file name gives it: relative, `/`-separated,
/// no `.` or `..`, at most 8 levels and 255 characters, no control characters or backslashes.
pub fn folder_path(name: &str) -> Result<String, ApiError> {
    let name = name.trim_start_matches("./");
    let parts: Vec<&str> = name.split('/').collect();
    let ok = !name.is_empty()
        && name.len() <= 255
        && parts.len() <= 8
        && parts
            .iter()
            .all(|p| !p.is_empty() && *p != "." && *p != "..")
        && !name.chars().any(|c| c.is_control() || c == '\\');
    if ok {
        Ok(name.to_owned())
    } else {
        Err(ApiError::new(
            Code::InvalidMultipart,
            format!("'{name}' is not a path inside a folder: use a relative path of at most 8 parts and 255 characters, '/'-separated, without '.' or '..'"),
        ))
    }
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
        files: Vec::new(),
        texts: Default::default(),
    };
    let expected = || {
        let names: Vec<&str> = texts.iter().map(|(n, _)| *n).collect();
        format!(
            "'file' (or a folder's 'files', each named by its path), and optionally {}",
            names.join(", ")
        )
    };
    let mut received = 0u64;
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
            Some("file") if !out.files.is_empty() => {
                return Err(ApiError::new(
                    Code::InvalidMultipart,
                    "send either one 'file' or a folder's 'files', not both",
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
            Some("files") => {
                if out.file.is_some() || out.files.len() >= MAX_FOLDER_FILES {
                    return Err(ApiError::new(Code::InvalidMultipart, format!("send either one 'file' or at most {MAX_FOLDER_FILES} 'files' of a folder")));
                }
                let path = folder_path(field.file_name().unwrap_or_default())?;
                if out.files.iter().any(|(p, _)| *p == path) {
                    return Err(ApiError::new(
                        Code::InvalidMultipart,
                        format!("'{path}' is sent twice"),
                    ));
                }
                let stream = field.map_err(|e| e.to_string());
                let left = limit.saturating_sub(received);
                let file = receive(stream, tmp_dir, left, idle)
                    .await
                    .map_err(|e| e.into_api(limit))?;
                received += file.size;
                out.files.push((path, file));
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
                let part = other.map_or_else(
                    || "a part without a name".to_owned(),
                    |n| format!("unexpected part '{n}'"),
                );
                return Err(ApiError::new(
                    Code::InvalidMultipart,
                    format!("{part}; send {}", expected()),
                ));
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

/// What an upload request carried.
pub struct Received {
    /// One file: a multipart `file` part, or a raw body.
    pub file: Option<TempUpload>,
    /// The files of a folder, by path: multipart `files` parts.
    pub folder: Vec<(String, TempUpload)>,
    /// A tar stream of a folder (`application/x-tar`), not yet unpacked.
    pub tar: Option<TempUpload>,
    pub texts: HashMap<String, String>,
    /// The `file` part's file name.
    pub file_name: Option<String>,
}

/// Receives a raw, tar or multipart upload.
pub(super) async fn receive_upload(
    app: &AppState,
    request: Request,
    limit: u64,
    parts: &[(&str, u64)],
) -> Result<Received, ApiError> {
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
    let mut received = Received {
        file: None,
        folder: Vec::new(),
        tar: None,
        texts: HashMap::new(),
        file_name: None,
    };
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
        received.file = form.file;
        received.folder = form.files;
        received.texts = form.texts;
        received.file_name = form.file_name;
        return Ok(received);
    }
    let tar = content_type.starts_with("application/x-tar")
        || content_type.starts_with("application/tar");
    if !tar && !content_type.starts_with("application/octet-stream") {
        return Err(ApiError::new(Code::UnsupportedMediaType, format!("Content-Type '{content_type}' is not accepted: send multipart/form-data with a 'file' part (or a folder's 'files'), application/octet-stream, or a folder as application/x-tar"),
        ));
    }
    let stream = request.into_body().into_data_stream();
    let upload = receive(stream, &app.config.tmp_dir(), limit, app.body_idle())
        .await
        .map_err(|e| e.into_api(limit))?;
    if tar {
        received.tar = Some(upload);
    } else {
        received.file = Some(upload);
    }
    Ok(received)
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
