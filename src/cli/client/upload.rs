//! `compressd upload`: a file or a Hugging Face folder (sent as a tar stream) becomes a model or
//! a dataset. Small files go in one request; larger ones in a resumable upload whose id is
//! remembered under the user's cache directory, so that running the command again after an
//! interruption sends only the parts the server does not have.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;
use indicatif::ProgressBar;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::args::UploadArgs;
use super::connection::{read_json, Connection, Failure};
use super::folder_tar::tar_folder;
use super::progress;

/// What the bytes become on the server (the resumable upload's `as`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Model,
    Dataset,
    Folder,
}

impl Target {
    fn as_str(self) -> &'static str {
        match self {
            Target::Model => "model",
            Target::Dataset => "dataset",
            Target::Folder => "folder",
        }
    }
}

pub async fn upload(args: UploadArgs) -> Result<(), Failure> {
    let conn = Connection::new(&args.server)?;
    let meta = std::fs::metadata(&args.path)
        .map_err(|e| Failure::local(&args.path.display().to_string(), e))?;
    let name = match &args.name {
        Some(name) => name.clone(),
        None => args
            .path
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into()),
    };
    let (target, _tar, file) = if meta.is_dir() {
        if args.dataset {
            return Err(Failure::Input(
                "a dataset is one file, not a folder".to_owned(),
            ));
        }
        let dir = args.path.clone();
        let tar = tokio::task::spawn_blocking(move || tar_folder(&dir))
            .await
            .map_err(|e| Failure::Unavailable(e.to_string()))??;
        let path = tar.path().to_owned();
        (Target::Folder, Some(tar), path)
    } else if args.dataset {
        (Target::Dataset, None, args.path.clone())
    } else {
        (Target::Model, None, args.path.clone())
    };
    let size = std::fs::metadata(&file)
        .map_err(|e| Failure::local(&file.display().to_string(), e))?
        .len();
    let view = if size <= args.part_size {
        direct(&conn, &file, size, &name, target).await?
    } else {
        resumable(&conn, &file, size, &name, target, &args).await?
    };
    let id = view["id"].as_str().unwrap_or_default().to_owned();
    conn.say(&format!(
        "stored {} {id} '{name}' ({})",
        if target == Target::Dataset {
            "dataset"
        } else {
            "model"
        },
        progress::human_bytes(size)
    ));
    conn.print(&view, &id);
    Ok(())
}

/// One request: multipart with the file streamed from disk, or a folder's tar as raw bytes.
async fn direct(
    conn: &Connection,
    file: &Path,
    size: u64,
    name: &str,
    target: Target,
) -> Result<Value, Failure> {
    let bar = progress::bytes(conn, size, "uploading");
    let route = if target == Target::Dataset {
        "/v1/datasets"
    } else {
        "/v1/models"
    };
    let url = conn.url(route);
    let file_name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "upload".into());
    let res = conn
        .send("uploading", |http| {
            bar.set_position(0);
            let body = file_body(file, bar.clone())?;
            Ok(match target {
                Target::Folder => http
                    .post(&url)
                    .query(&[("name", name)])
                    .header("content-type", "application/x-tar")
                    .body(body),
                Target::Model | Target::Dataset => {
                    let part = reqwest::multipart::Part::stream_with_length(body, size)
                        .file_name(file_name.clone())
                        .mime_str("application/octet-stream")
                        .expect("a valid mime type");
                    let form = reqwest::multipart::Form::new()
                        .part("file", part)
                        .text("name", name.to_owned());
                    http.post(&url).multipart(form)
                }
            })
        })
        .await?;
    bar.finish_and_clear();
    read_json("uploading", res).await
}

/// The file as a request body read as it is sent, counting bytes on `bar`.
fn file_body(path: &Path, bar: ProgressBar) -> Result<reqwest::Body, Failure> {
    let file =
        std::fs::File::open(path).map_err(|e| Failure::local(&path.display().to_string(), e))?;
    let stream =
        tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), 1 << 20)
            .inspect(move |chunk| {
                if let Ok(chunk) = chunk {
                    bar.inc(chunk.len() as u64);
                }
            });
    Ok(reqwest::Body::wrap_stream(stream))
}

/// Where a resumable upload of these bytes to this server is remembered.
#[derive(serde::Serialize, serde::Deserialize)]
struct Remembered {
    server: String,
    upload_id: String,
}

fn state_path(sha256: &str, part_size: u64) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(
        base.join("compressd")
            .join("uploads")
            .join(format!("{sha256}-{part_size}.json")),
    )
}

async fn resumable(
    conn: &Connection,
    file: &Path,
    size: u64,
    name: &str,
    target: Target,
    args: &UploadArgs,
) -> Result<Value, Failure> {
    let (sha256, part_hashes) = hash_in_parts(conn, file, size, args.part_size).await?;
    let state = state_path(&sha256, args.part_size);
    let upload = match remembered(conn, state.as_deref()).await {
        Some(upload) => {
            conn.say(&format!(
                "resuming upload {} ({} of {} parts already there)",
                upload["id"].as_str().unwrap_or_default(),
                upload["parts"].as_array().map_or(0, Vec::len),
                part_hashes.len()
            ));
            upload
        }
        None => {
            let url = conn.url("/v1/uploads");
            let res = conn
                .send("starting the upload", |http| {
                    Ok(http.post(&url).json(&json!({})))
                })
                .await?;
            let upload = read_json("starting the upload", res).await?;
            if let Some(path) = &state {
                let remember = Remembered {
                    server: conn.base.clone(),
                    upload_id: upload["id"].as_str().unwrap_or_default().to_owned(),
                };
                // Only resuming needs it: an upload that cannot be remembered still goes on.
                let _ = std::fs::create_dir_all(path.parent().expect("a cache subfolder"))
                    .and_then(|()| {
                        std::fs::write(path, serde_json::to_vec(&remember).unwrap_or_default())
                    });
            }
            upload
        }
    };
    let present: std::collections::HashMap<i64, String> = upload["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["number"].as_i64()?, p["sha256"].as_str()?.to_owned())))
        .collect();
    let part_url = upload["part_url"].as_str().unwrap_or_default().to_owned();
    let bar = progress::bytes(conn, size, "uploading");
    let mut sent = 0u64;
    for (index, part_hash) in part_hashes.iter().enumerate() {
        let number = index as i64 + 1;
        let offset = index as u64 * args.part_size;
        let len = args.part_size.min(size - offset);
        if present.get(&number) == Some(part_hash) {
            bar.inc(len);
            continue;
        }
        let bytes = read_range(file, offset, len).await?;
        let url = conn.url(&part_url.replace("{number}", &number.to_string()));
        let what = format!("sending part {number}");
        let res = conn
            .send(&what, |http| {
                bar.set_position(offset);
                Ok(http
                    .put(&url)
                    .header("content-type", "application/octet-stream")
                    .body(counted_body(bytes.clone(), bar.clone())))
            })
            .await?;
        let stored = read_json(&what, res).await?;
        if stored["sha256"].as_str() != Some(part_hash.as_str()) {
            return Err(Failure::Unavailable(format!(
                "part {number} arrived changed (server SHA-256 {}, sent {part_hash})",
                stored["sha256"]
            )));
        }
        sent += 1;
        if args.stop_after_parts == Some(sent) {
            bar.abandon();
            return Err(Failure::Unavailable(format!(
                "stopped after {sent} parts (--stop-after-parts); run the same command again to resume"
            )));
        }
    }
    bar.finish_and_clear();
    let url = conn.url(upload["complete_url"].as_str().unwrap_or_default());
    let body = json!({ "sha256": sha256, "as": target.as_str(), "name": name });
    let res = conn
        .send("completing the upload", |http| {
            Ok(http.post(&url).json(&body))
        })
        .await?;
    let view = read_json("completing the upload", res).await?;
    if let Some(path) = state {
        let _ = std::fs::remove_file(path);
    }
    Ok(view)
}

/// The upload this command started before, if the server still has it.
async fn remembered(conn: &Connection, state: Option<&Path>) -> Option<Value> {
    let saved: Remembered = serde_json::from_slice(&std::fs::read(state?).ok()?).ok()?;
    if saved.server != conn.base {
        return None;
    }
    let url = conn.url(&format!("/v1/uploads/{}", saved.upload_id));
    // Gone (expired, completed, or another tenant's key): a new one is started.
    let res = conn
        .send("looking up the earlier upload", |http| Ok(http.get(&url)))
        .await
        .ok()?;
    read_json("looking up the earlier upload", res).await.ok()
}

/// The whole file's SHA-256 and each part's, in one read.
async fn hash_in_parts(
    conn: &Connection,
    file: &Path,
    size: u64,
    part_size: u64,
) -> Result<(String, Vec<String>), Failure> {
    let bar = progress::bytes(conn, size, "hashing");
    let path = file.to_owned();
    let counted = bar.clone();
    let hashed = tokio::task::spawn_blocking(move || -> std::io::Result<(String, Vec<String>)> {
        let mut f = std::fs::File::open(&path)?;
        let mut whole = Sha256::new();
        let mut parts = Vec::new();
        let mut buf = vec![0u8; 4 << 20];
        loop {
            let mut part = Sha256::new();
            let mut left = part_size;
            while left > 0 {
                let want = buf.len().min(left as usize);
                let n = f.read(&mut buf[..want])?;
                if n == 0 {
                    break;
                }
                whole.update(&buf[..n]);
                part.update(&buf[..n]);
                counted.inc(n as u64);
                left -= n as u64;
            }
            if left == part_size {
                break;
            }
            parts.push(hex::encode(part.finalize()));
            if left > 0 {
                break;
            }
        }
        Ok((hex::encode(whole.finalize()), parts))
    })
    .await
    .map_err(|e| Failure::Unavailable(e.to_string()))?
    .map_err(|e| Failure::local(&file.display().to_string(), e))?;
    bar.finish_and_clear();
    Ok(hashed)
}

async fn read_range(file: &Path, offset: u64, len: u64) -> Result<Bytes, Failure> {
    let path = file.to_owned();
    tokio::task::spawn_blocking(move || -> std::io::Result<Bytes> {
        let mut f = std::fs::File::open(&path)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = vec![0u8; len as usize];
        f.read_exact(&mut buf)?;
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(|e| Failure::Unavailable(e.to_string()))?
    .map_err(|e| Failure::local(&file.display().to_string(), e))
}

/// A part's bytes as a body sent in 1 MiB pieces, each counted on `bar` as it goes out.
fn counted_body(bytes: Bytes, bar: ProgressBar) -> reqwest::Body {
    let len = bytes.len();
    let pieces = (0..len).step_by(1 << 20).map(move |start| {
        let piece = bytes.slice(start..(start + (1 << 20)).min(len));
        bar.inc(piece.len() as u64);
        Ok::<_, std::io::Error>(piece)
    });
    reqwest::Body::wrap_stream(futures::stream::iter(pieces))
}
