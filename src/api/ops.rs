//! Health, readiness and Prometheus metrics.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::auth::Operator;
use super::error::ApiError;
use super::AppState;
use crate::domain::JobStatus;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive", body = Object)))]
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The database answers and file storage can be written; safe to send traffic.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Object),
        (status = 503, description = "The database is unreachable, or file storage cannot be written"),
    )
)]
pub async fn readyz(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    app.store
        .ping()
        .await
        .map_err(|e| ApiError::unavailable(format!("the database is unreachable: {e}")))?;
    app.storage
        .check()
        .await
        .map_err(|e| ApiError::unavailable(format!("file storage is unusable: {e}")))?;
    Ok(Json(
        json!({ "status": "ready", "store": app.store.backend() }),
    ))
}

/// Prometheus metrics: jobs by status (from the store, so the same on every replica), job
/// durations, upload bytes and HTTP latency. They count every tenant's work, so they need the
/// admin key unless the server runs open; `COMPRESSD_METRICS_BIND` serves them on a listener
/// of their own without one.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 401, description = "Missing or wrong admin key"),
        (status = 403, description = "The admin API is off (no COMPRESSD_ADMIN_KEY); read the metrics listener"),
    )
)]
pub async fn metrics(
    _: Operator,
    State(app): State<AppState>,
) -> Result<impl IntoResponse, ApiError> {
    render_metrics(&app).await
}

/// The metrics text, for the main and the metrics listener alike.
pub async fn render_metrics(app: &AppState) -> Result<impl IntoResponse, ApiError> {
    let counts = app.store.count_jobs_by_status().await?;
    for status in JobStatus::ALL {
        let n = counts
            .iter()
            .find(|(s, _)| s == status.as_str())
            .map_or(0, |(_, n)| *n);
        metrics::gauge!("compressd_jobs", "status" => status.as_str()).set(n as f64);
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    ))
}
