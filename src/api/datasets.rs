//! `/v1/datasets`: upload, list, inspect and delete datasets that jobs train and measure on.

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::Json;
use uuid::Uuid;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{parse_id, ApiQuery};
use super::upload::TempUpload;
use super::upload::{receive_upload, validate_name, UploadQuery};
use super::views::{next_cursor, DatasetView, Page, PageQuery};
use super::AppState;
use crate::compress::nn::inspect_dataset;
use crate::compress::transformer::text::{inspect_text, TextSplit};
use crate::compress::{CompressError, SafetensorsIndex};
use crate::domain::Code;
use crate::store::Removal;
use crate::store::{DatasetRecord, NewDataset};

/// Upload a dataset: one safetensors file with `train_images` (or `train_inputs`) and
/// `train_labels`, and `test_…` (or `eval_…`) for the evaluation split. Inputs may have any
/// numeric dtype, first dimension = samples; labels are integer class indices (the metadata
/// key `num_classes` may fix the class count). Raw or multipart, as for models.
#[utoipa::path(
    post,
    path = "/v1/datasets",
    tag = "datasets",
    params(UploadQuery),
    request_body(
        description = "The safetensors file: raw, or as the `file` part of a multipart form (with an optional `name` part)",
        content(
            (Vec<u8> = "application/octet-stream"),
            (Object = "multipart/form-data"),
        )
    ),
    responses(
        (status = 201, description = "Stored", body = DatasetView),
        (status = 400, description = "Malformed request"),
        (status = 403, description = "The tenant's storage is full (`limit`: stored_bytes)"),
        (status = 413, description = "Larger than COMPRESSD_MAX_UPLOAD_BYTES"),
        (status = 415, description = "Neither multipart nor octet-stream"),
        (status = 422, description = "Not a usable dataset: missing tensors, mismatched counts, labels out of range"),
    )
)]
pub async fn upload_dataset(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<UploadQuery>,
    request: Request,
) -> Result<(StatusCode, Json<DatasetView>), ApiError> {
    let limit = app.config.max_upload_bytes;
    let received = receive_upload(&app, request, limit, &[("name", 4096), ("split", 4096)]).await?;
    let (upload, mut texts, file_name) = (received.file, received.texts, received.file_name);
    if !received.folder.is_empty() || received.tar.is_some() {
        return Err(ApiError::new(Code::InvalidMultipart, "a dataset is one file (safetensors tensors, UTF-8 text or JSON Lines): send it as the 'file' part"));
    }
    let upload = upload.ok_or_else(|| {
        ApiError::new(
            Code::InvalidMultipart,
            "the multipart body has no 'file' part",
        )
    })?;
    if upload.size == 0 {
        return Err(ApiError::new(
            Code::EmptyUpload,
            "the uploaded file is empty",
        ));
    }
    let stem = file_name.map(|f| f.trim_end_matches(".safetensors").to_owned());
    let name = validate_name(texts.remove("name").or(query.name).or(stem))?;
    let dataset = store_dataset(&app, &caller, upload, name, texts.remove("split")).await?;
    Ok((StatusCode::CREATED, Json(dataset.into())))
}

/// A safetensors file of tensors (train and evaluation splits), or text (UTF-8 or JSON Lines,
/// for transformer models) with its `split`.
pub(super) async fn store_dataset(
    app: &AppState,
    caller: &Caller,
    upload: TempUpload,
    name: String,
    split: Option<String>,
) -> Result<DatasetRecord, ApiError> {
    let split = split
        .map(|s| serde_json::from_str::<TextSplit>(&s))
        .transpose()
        .map_err(|e| ApiError::new(Code::InvalidDataset, format!("the 'split' part: {e} (give {{\"by\": \"bytes\"|\"documents\", \"evaluation\": [start, end], \"calibration\": [start, end]}})")))?;
    let path = upload.path().to_owned();
    let summary =
        tokio::task::spawn_blocking(move || -> Result<serde_json::Value, CompressError> {
            if SafetensorsIndex::open(&path).is_ok() {
                return Ok(
                    serde_json::to_value(inspect_dataset(&path)?).map_err(std::io::Error::other)?
                );
            }
            let text = inspect_text(&path, split).map_err(|e| match e {
                CompressError::InvalidModel(m) => CompressError::InvalidModel(format!(
                    "not a safetensors dataset, nor usable text: {m}"
                )),
                other => other,
            })?;
            let mut v = serde_json::to_value(text).map_err(std::io::Error::other)?;
            v["kind"] = "text".into();
            Ok(v)
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| match e {
            CompressError::Io(io) => ApiError::from(io),
            other => ApiError::new(
                Code::InvalidDataset,
                format!("the upload is not a usable dataset: {other}"),
            ),
        })?;
    let (size_bytes, sha256) = (upload.size, upload.sha256.clone());
    let kept = super::stored::keep(app, caller, upload).await?;
    let new = NewDataset {
        id: Uuid::now_v7(),
        tenant_id: caller.tenant_id().to_owned(),
        name,
        size_bytes,
        sha256,
        summary,
        blob_key: kept.key.clone(),
    };
    match app.store.insert_dataset(&new).await {
        Ok(d) => {
            kept.named(app).await;
            Ok(d)
        }
        Err(e) => {
            kept.abandon(app).await;
            Err(e.into())
        }
    }
}

/// List datasets, newest first.
#[utoipa::path(
    get,
    path = "/v1/datasets",
    tag = "datasets",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of datasets", body = Page<DatasetView>),
        (status = 400, description = "Bad paging parameters"),
    )
)]
pub async fn list_datasets(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Page<DatasetView>>, ApiError> {
    let (limit, after) = page.parse()?;
    let rows = app
        .store
        .list_datasets(caller.tenant_id(), limit, after)
        .await?;
    let next = next_cursor(&rows, limit, |d| d.id);
    Ok(Json(Page {
        data: rows.into_iter().map(DatasetView::from).collect(),
        next,
    }))
}

async fn find(app: &AppState, caller: &Caller, raw: &str) -> Result<DatasetRecord, ApiError> {
    let id = parse_id("dataset", raw)?;
    app.store
        .get_dataset(caller.tenant_id(), id)
        .await?
        .ok_or_else(|| ApiError::not_found("dataset", &id.to_string()))
}

/// One dataset with its summary.
#[utoipa::path(
    get,
    path = "/v1/datasets/{id}",
    tag = "datasets",
    params(("id" = String, Path, description = "Dataset id")),
    responses(
        (status = 200, description = "The dataset", body = DatasetView),
        (status = 404, description = "No such dataset"),
    )
)]
pub async fn get_dataset(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DatasetView>, ApiError> {
    Ok(Json(find(&app, &caller, &id).await?.into()))
}

/// Delete a dataset and its file. Refused while queued or running jobs use it.
#[utoipa::path(
    delete,
    path = "/v1/datasets/{id}",
    tag = "datasets",
    params(("id" = String, Path, description = "Dataset id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such dataset"),
        (status = 409, description = "Jobs still use the dataset"),
    )
)]
pub async fn delete_dataset(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let dataset = find(&app, &caller, &id).await?;
    match app.store.delete_dataset(caller.tenant_id(), dataset.id).await? {
        Removal::Removed(keys) => {
            super::stored::release(&app, &keys).await;
            Ok(StatusCode::NO_CONTENT)
        }
        Removal::InUse(active) => Err(ApiError::new(Code::DatasetInUse, format!("{active} queued or running jobs use this dataset; cancel them or wait for them to finish"),
        )),
        Removal::Missing => Err(ApiError::not_found("dataset", &id)),
    }
}
