//! A Hugging Face folder as one model: its files arrive as multipart `files` parts or one tar
//! stream; the folder is checked and its weights joined into one safetensors file (see
//! `compress::format::hf_folder`); the weights and every other file are stored
//! content-addressed and recorded with the model.

use std::path::PathBuf;

use uuid::Uuid;

use super::auth::Caller;
use super::error::ApiError;
use super::stored::{keep, Kept};
use super::upload::{folder_path, TempUpload, MAX_FOLDER_FILES};
use super::AppState;
use crate::compress::format::hf_folder::{assemble, Assembled, FolderFile};
use crate::compress::{CompressError, SafetensorsIndex};
use crate::domain::Code;
use crate::store::{ModelFile, ModelRecord, NewModel};

fn refused(e: CompressError) -> ApiError {
    match e {
        CompressError::Io(io) => ApiError::from(io),
        other => ApiError::new(Code::InvalidModel, other.to_string()),
    }
}

/// Unpacks a tar stream of a folder into uploaded files (regular files only; a single
/// top-level folder that holds everything is stripped, as `tar -C parent -cf - model/` makes).
pub(super) async fn untar(
    app: &AppState,
    tar: TempUpload,
    limit: u64,
) -> Result<Vec<(String, TempUpload)>, ApiError> {
    let dir = app.config.tmp_dir();
    tokio::task::spawn_blocking(move || -> Result<Vec<(String, TempUpload)>, ApiError> {
        let bad = |m: String| ApiError::new(Code::InvalidMultipart, format!("the tar stream: {m}"));
        let mut archive = tar::Archive::new(std::fs::File::open(tar.path())?);
        let mut out: Vec<(String, TempUpload)> = Vec::new();
        let mut total = 0u64;
        for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
            let mut entry = entry.map_err(|e| bad(e.to_string()))?;
            let kind = entry.header().entry_type();
            if kind.is_dir() || kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
                continue;
            }
            let raw = entry
                .path()
                .map_err(|e| bad(e.to_string()))?
                .to_string_lossy()
                .into_owned();
            if !kind.is_file() {
                return Err(bad(format!(
                    "'{raw}' is not a regular file (links are not followed)"
                )));
            }
            let path = folder_path(&raw)?;
            total = total.saturating_add(entry.size());
            if total > limit {
                return Err(ApiError::too_large(limit));
            }
            if out.len() >= MAX_FOLDER_FILES {
                return Err(bad(format!("more than {MAX_FOLDER_FILES} files")));
            }
            let target = dir.join(format!("untar-{}.part", Uuid::new_v4().simple()));
            let mut file = std::fs::File::create(&target)?;
            std::io::copy(&mut entry, &mut file)?;
            file.sync_all()?;
            out.push((path, TempUpload::adopt(target)?));
        }
        strip_common_folder(&mut out);
        Ok(out)
    })
    .await
    .map_err(ApiError::internal)?
}

fn strip_common_folder(files: &mut [(String, TempUpload)]) {
    let first = match files.first().and_then(|(p, _)| p.split_once('/')) {
        Some((top, _)) => format!("{top}/"),
        None => return,
    };
    if files.iter().all(|(p, _)| p.starts_with(&first)) {
        for (p, _) in files.iter_mut() {
            *p = p[first.len()..].to_owned();
        }
    }
}

/// Checks, joins and stores a folder; nothing is kept when any of it is refused.
pub(super) async fn store_folder(
    app: &AppState,
    caller: &Caller,
    files: Vec<(String, TempUpload)>,
    name: String,
) -> Result<ModelRecord, ApiError> {
    let listed: Vec<FolderFile> = files
        .iter()
        .map(|(p, f)| FolderFile {
            path: p.clone(),
            file: f.path().to_owned(),
        })
        .collect();
    let joined_path: PathBuf = app
        .config
        .tmp_dir()
        .join(format!("joined-{}.safetensors", Uuid::new_v4().simple()));
    let joined = joined_path.clone();
    let assembled: Assembled = tokio::task::spawn_blocking(move || assemble(&listed, &joined))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| {
            let _ = std::fs::remove_file(&joined_path);
            refused(e)
        })?;
    let mut by_path: std::collections::HashMap<String, TempUpload> = files.into_iter().collect();
    let weights = if assembled.joined {
        TempUpload::adopt(assembled.weights.clone())?
    } else {
        by_path
            .remove("model.safetensors")
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("the weights file went missing")))?
    };
    let index = {
        let path = weights.path().to_owned();
        tokio::task::spawn_blocking(move || SafetensorsIndex::open(&path))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| refused(e.into()))?
    };
    let mut kept: Vec<Kept> = Vec::new();
    let mut model_files = Vec::new();
    let stored = async {
        let (size, sha) = (weights.size, weights.sha256.clone());
        let weights_kept = keep(app, caller, weights).await?;
        let key = weights_kept.key.clone();
        kept.push(weights_kept);
        for other in &assembled.others {
            let upload = by_path.remove(&other.path).ok_or_else(|| {
                ApiError::internal(anyhow::anyhow!("{} went missing", other.path))
            })?;
            let (file_size, file_sha) = (upload.size, upload.sha256.clone());
            let k = keep(app, caller, upload).await?;
            model_files.push(ModelFile {
                path: other.path.clone(),
                size_bytes: file_size,
                sha256: file_sha,
                blob_key: k.key.clone(),
            });
            kept.push(k);
        }
        Ok::<_, ApiError>((key, size, sha))
    }
    .await;
    let (blob_key, size_bytes, sha256) = match stored {
        Ok(s) => s,
        Err(e) => {
            for k in kept {
                k.abandon(app).await;
            }
            return Err(e);
        }
    };
    let parameter_count = index
        .tensors
        .iter()
        .filter(|t| {
            t.dtype.is_prunable() || matches!(t.dtype, crate::compress::format::dtype::Dtype::F64)
        })
        .map(|t| t.numel())
        .sum();
    let mut metadata = serde_json::to_value(&index.metadata).map_err(ApiError::internal)?;
    if let (serde_json::Value::Object(m), false) = (&mut metadata, assembled.notes.is_empty()) {
        m.insert("compressd.note".into(), assembled.notes.join(" ").into());
    }
    let new = NewModel {
        id: Uuid::now_v7(),
        tenant_id: caller.tenant_id().to_owned(),
        name,
        format: "hf".into(),
        size_bytes,
        sha256,
        tensor_count: index.tensors.len() as u64,
        parameter_count,
        tensors: serde_json::to_value(&index.tensors).map_err(ApiError::internal)?,
        metadata,
        blob_key,
        architecture: None,
        config: Some(assembled.config),
        files: model_files,
    };
    let inserted = app.store.insert_model(&new).await;
    for k in kept {
        match &inserted {
            Ok(_) => k.named(app).await,
            Err(_) => k.abandon(app).await,
        }
    }
    let model = inserted?;
    tracing::info!(model_id = %model.id, bytes = model.size_bytes, files = model.files.len(), "model folder stored");
    Ok(model)
}
