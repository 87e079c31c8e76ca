//! A job as stored, and the lease that lets one attempt report on it.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::rows::{json, ts, uuid};
use super::StoreError;
use crate::domain::JobStatus;

#[derive(Debug, Clone)]
pub struct JobRecord {
    pub id: Uuid,
    pub tenant_id: String,
    pub model_id: Uuid,
    pub dataset_id: Option<Uuid>,
    pub pipeline: Value,
    pub status: JobStatus,
    pub progress: f64,
    pub progress_detail: Option<Value>,
    pub error: Option<Value>,
    pub attempts: u32,
    pub max_attempts: u32,
    pub cancel_requested: bool,
    pub worker: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// The finished job whose artifacts this one reuses (a results-cache hit).
    pub cached_from: Option<Uuid>,
    pub artifact_ttl_ms: Option<i64>,
    pub webhook: Option<WebhookState>,
    /// The `x-request-id` of the request that submitted the job.
    pub request_id: Option<String>,
    /// The submitting request's W3C `traceparent`, when traces are on.
    pub trace_parent: Option<String>,
}

/// Where a job's webhook delivery stands.
#[derive(Debug, Clone)]
pub struct WebhookState {
    pub url: String,
    /// pending, delivered or failed.
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(super) struct JobRow {
    id: String,
    tenant_id: String,
    cached_from: Option<String>,
    artifact_ttl_ms: Option<i64>,
    webhook_url: Option<String>,
    webhook_status: Option<String>,
    webhook_attempts: i64,
    webhook_error: Option<String>,
    model_id: String,
    dataset_id: Option<String>,
    pipeline: String,
    status: String,
    progress: f64,
    progress_detail: Option<String>,
    error: Option<String>,
    attempts: i64,
    max_attempts: i64,
    cancel_requested: bool,
    lease_owner: Option<String>,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    updated_at: i64,
    request_id: Option<String>,
    #[sqlx(default)]
    trace_parent: Option<String>,
}

impl TryFrom<JobRow> for JobRecord {
    type Error = StoreError;
    fn try_from(r: JobRow) -> Result<Self, StoreError> {
        let webhook = match (r.webhook_url, r.webhook_status) {
            (Some(url), Some(status)) => Some(WebhookState {
                url,
                status,
                attempts: r.webhook_attempts as u32,
                last_error: r.webhook_error,
            }),
            _ => None,
        };
        Ok(JobRecord {
            id: uuid(&r.id)?,
            tenant_id: r.tenant_id,
            cached_from: r.cached_from.as_deref().map(uuid).transpose()?,
            artifact_ttl_ms: r.artifact_ttl_ms,
            webhook,
            model_id: uuid(&r.model_id)?,
            dataset_id: r.dataset_id.as_deref().map(uuid).transpose()?,
            pipeline: json(&r.pipeline)?,
            status: JobStatus::parse(&r.status).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            progress: r.progress,
            progress_detail: r.progress_detail.as_deref().map(json).transpose()?,
            error: r.error.as_deref().map(json).transpose()?,
            attempts: r.attempts as u32,
            max_attempts: r.max_attempts as u32,
            cancel_requested: r.cancel_requested,
            worker: r.lease_owner,
            created_at: ts(r.created_at),
            started_at: r.started_at.map(ts),
            finished_at: r.finished_at.map(ts),
            updated_at: ts(r.updated_at),
            request_id: r.request_id,
            trace_parent: r.trace_parent,
        })
    }
}

/// A claimed job: only the holder of `token` may report on this attempt.
#[derive(Debug, Clone)]
pub struct Lease {
    pub job: JobRecord,
    pub token: Uuid,
}
