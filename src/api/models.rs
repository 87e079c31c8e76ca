//! `/v1/models`: upload, list, inspect, download and delete models.

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use uuid::Uuid;

use super::auth::Caller;
use super::download::serve_download;
use super::error::ApiError;

use serde_json::Value;

use super::extract::{parse_id, ApiJson, ApiQuery};
use super::model_files::{
    check_fit, initial_weights, parse_architecture, parse_config, store_gguf, store_model,
};
use super::model_folder::{store_folder, untar};
use super::sniff::{sniff, FileKind};
use super::upload::{receive_upload, validate_name, UploadQuery};
use super::views::{next_cursor, ModelView, Page, PageQuery};
use super::AppState;
use crate::compress::TensorEntry;
use crate::domain::{ArchitectureWire, Code};
use crate::store::Removal;

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
        (status = 400, description = "Malformed request"),
        (status = 403, description = "The tenant's storage is full (`limit`: stored_bytes)"),
        (status = 413, description = "Larger than COMPRESSD_MAX_UPLOAD_BYTES"),
        (status = 415, description = "Neither multipart nor octet-stream"),
        (status = 422, description = "Not a valid safetensors file, an invalid architecture, or weights that do not fit it"),
    )
)]
pub async fn upload_model(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<UploadQuery>,
    request: Request,
) -> Result<(StatusCode, Json<ModelView>), ApiError> {
    let limit = app.config.max_upload_bytes;
    let received = receive_upload(&app, request, limit, MODEL_PARTS).await?;
    let mut texts = received.texts;
    let folder = match received.tar {
        Some(tar) => untar(&app, tar, limit).await?,
        None => received.folder,
    };
    if !folder.is_empty() {
        if texts.contains_key("architecture") || texts.contains_key("config") {
            return Err(ApiError::new(Code::InvalidMultipart, "a folder carries its own config.json; send 'architecture' and 'config' parts only with a single safetensors file"));
        }
        let name = validate_name(texts.remove("name").or(query.name))?;
        let model = store_folder(&app, &caller, folder, name).await?;
        return Ok((StatusCode::CREATED, Json(ModelView::new(model, true))));
    }
    let (upload, file_name) = (received.file, received.file_name);
    if let Some(u) = &upload {
        if u.size > 0 && sniff(u.path(), file_name.as_deref())? == FileKind::Gguf {
            let name = validate_name(
                texts
                    .remove("name")
                    .or(query.name)
                    .or(file_name.map(|f| f.trim_end_matches(".gguf").to_owned())),
            )?;
            let model = store_gguf(&app, &caller, upload.expect("checked"), name).await?;
            return Ok((StatusCode::CREATED, Json(ModelView::new(model, true))));
        }
    }
    let architecture = texts
        .remove("architecture")
        .map(|a| parse_architecture(&a))
        .transpose()?;
    let upload = match (upload, &architecture) {
        (Some(u), _) => u,
        (None, Some(arch)) => initial_weights(&app, &caller, arch, texts.remove("seed")).await?,
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

/// Set or replace the model's architecture. The weights must fit it exactly.
#[utoipa::path(
    put,
    path = "/v1/models/{id}/architecture",
    tag = "models",
    params(("id" = String, Path, description = "Model id")),
    request_body = ArchitectureWire,
    responses(
        (status = 200, description = "The model with its architecture", body = ModelView),
        (status = 400, description = "Malformed JSON"),
        (status = 404, description = "No such model"),
        (status = 415, description = "Not JSON"),
        (status = 422, description = "Invalid architecture, or weights that do not fit it"),
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

/// List models, newest first.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "models",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of models", body = Page<ModelView>),
        (status = 400, description = "Bad paging parameters"),
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
        (status = 404, description = "No such model"),
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
        (status = 307, description = "With COMPRESSD_PRESIGNED_DOWNLOAD_SECONDS and object storage: the file at a presigned URL (`Location`), for a request without Range or conditional headers"),
        (status = 404, description = "No such model"),
        (status = 416, description = "Range not satisfiable"),
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
    serve_download(
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
        (status = 404, description = "No such model"),
        (status = 409, description = "Jobs still use the model"),
    )
)]
pub async fn delete_model(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id("model", &id)?;
    match app.store.delete_model(caller.tenant_id(), id).await? {
        Removal::Removed(released) => {
            super::stored::release(&app, &released).await;
            Ok(StatusCode::NO_CONTENT)
        }
        Removal::InUse(active) => Err(ApiError::new(Code::ModelInUse, format!("{active} queued or running jobs use this model; cancel them or wait for them to finish"),
        )),
        Removal::Missing => Err(ApiError::not_found("model", &id.to_string())),
    }
}
