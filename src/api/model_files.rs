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
use crate::compress::nn::{check_weights, Network};
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
        .map(|p| p.shape.iter().map(|&d| d as u64).product::<u64>() * 4)
        .sum();
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
        let written = Network::initialise(&arch, &mut rng).and_then(|net| net.save(&path));
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
            OpenError::Io(io) => ApiError::internal(io),
        })?;
    if let Some(arch) = &architecture {
        check_fit(arch, &index.tensors)?;
    }
    let id = Uuid::now_v7();
    let size_bytes = upload.size;
    let sha256 = upload.sha256.clone();
    let blob_key = super::stored::keep(app, caller, upload).await?;
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
        blob_key: blob_key.clone(),
        architecture: architecture.map(|a| a.to_json()),
        config,
    };
    match app.store.insert_model(&new).await {
        Ok(model) => {
            tracing::info!(model_id = %model.id, bytes = model.size_bytes, "model stored");
            Ok(model)
        }
        Err(e) => {
            super::stored::forget(app, &blob_key).await;
            Err(e.into())
        }
    }
}
