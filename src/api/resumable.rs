//! `/v1/uploads`: resumable uploads for multi-GB files. Create an upload, send numbered parts
//! (any order, any number of times; the last copy of a part counts), then complete it with the
//! whole file's SHA-256: the parts are joined, checked and stored as a model or dataset.
//! Incomplete uploads are removed when their time to live passes.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::io::ReaderStream;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{parse_id, ttl_ms, ApiJson, MAX_TTL_SECONDS};
use super::model_files::store_model;
use super::upload::receive;
use super::upload::validate_name;
use super::views::{DatasetView, ModelView};
use super::AppState;
use crate::domain::Code;
use crate::store::{PartRecord, UploadRecord};

/// Part numbers run from 1 to this.
const MAX_PARTS: i64 = 10_000;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUpload {
    /// Seconds the upload may stay incomplete (default COMPRESSD_UPLOAD_TTL_SECONDS).
    #[schema(minimum = 1, maximum = 315_360_000)]
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PartView {
    pub number: i64,
    pub size_bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UploadView {
    pub id: Uuid,
    /// Parts received so far, by number.
    pub parts: Vec<PartView>,
    pub received_bytes: u64,
    /// PUT each part's bytes here, replacing `{number}` (1 to 10000).
    pub part_url: String,
    /// POST `{sha256, as, name}` here once every part is in.
    pub complete_url: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// What the joined file becomes.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UploadTarget {
    Model,
    Dataset,
    /// A Hugging Face folder: the joined parts are a tar of it (multi-GB shards in one
    /// resumable upload).
    Folder,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteUpload {
    /// Hex SHA-256 of the whole file; the joined parts must match it.
    pub sha256: String,
    /// `model` (default), `dataset`, or `folder` (the parts make a tar of a Hugging Face
    /// folder).
    #[serde(default, rename = "as")]
    pub target: Option<UploadTarget>,
    pub name: Option<String>,
}

/// The stored model or dataset.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Completed {
    Model(Box<ModelView>),
    Dataset(DatasetView),
}

fn view(upload: UploadRecord, parts: Vec<PartRecord>) -> UploadView {
    let received_bytes = parts.iter().map(|p| p.size_bytes.max(0) as u64).sum();
    UploadView {
        part_url: format!("/v1/uploads/{}/parts/{{number}}", upload.id),
        complete_url: format!("/v1/uploads/{}/complete", upload.id),
        id: upload.id,
        parts: parts
            .into_iter()
            .map(|p| PartView {
                number: p.number,
                size_bytes: p.size_bytes.max(0) as u64,
                sha256: p.sha256,
            })
            .collect(),
        received_bytes,
        expires_at: upload.expires_at,
        created_at: upload.created_at,
    }
}

async fn find(app: &AppState, caller: &Caller, raw: &str) -> Result<UploadRecord, ApiError> {
    let id = parse_id("upload", raw)?;
    app.store
        .get_upload(caller.tenant_id(), id)
        .await?
        .ok_or_else(|| ApiError::not_found("upload", raw))
}

/// Start a resumable upload.
#[utoipa::path(
    post,
    path = "/v1/uploads",
    tag = "uploads",
    request_body(content = CreateUpload, description = "Optional; `{}` for the defaults"),
    responses(
        (status = 201, description = "Created", body = UploadView),
        (status = 400, description = "Malformed JSON"),
        (status = 415, description = "Not JSON"),
        (status = 422, description = "Invalid fields"),
    )
)]
pub async fn create_upload(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateUpload>,
) -> Result<(StatusCode, Json<UploadView>), ApiError> {
    let default = app.config.upload_ttl_seconds.clamp(1, MAX_TTL_SECONDS) as i64 * 1000;
    let ttl_ms = ttl_ms("ttl_seconds", body.ttl_seconds)?.unwrap_or(default);
    let upload = app.store.create_upload(caller.tenant_id(), ttl_ms).await?;
    Ok((StatusCode::CREATED, Json(view(upload, Vec::new()))))
}

/// An upload and the parts it has received.
#[utoipa::path(
    get,
    path = "/v1/uploads/{id}",
    tag = "uploads",
    params(("id" = String, Path, description = "Upload id")),
    responses(
        (status = 200, description = "The upload", body = UploadView),
        (status = 404, description = "No such upload (or it expired)"),
    )
)]
pub async fn get_upload(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<UploadView>, ApiError> {
    let upload = find(&app, &caller, &id).await?;
    let parts = app.store.upload_parts(upload.id).await?;
    Ok(Json(view(upload, parts)))
}

/// Abandon an upload and remove its parts.
#[utoipa::path(
    delete,
    path = "/v1/uploads/{id}",
    tag = "uploads",
    params(("id" = String, Path, description = "Upload id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such upload"),
    )
)]
pub async fn abort_upload(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let upload = find(&app, &caller, &id).await?;
    remove_upload(&app, upload.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes an upload's rows and then its part files.
pub async fn remove_upload(app: &AppState, id: Uuid) -> Result<(), ApiError> {
    if let Some(keys) = app.store.delete_upload(id).await? {
        super::stored::release(app, &keys).await;
    }
    Ok(())
}

/// Send one part (raw bytes). Resending a number replaces that part.
#[utoipa::path(
    put,
    path = "/v1/uploads/{id}/parts/{number}",
    tag = "uploads",
    params(
        ("id" = String, Path, description = "Upload id"),
        ("number" = i64, Path, minimum = 1, maximum = 10000, description = "Part number, 1 to 10000"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Stored", body = PartView),
        (status = 400, description = "Bad part number or an interrupted body"),
        (status = 403, description = "The tenant's storage is full (`limit`: stored_bytes)"),
        (status = 404, description = "No such upload (or it expired)"),
        (status = 408, description = "The body stalled"),
        (status = 413, description = "Larger than COMPRESSD_MAX_UPLOAD_BYTES"),
    )
)]
pub async fn put_part(
    State(app): State<AppState>,
    caller: Caller,
    Path((id, number)): Path<(String, String)>,
    body: Body,
) -> Result<Json<PartView>, ApiError> {
    let upload = find(&app, &caller, &id).await?;
    let number = number
        .parse::<i64>()
        .ok()
        .filter(|n| (1..=MAX_PARTS).contains(n))
        .ok_or_else(|| {
            ApiError::new(
                Code::InvalidPartNumber,
                format!("part numbers run from 1 to {MAX_PARTS}"),
            )
        })?;
    let limit = app.config.max_upload_bytes;
    let received = receive(
        body.into_data_stream(),
        &app.config.tmp_dir(),
        limit,
        app.body_idle(),
    )
    .await
    .map_err(|e| e.into_api(limit))?;
    let key = format!("uploads/{}/{number}-{}", upload.id, Uuid::new_v4().simple());
    let part = PartRecord {
        number,
        size_bytes: received.size as i64,
        sha256: received.sha256.clone(),
        blob_key: key.clone(),
    };
    let kept = super::stored::put_reserved(&app, &caller, received, key).await?;
    match app.store.put_part(upload.id, &part).await {
        Ok(Some(replaced)) => {
            kept.named(&app).await;
            if let Some(old) = replaced {
                super::stored::release(&app, &[old]).await;
            }
            Ok(Json(PartView {
                number,
                size_bytes: part.size_bytes as u64,
                sha256: part.sha256,
            }))
        }
        Ok(None) => {
            kept.abandon(&app).await;
            Err(ApiError::not_found("upload", &id))
        }
        Err(e) => {
            kept.abandon(&app).await;
            Err(e.into())
        }
    }
}

/// Join the parts (numbered 1..n with no gaps), check the SHA-256 and store the file as a
/// model or dataset, exactly as a direct upload would be. The upload is then removed; on a
/// mismatch it stays, so that parts can be resent.
#[utoipa::path(
    post,
    path = "/v1/uploads/{id}/complete",
    tag = "uploads",
    params(("id" = String, Path, description = "Upload id")),
    request_body = CompleteUpload,
    responses(
        (status = 201, description = "Stored; a model or a dataset", body = Completed),
        (status = 400, description = "Malformed JSON"),
        (status = 403, description = "The tenant's storage is full (`limit`: stored_bytes)"),
        (status = 404, description = "No such upload (or it expired)"),
        (status = 409, description = "Parts are missing, or another request is completing the upload"),
        (status = 413, description = "The joined file is larger than COMPRESSD_MAX_UPLOAD_BYTES"),
        (status = 415, description = "Not JSON"),
        (status = 422, description = "SHA-256 mismatch, or not a valid model or dataset"),
    )
)]
pub async fn complete_upload(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CompleteUpload>,
) -> Result<(StatusCode, Json<Completed>), ApiError> {
    let upload = find(&app, &caller, &id).await?;
    let expected = body.sha256.trim().to_ascii_lowercase();
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::new(
            Code::InvalidSha256,
            "sha256 must be 64 hex digits",
        ));
    }
    let name = validate_name(body.name.clone())?;
    let parts = app.store.upload_parts(upload.id).await?;
    let missing: Vec<i64> = (1..=parts.last().map_or(0, |p| p.number))
        .filter(|n| !parts.iter().any(|p| p.number == *n))
        .take(20)
        .collect();
    if parts.is_empty() || !missing.is_empty() {
        return Err(ApiError::new(
            Code::PartsMissing,
            if parts.is_empty() {
                "the upload has no parts yet".to_owned()
            } else {
                format!("parts {missing:?} are missing; send them and complete again")
            },
        ));
    }
    let limit = app.config.max_upload_bytes;
    let total: u64 = parts.iter().map(|p| p.size_bytes.max(0) as u64).sum();
    if total > limit {
        return Err(ApiError::too_large(limit));
    }
    if !app
        .store
        .begin_completion(caller.tenant_id(), upload.id, COMPLETION_HOLD_MS)
        .await?
    {
        return Err(ApiError::new(
            Code::UploadCompleting,
            "another request is completing this upload; wait for its answer (GET /v1/uploads/{id} answers 404 once it is done)",
        ));
    }
    let done = join_and_store(&app, &caller, parts, limit, &expected, name, body.target).await;
    match done {
        Ok(completed) => {
            remove_upload(&app, upload.id).await?;
            Ok((StatusCode::CREATED, Json(completed)))
        }
        Err(e) => {
            app.store.end_completion(upload.id).await?;
            Err(e)
        }
    }
}

/// How long one completion holds the upload (a completion that dies lets go after this).
const COMPLETION_HOLD_MS: i64 = 30 * 60 * 1000;

/// Joins the parts into one file, checks its hash and stores it as asked.
async fn join_and_store(
    app: &AppState,
    caller: &Caller,
    parts: Vec<PartRecord>,
    limit: u64,
    expected: &str,
    name: String,
    target: Option<UploadTarget>,
) -> Result<Completed, ApiError> {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let blobs = app.blobs.clone();
    tokio::spawn(async move {
        for p in parts {
            match blobs.read(&p.blob_key, 0, p.size_bytes.max(0) as u64).await {
                Ok(reader) => {
                    let mut chunks = ReaderStream::new(reader);
                    while let Some(chunk) = chunks.next().await {
                        if tx.send(chunk).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    let joined = tokio_stream::wrappers::ReceiverStream::new(rx);
    let file = receive(joined, &app.config.tmp_dir(), limit, app.body_idle())
        .await
        .map_err(|e| e.into_api(limit))?;
    if file.sha256 != expected {
        return Err(ApiError::new(Code::ChecksumMismatch, format!("the joined parts ({} bytes) hash to {}, not {expected}; check and resend the parts, then complete again", file.size, file.sha256),
        ));
    }
    Ok(match target.unwrap_or(UploadTarget::Model) {
        UploadTarget::Model => Completed::Model(Box::new(ModelView::new(
            store_model(app, caller, file, name, None, None).await?,
            true,
        ))),
        UploadTarget::Folder => {
            let files = super::model_folder::untar(app, file, limit).await?;
            Completed::Model(Box::new(ModelView::new(
                super::model_folder::store_folder(app, caller, files, name).await?,
                true,
            )))
        }
        UploadTarget::Dataset => Completed::Dataset(
            super::datasets::store_dataset(app, caller, file, name, None)
                .await?
                .into(),
        ),
    })
}
