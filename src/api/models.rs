//! `/v1/models`: upload, list, inspect, download and delete models.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use futures::TryStreamExt;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::download::serve_blob;
use super::error::ApiError;
use super::extract::{parse_id, ApiQuery};
use super::upload::{drain, receive, TempUpload};
use super::views::{next_cursor, ModelView, Page, PageQuery};
use super::AppState;
use crate::compress::{OpenError, SafetensorsIndex};
use crate::store::NewModel;

const MAX_NAME_CHARS: usize = 200;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Model name (raw uploads; multipart uploads may send a `name` part instead).
    pub name: Option<String>,
}

/// Upload a model (safetensors). Send `multipart/form-data` with a `file` part and an optional
/// `name` part, or the raw file as `application/octet-stream` with `?name=`.
#[utoipa::path(
    post,
    path = "/v1/models",
    tag = "models",
    params(UploadQuery),
    request_body(
        description = "The safetensors file: raw, or as the `file` part of a multipart form",
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
        (status = 422, description = "Not a valid safetensors file", body = crate::domain::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn upload_model(
    State(app): State<AppState>,
    ApiQuery(query): ApiQuery<UploadQuery>,
    request: Request,
) -> Result<(StatusCode, Json<ModelView>), ApiError> {
    let limit = app.config.max_upload_bytes;
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
    let too_large = |n: u64| n > limit.saturating_add(64 << 10);
    if declared.is_some_and(too_large) {
        drain(std::pin::pin!(request.into_body().into_data_stream())).await;
        return Err(ApiError::too_large(limit));
    }
    let (upload, part_name) = if content_type.starts_with("multipart/form-data") {
        receive_multipart(&app, &content_type, request.into_body()).await?
    } else if content_type.starts_with("application/octet-stream") {
        let stream = request.into_body().into_data_stream();
        let upload = receive(stream, &app.config.tmp_dir(), limit)
            .await
            .map_err(|e| e.into_api(limit))?;
        (upload, None)
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            format!("Content-Type '{content_type}' is not accepted: send multipart/form-data with a 'file' part, or application/octet-stream"),
        ));
    };
    let name = validate_name(part_name.or(query.name))?;
    if upload.size == 0 {
        return Err(ApiError::bad_request(
            "empty-upload",
            "the uploaded file is empty",
        ));
    }
    let model = store_model(&app, upload, name).await?;
    Ok((StatusCode::CREATED, Json(ModelView::new(model, true))))
}

/// Reads a multipart body: the `file` part streams to disk; `name` is a short text part.
async fn receive_multipart(
    app: &AppState,
    content_type: &str,
    body: Body,
) -> Result<(TempUpload, Option<String>), ApiError> {
    let limit = app.config.max_upload_bytes;
    let boundary = multer::parse_boundary(content_type).map_err(|e| {
        ApiError::bad_request(
            "invalid-multipart",
            format!("bad multipart Content-Type: {e}"),
        )
    })?;
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().for_field("name", 4096));
    let mut form =
        multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let (mut file, mut name, mut file_name) = (None, None, None);
    let bad = |e: multer::Error| {
        ApiError::bad_request(
            "invalid-multipart",
            format!("malformed multipart body: {e}"),
        )
    };
    while let Some(field) = form.next_field().await.map_err(bad)? {
        match field.name() {
            Some("file") if file.is_some() => {
                return Err(ApiError::bad_request(
                    "invalid-multipart",
                    "send exactly one 'file' part",
                ));
            }
            Some("file") => {
                file_name = field.file_name().map(str::to_owned);
                let stream = field.map_err(|e| e.to_string());
                file = Some(
                    receive(stream, &app.config.tmp_dir(), limit)
                        .await
                        .map_err(|e| e.into_api(limit))?,
                );
            }
            Some("name") => name = Some(field.text().await.map_err(bad)?),
            other => {
                return Err(ApiError::bad_request(
                    "invalid-multipart",
                    format!(
                    "unexpected part {other:?}; send a 'file' part and optionally a 'name' part"
                ),
                ))
            }
        }
    }
    let file = file.ok_or_else(|| {
        ApiError::bad_request("invalid-multipart", "the multipart body has no 'file' part")
    })?;
    let stem = file_name.map(|f| f.trim_end_matches(".safetensors").to_owned());
    Ok((file, name.or(stem)))
}

fn validate_name(name: Option<String>) -> Result<String, ApiError> {
    let name = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    let Some(name) = name else {
        return Ok("model".into());
    };
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid-name",
            format!("a model name must be at most {MAX_NAME_CHARS} characters with no control characters"),
        ));
    }
    Ok(name)
}

/// Checks the file, moves it into blob storage and records it; on any failure nothing is left.
async fn store_model(
    app: &AppState,
    upload: TempUpload,
    name: String,
) -> Result<crate::store::ModelRecord, ApiError> {
    let path = upload.path().to_owned();
    let index = tokio::task::spawn_blocking(move || SafetensorsIndex::open(&path))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| match e {
            OpenError::Format(f) => ApiError::unprocessable(
                "invalid-model",
                "Invalid safetensors file",
                format!("the upload is not a valid safetensors file: {f}"),
            ),
            OpenError::Io(io) => ApiError::internal(io),
        })?;
    let id = Uuid::now_v7();
    let blob_key = format!("models/{id}.safetensors");
    let new = NewModel {
        id,
        name,
        format: "safetensors".into(),
        size_bytes: upload.size,
        sha256: upload.sha256.clone(),
        tensor_count: index.tensors.len() as u64,
        parameter_count: index.parameter_count(),
        tensors: serde_json::to_value(&index.tensors).map_err(ApiError::internal)?,
        metadata: serde_json::to_value(&index.metadata).map_err(ApiError::internal)?,
        blob_key: blob_key.clone(),
    };
    app.blobs.put(&blob_key, upload.path()).await?;
    upload.keep();
    match app.store.insert_model(&new).await {
        Ok(model) => {
            tracing::info!(model_id = %model.id, bytes = model.size_bytes, "model stored");
            Ok(model)
        }
        Err(e) => {
            let _ = app.blobs.delete(&blob_key).await;
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
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Page<ModelView>>, ApiError> {
    let (limit, after) = page.parse()?;
    let models = app.store.list_models(limit, after).await?;
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
    Path(id): Path<String>,
) -> Result<Json<ModelView>, ApiError> {
    let id = parse_id("model", &id)?;
    let model = app
        .store
        .get_model(id)
        .await?
        .ok_or_else(|| ApiError::not_found("model", &id.to_string()))?;
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
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id("model", &id)?;
    let model = app
        .store
        .get_model(id)
        .await?
        .ok_or_else(|| ApiError::not_found("model", &id.to_string()))?;
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

/// Delete a model and its file. Refused while queued or running jobs use it.
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
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id("model", &id)?;
    let model = app
        .store
        .get_model(id)
        .await?
        .ok_or_else(|| ApiError::not_found("model", &id.to_string()))?;
    let active = app.store.active_jobs_for_model(id).await?;
    if active > 0 {
        return Err(ApiError::conflict(
            "model-in-use",
            format!("{active} queued or running jobs use this model; cancel them or wait for them to finish"),
        ));
    }
    if app.store.delete_model(id).await? {
        app.blobs.delete(&model.blob_key).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}
