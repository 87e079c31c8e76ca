//! `/v1/models`: upload, list, inspect, download and delete models.

use crate::domain::Code;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::auth::Caller;
use super::download::serve_blob;
use super::error::ApiError;
use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;

use super::extract::{parse_id, ApiJson, ApiQuery};
use super::upload::{drain, receive, receive_form, TempUpload};
use super::views::{next_cursor, ModelView, Page, PageQuery};
use super::AppState;
use crate::compress::nn::{check_weights, Network};
use crate::compress::{OpenError, SafetensorsIndex, TensorEntry};
use crate::domain::{Architecture, ArchitectureWire};
use crate::store::NewModel;

const MAX_NAME_CHARS: usize = 200;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Model name (raw uploads; multipart uploads may send a `name` part instead).
    pub name: Option<String>,
}

/// Upload a model (safetensors). Send `multipart/form-data` with a `file` part, an optional
/// `name` part and an optional `architecture` part (JSON; the weights must then fit it
/// exactly), or the raw file as `application/octet-stream` with `?name=`. An `architecture`
/// part without a `file` creates a model with freshly initialised weights (`seed` part,
/// default 0), ready for a `train` job. A `config` part (the model's `config.json`) is written
/// beside compressed artifacts, with the `quantization_config` of quantized ones.
#[utoipa::path(
    post,
    path = "/v1/models",
    tag = "models",
    params(UploadQuery),
    request_body(
        description = "The safetensors file: raw, or as the `file` part of a multipart form (with optional `name`, `architecture`, `seed` and `config` parts)",
        content(
            (Vec<u8> = "application/octet-stream"),
            (Object = "multipart/form-data"),
        )
    ),
    responses(
        (status = 201, description = "Stored", body = ModelView),
        (status = 400, description = "Malformed request", body = crate::domain::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than COMPRESSD_MAX_UPLOAD_BYTES", body = crate::domain::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither multipart nor octet-stream", body = crate::domain::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a valid safetensors file, an invalid architecture, or weights that do not fit it", body = crate::domain::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn upload_model(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<UploadQuery>,
    request: Request,
) -> Result<(StatusCode, Json<ModelView>), ApiError> {
    let limit = app.config.max_upload_bytes;
    let (upload, mut texts, file_name) = receive_upload(&app, request, limit, MODEL_PARTS).await?;
    let architecture = texts
        .remove("architecture")
        .map(|a| parse_architecture(&a))
        .transpose()?;
    let upload = match (upload, &architecture) {
        (Some(u), _) => u,
        (None, Some(arch)) => initial_weights(&app, arch, texts.remove("seed")).await?,
        (None, None) => {
            return Err(ApiError::new(Code::InvalidMultipart, "the multipart body has no 'file' part (send weights, or an 'architecture' part to start from a fresh initialisation)",
            ))
        }
    };
    let config = texts
        .remove("config")
        .map(|c| parse_config(&c))
        .transpose()?;
    let stem = file_name.map(|f| f.trim_end_matches(".safetensors").to_owned());
    let name = validate_name(texts.remove("name").or(query.name).or(stem))?;
    if upload.size == 0 {
        return Err(ApiError::new(
            Code::EmptyUpload,
            "the uploaded file is empty",
        ));
    }
    let model = store_model(&app, &caller, upload, name, architecture, config).await?;
    Ok((StatusCode::CREATED, Json(ModelView::new(model, true))))
}

const MODEL_PARTS: &[(&str, u64)] = &[
    ("name", 4096),
    ("architecture", 1 << 20),
    ("seed", 64),
    ("config", 1 << 20),
];

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

/// A `config.json` (a JSON object), kept to be written beside compressed artifacts.
fn parse_config(text: &str) -> Result<Value, ApiError> {
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

fn parse_architecture(text: &str) -> Result<Architecture, ApiError> {
    Architecture::parse_json(text).map_err(|e| ApiError::new(Code::InvalidArchitecture, e.0))
}

/// Fresh weights for an architecture-only upload, written like an uploaded file.
async fn initial_weights(
    app: &AppState,
    arch: &Architecture,
    seed: Option<String>,
) -> Result<TempUpload, ApiError> {
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

async fn find_model(
    app: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<crate::store::ModelRecord, ApiError> {
    app.store
        .get_model(caller.tenant_id(), id)
        .await?
        .ok_or_else(|| ApiError::not_found("model", &id.to_string()))
}

/// The weights must match the architecture tensor for tensor.
fn check_fit(arch: &Architecture, tensors: &[TensorEntry]) -> Result<(), ApiError> {
    check_weights(
        arch,
        tensors
            .iter()
            .map(|t| (t.name.as_str(), t.dtype, t.shape.as_slice())),
    )
    .map_err(|e| ApiError::new(Code::WeightsMismatch, e))
}

/// Set or replace the model's architecture. The weights must fit it exactly.
#[utoipa::path(
    put,
    path = "/v1/models/{id}/architecture",
    tag = "models",
    params(("id" = String, Path, description = "Model id")),
    request_body = ArchitectureWire,
    responses(
        (status = 200, description = "The model with its architecture", body = ModelView),
        (status = 400, description = "Malformed JSON", body = crate::domain::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such model", body = crate::domain::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = crate::domain::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid architecture, or weights that do not fit it", body = crate::domain::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn put_architecture(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<ModelView>, ApiError> {
    let id = parse_id("model", &id)?;
    let model = find_model(&app, &caller, id).await?;
    let arch = parse_architecture(&body.to_string())?;
    let tensors: Vec<TensorEntry> =
        serde_json::from_value(model.tensors.clone()).map_err(ApiError::internal)?;
    check_fit(&arch, &tensors)?;
    app.store
        .set_architecture(caller.tenant_id(), id, Some(&arch.to_json()))
        .await?;
    let model = find_model(&app, &caller, id).await?;
    Ok(Json(ModelView::new(model, true)))
}

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

/// List models, newest first.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "models",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of models", body = Page<ModelView>),
        (status = 400, description = "Bad paging parameters", body = crate::domain::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_models(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Page<ModelView>>, ApiError> {
    let (limit, after) = page.parse()?;
    let models = app
        .store
        .list_models(caller.tenant_id(), limit, after)
        .await?;
    let next = next_cursor(&models, limit, |m| m.id);
    Ok(Json(Page {
        data: models
            .into_iter()
            .map(|m| ModelView::new(m, false))
            .collect(),
        next,
    }))
}

/// One model, with its tensors' names, dtypes and shapes.
#[utoipa::path(
    get,
    path = "/v1/models/{id}",
    tag = "models",
    params(("id" = String, Path, description = "Model id")),
    responses(
        (status = 200, description = "The model", body = ModelView),
        (status = 404, description = "No such model", body = crate::domain::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_model(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ModelView>, ApiError> {
    let id = parse_id("model", &id)?;
    let model = find_model(&app, &caller, id).await?;
    Ok(Json(ModelView::new(model, true)))
}

/// Download the model file as uploaded. Supports Range and If-None-Match.
#[utoipa::path(
    get,
    path = "/v1/models/{id}/file",
    tag = "models",
    params(("id" = String, Path, description = "Model id")),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The requested byte range", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 304, description = "Unchanged (If-None-Match)"),
        (status = 404, description = "No such model", body = crate::domain::Problem, content_type = "application/problem+json"),
        (status = 416, description = "Range not satisfiable", body = crate::domain::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn download_model(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id("model", &id)?;
    let model = find_model(&app, &caller, id).await?;
    let file_name = format!("{}.safetensors", model.name.replace(['"', '\\', '/'], "_"));
    serve_blob(
        &app,
        &model.blob_key,
        &model.sha256,
        &file_name,
        "application/octet-stream",
        &headers,
    )
    .await
}

/// Delete a model, its file, and its finished jobs with their artifacts (files no other row
/// shares are removed). Refused while queued or running jobs use it.
#[utoipa::path(
    delete,
    path = "/v1/models/{id}",
    tag = "models",
    params(("id" = String, Path, description = "Model id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such model", body = crate::domain::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Jobs still use the model", body = crate::domain::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_model(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id("model", &id)?;
    find_model(&app, &caller, id).await?;
    let active = app.store.active_jobs_for_model(id).await?;
    if active > 0 {
        return Err(ApiError::new(Code::ModelInUse, format!("{active} queued or running jobs use this model; cancel them or wait for them to finish"),
        ));
    }
    if let Some(released) = app.store.delete_model(caller.tenant_id(), id).await? {
        super::stored::release(&app, &released).await;
    }
    Ok(StatusCode::NO_CONTENT)
}
