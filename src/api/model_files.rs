//! What makes an uploaded file a model: a valid safetensors file (checked tensor by tensor),
//! weights that fit its architecture when it has one, fresh weights for an architecture-only
//! upload, and the row that records it once its bytes are stored.

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;
use uuid::Uuid;

use super::auth::Caller;
use super::error::ApiError;
use super::upload::TempUpload;
use super::AppState;
use crate::compress::nn::{check_weights, write_initial};
use crate::compress::{OpenError, SafetensorsIndex, TensorEntry};
use crate::domain::{Architecture, Code};
use crate::store::NewModel;

/// A `config.json` (a JSON object), kept to be written beside compressed artifacts.
pub(super) fn parse_config(text: &str) -> Result<Value, ApiError> {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(ApiError::new(
            Code::InvalidConfig,
            "the 'config' part must be a JSON object (a model's config.json)",
        )),
        Err(e) => Err(ApiError::new(
            Code::InvalidConfig,
            format!("the 'config' part is not JSON: {e}"),
        )),
    }
}

pub(super) fn parse_architecture(text: &str) -> Result<Architecture, ApiError> {
    Architecture::parse_json(text).map_err(|e| ApiError::new(Code::InvalidArchitecture, e.0))
}

/// Fresh weights for an architecture-only upload, written like an uploaded file. They count
/// like an upload: refused before they are made when they would pass the upload limit or the
/// tenant's storage.
pub(super) async fn initial_weights(
    app: &AppState,
    caller: &Caller,
    arch: &Architecture,
    seed: Option<String>,
) -> Result<TempUpload, ApiError> {
    let bytes: u64 = arch
        .params()
        .iter()
        .map(|p| crate::domain::volume(&p.shape).unwrap_or(u64::MAX / 8) * 4)
        .fold(0u64, u64::saturating_add);
    let limit = app.config.max_upload_bytes;
    if bytes > limit {
        return Err(ApiError::new(
            Code::UploadTooLarge,
            format!("the architecture's weights take {bytes} bytes as f32, over the upload limit of {limit} bytes (COMPRESSD_MAX_UPLOAD_BYTES): generated weights count like uploaded ones"),
        ));
    }
    super::stored::check_room(app, caller, bytes).await?;
    let seed = match seed {
        Some(s) => s.trim().parse::<u64>().map_err(|_| {
            ApiError::new(
                Code::InvalidSeed,
                format!("seed must be a non-negative integer, got '{s}'"),
            )
        })?,
        None => 0,
    };
    let path = app
        .config
        .tmp_dir()
        .join(format!("init-{}.safetensors", Uuid::new_v4().simple()));
    let arch = arch.clone();
    tokio::task::spawn_blocking(move || {
        let mut rng = StdRng::seed_from_u64(seed);
        let written = write_initial(&arch, &mut rng, &path);
        match written {
            Ok(_) => TempUpload::adopt(path).map_err(ApiError::internal),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(ApiError::internal(e))
            }
        }
    })
    .await
    .map_err(ApiError::internal)?
}

/// The weights must match the architecture tensor for tensor.
pub(super) fn check_fit(arch: &Architecture, tensors: &[TensorEntry]) -> Result<(), ApiError> {
    check_weights(
        arch,
        tensors
            .iter()
            .map(|t| (t.name.as_str(), t.dtype, t.shape.as_slice())),
    )
    .map_err(|e| ApiError::new(Code::WeightsMismatch, e))
}

/// Checks the file, moves it into blob storage and records it; on any failure nothing is left.
pub(super) async fn store_model(
    app: &AppState,
    caller: &Caller,
    upload: TempUpload,
    name: String,
    architecture: Option<Architecture>,
    config: Option<Value>,
) -> Result<crate::store::ModelRecord, ApiError> {
    let path = upload.path().to_owned();
    let index = tokio::task::spawn_blocking(move || SafetensorsIndex::open(&path))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| match e {
            OpenError::Format(f) => ApiError::new(
                Code::InvalidModel,
                format!("the upload is not a valid safetensors file: {f}"),
            ),
            OpenError::Io(io) => ApiError::from(io),
        })?;
    if let Some(arch) = &architecture {
        check_fit(arch, &index.tensors)?;
    }
    let id = Uuid::now_v7();
    let size_bytes = upload.size;
    let sha256 = upload.sha256.clone();
    let kept = super::stored::keep(app, caller, upload).await?;
    let new = NewModel {
        id,
        tenant_id: caller.tenant_id().to_owned(),
        name,
        format: "safetensors".into(),
        size_bytes,
        sha256,
        tensor_count: index.tensors.len() as u64,
        parameter_count: index.parameter_count(),
        tensors: serde_json::to_value(&index.tensors).map_err(ApiError::internal)?,
        metadata: serde_json::to_value(&index.metadata).map_err(ApiError::internal)?,
        blob_key: kept.key.clone(),
        architecture: architecture.map(|a| a.to_json()),
        config,
        files: Vec::new(),
    };
    match app.store.insert_model(&new).await {
        Ok(model) => {
            kept.named(app).await;
            tracing::info!(model_id = %model.id, bytes = model.size_bytes, "model stored");
            Ok(model)
        }
        Err(e) => {
            kept.abandon(app).await;
            Err(e.into())
        }
    }
}

/// A GGUF file of a llama-family model: kept as it is (jobs dequantize it), with the config
/// and tokenizer its metadata describes.
pub(super) async fn store_gguf(
    app: &AppState,
    caller: &Caller,
    upload: TempUpload,
    name: String,
) -> Result<crate::store::ModelRecord, ApiError> {
    use crate::compress::format::gguf::reader::{GgufIndex, GgufValue};
    use crate::compress::transformer::{gguf_import, tensors, ModelConfig};
    let path = upload.path().to_owned();
    let tmp = app.config.tmp_dir();
    let (imported, metadata, tokenizer_file) = tokio::task::spawn_blocking(move || {
        let (index, _map) = GgufIndex::open(&path)?;
        let imported = gguf_import::inspect(&index)?;
        let config = ModelConfig::parse(&imported.config)?;
        if let Some(runs) = &config.runs {
            let shapes: Vec<(&str, &[u64])> = imported
                .tensors
                .iter()
                .map(|(n, s)| (n.as_str(), s.as_slice()))
                .collect();
            tensors::check(runs, &shapes).map_err(|e| {
                crate::compress::CompressError::InvalidModel(format!(
                    "the GGUF file's tensors do not fit its metadata: {e}"
                ))
            })?;
        }
        let mut metadata = serde_json::Map::new();
        for key in [
            "general.name",
            "general.architecture",
            "general.file_type",
            "tokenizer.ggml.pre",
        ] {
            if let Some(v) = index.get(key) {
                let text = match v {
                    GgufValue::Str(s) => s.clone(),
                    other => other.as_u64().map(|n| n.to_string()).unwrap_or_default(),
                };
                metadata.insert(format!("gguf.{key}"), text.into());
            }
        }
        if !imported.notes.is_empty() {
            metadata.insert("compressd.note".into(), imported.notes.join(" ").into());
        }
        let mut tokenizer_files = Vec::new();
        if let Some(json) = &imported.tokenizer {
            let file = tmp.join(format!("tokenizer-{}.json", Uuid::new_v4().simple()));
            std::fs::write(&file, json)?;
            // A tokenizer that does not load is the import's fault: refuse it now.
            crate::compress::transformer::TextTokenizer::from_file(&file)?;
            tokenizer_files.push(("tokenizer.json", file));
        }
        if let Some(c) = &imported.tokenizer_config {
            let file = tmp.join(format!("tokenizer-config-{}.json", Uuid::new_v4().simple()));
            std::fs::write(
                &file,
                serde_json::to_vec_pretty(c).map_err(std::io::Error::other)?,
            )?;
            tokenizer_files.push(("tokenizer_config.json", file));
        }
        let tokenizer_file = tokenizer_files;
        Ok::<_, crate::compress::CompressError>((
            imported,
            serde_json::Value::Object(metadata),
            tokenizer_file,
        ))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| match e {
        crate::compress::CompressError::Io(io) => ApiError::from(io),
        other => ApiError::new(Code::InvalidModel, other.to_string()),
    })?;
    let tensors: Vec<serde_json::Value> = imported
        .tensors
        .iter()
        .map(|(n, s)| serde_json::json!({"name": n, "dtype": "F32", "shape": s}))
        .collect();
    let parameter_count = imported
        .tensors
        .iter()
        .map(|(_, s)| s.iter().product::<u64>())
        .sum();
    let (size_bytes, sha256) = (upload.size, upload.sha256.clone());
    let kept_model = super::stored::keep(app, caller, upload).await?;
    let mut kept = vec![];
    let mut files = Vec::new();
    for (path, file) in tokenizer_file {
        let tok = TempUpload::adopt(file)?;
        let (size, sha) = (tok.size, tok.sha256.clone());
        match super::stored::keep(app, caller, tok).await {
            Ok(k) => {
                files.push(crate::store::ModelFile {
                    path: path.into(),
                    size_bytes: size,
                    sha256: sha,
                    blob_key: k.key.clone(),
                });
                kept.push(k);
            }
            Err(e) => {
                for k in kept {
                    k.abandon(app).await;
                }
                kept_model.abandon(app).await;
                return Err(e);
            }
        }
    }
    let new = NewModel {
        id: Uuid::now_v7(),
        tenant_id: caller.tenant_id().to_owned(),
        name,
        format: "gguf".into(),
        size_bytes,
        sha256,
        tensor_count: tensors.len() as u64,
        parameter_count,
        tensors: serde_json::Value::Array(tensors),
        metadata,
        blob_key: kept_model.key.clone(),
        architecture: None,
        config: Some(imported.config),
        files,
    };
    kept.push(kept_model);
    let inserted = app.store.insert_model(&new).await;
    for k in kept {
        match &inserted {
            Ok(_) => k.named(app).await,
            Err(_) => k.abandon(app).await,
        }
    }
    let model = inserted?;
    tracing::info!(model_id = %model.id, bytes = model.size_bytes, "GGUF model stored");
    Ok(model)
}
