//! Receiving an upload: stream the body to a temporary file, hashing as it goes on a blocking
//! thread, and stop at the size limit. The temporary file is removed unless it is kept.

use std::io::Write;
use std::path::{Path, PathBuf};

use axum::body::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::error::ApiError;

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
    Body(String),
    Io(std::io::Error),
}

impl ReceiveError {
    pub fn into_api(self, limit: u64) -> ApiError {
        match self {
            ReceiveError::TooLarge => ApiError::too_large(limit),
            ReceiveError::Body(msg) => ApiError::bad_request(
                "upload-interrupted",
                format!("reading the upload failed: {msg}"),
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
pub async fn receive<S, E>(body: S, tmp_dir: &Path, limit: u64) -> Result<TempUpload, ReceiveError>
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
    while let Some(chunk) = body.next().await {
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
