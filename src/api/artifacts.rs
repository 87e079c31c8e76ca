//! `/v1/artifacts`: what jobs produced, and the files themselves.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;

use super::auth::Caller;
use super::download::serve_download;
use super::error::ApiError;
use super::extract::parse_id;
use super::views::ArtifactView;
use super::AppState;
use crate::store::ArtifactRecord;

async fn find(app: &AppState, caller: &Caller, raw: &str) -> Result<ArtifactRecord, ApiError> {
    let id = parse_id("artifact", raw)?;
    app.store
        .get_artifact(caller.tenant_id(), id)
        .await?
        .ok_or_else(|| ApiError::not_found("artifact", raw))
}

/// An artifact's description.
#[utoipa::path(
    get,
    path = "/v1/artifacts/{id}",
    tag = "artifacts",
    params(("id" = String, Path, description = "Artifact id")),
    responses(
        (status = 200, description = "The artifact", body = ArtifactView),
        (status = 404, description = "No such artifact"),
    )
)]
pub async fn get_artifact(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ArtifactView>, ApiError> {
    Ok(Json(find(&app, &caller, &id).await?.into()))
}

/// Download an artifact. Supports Range and If-None-Match; the ETag is the file's SHA-256.
#[utoipa::path(
    get,
    path = "/v1/artifacts/{id}/file",
    tag = "artifacts",
    params(("id" = String, Path, description = "Artifact id")),
    responses(
        (status = 200, description = "The file, as the artifact's `content_type` says: a model (octet-stream), a JSON report or config, the HTML report, an SVG chart", content(
            (Vec<u8> = "application/octet-stream"),
            (Object = "application/json"),
            (String = "text/html; charset=utf-8"),
            (String = "image/svg+xml"),
        )),
        (status = 206, description = "The requested byte range", content(
            (Vec<u8> = "application/octet-stream"),
            (String = "application/json"),
            (String = "text/html; charset=utf-8"),
            (String = "image/svg+xml"),
        )),
        (status = 304, description = "Unchanged (If-None-Match)"),
        (status = 307, description = "With COMPRESSD_PRESIGNED_DOWNLOAD_SECONDS and object storage: the file at a presigned URL (`Location`), for a request without Range or conditional headers"),
        (status = 404, description = "No such artifact"),
        (status = 416, description = "Range not satisfiable"),
    )
)]
pub async fn download_artifact(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let a = find(&app, &caller, &id).await?;
    serve_download(
        &app,
        &a.blob_key,
        &a.sha256,
        &a.file_name,
        &a.content_type,
        &headers,
    )
    .await
}
