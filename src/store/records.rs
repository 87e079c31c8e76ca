//! Rows as stored, and the typed records the rest of the service sees.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::StoreError;
use crate::domain::JobStatus;

pub(super) fn ts(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn uuid(s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|e| StoreError::Corrupt(format!("id '{s}': {e}")))
}

fn json(s: &str) -> Result<Value, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("json column: {e}")))
}

#[derive(Debug, Clone)]
pub struct NewModel {
    pub id: Uuid,
    pub tenant_id: String,
    pub name: String,
    pub format: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub tensor_count: u64,
    pub parameter_count: u64,
    pub tensors: Value,
    pub metadata: Value,
    pub blob_key: String,
    pub architecture: Option<Value>,
    pub config: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct ModelRecord {
    pub id: Uuid,
    pub tenant_id: String,
    pub name: String,
    pub format: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub tensor_count: u64,
    pub parameter_count: u64,
    pub tensors: Value,
    pub metadata: Value,
    pub blob_key: String,
    pub architecture: Option<Value>,
    pub config: Option<Value>,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
pub(super) struct ModelRow {
    id: String,
    tenant_id: String,
    name: String,
    format: String,
    size_bytes: i64,
    sha256: String,
    tensor_count: i64,
    parameter_count: i64,
    tensors: String,
    metadata: String,
    blob_key: String,
    architecture: Option<String>,
    config: Option<String>,
    created_at: i64,
}

impl TryFrom<ModelRow> for ModelRecord {
    type Error = StoreError;
    fn try_from(r: ModelRow) -> Result<Self, StoreError> {
        Ok(ModelRecord {
            id: uuid(&r.id)?,
            tenant_id: r.tenant_id,
            name: r.name,
            format: r.format,
            size_bytes: r.size_bytes as u64,
            sha256: r.sha256,
            tensor_count: r.tensor_count as u64,
            parameter_count: r.parameter_count as u64,
            tensors: json(&r.tensors)?,
            metadata: json(&r.metadata)?,
            blob_key: r.blob_key,
            architecture: r.architecture.as_deref().map(json).transpose()?,
            config: r.config.as_deref().map(json).transpose()?,
            created_at: ts(r.created_at),
        })
    }
}

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
    pub metrics: Option<Value>,
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
    metrics: Option<String>,
    cancel_requested: bool,
    lease_owner: Option<String>,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    updated_at: i64,
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
            metrics: r.metrics.as_deref().map(json).transpose()?,
            cancel_requested: r.cancel_requested,
            worker: r.lease_owner,
            created_at: ts(r.created_at),
            started_at: r.started_at.map(ts),
            finished_at: r.finished_at.map(ts),
            updated_at: ts(r.updated_at),
        })
    }
}

/// A claimed job: only the holder of `token` may report on this attempt.
#[derive(Debug, Clone)]
pub struct Lease {
    pub job: JobRecord,
    pub token: Uuid,
}

#[derive(Debug, Clone)]
pub struct NewArtifact {
    pub id: Uuid,
    pub kind: String,
    pub file_name: String,
    pub content_type: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub blob_key: String,
}

#[derive(Debug, Clone)]
pub struct ArtifactRecord {
    pub id: Uuid,
    pub tenant_id: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub job_id: Uuid,
    pub kind: String,
    pub file_name: String,
    pub content_type: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub blob_key: String,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
pub(super) struct ArtifactRow {
    id: String,
    tenant_id: String,
    expires_at: Option<i64>,
    job_id: String,
    kind: String,
    file_name: String,
    content_type: String,
    size_bytes: i64,
    sha256: String,
    blob_key: String,
    created_at: i64,
}

impl TryFrom<ArtifactRow> for ArtifactRecord {
    type Error = StoreError;
    fn try_from(r: ArtifactRow) -> Result<Self, StoreError> {
        Ok(ArtifactRecord {
            id: uuid(&r.id)?,
            tenant_id: r.tenant_id,
            expires_at: r.expires_at.map(ts),
            job_id: uuid(&r.job_id)?,
            kind: r.kind,
            file_name: r.file_name,
            content_type: r.content_type,
            size_bytes: r.size_bytes as u64,
            sha256: r.sha256,
            blob_key: r.blob_key,
            created_at: ts(r.created_at),
        })
    }
}

pub(super) fn convert<R, T: TryFrom<R, Error = StoreError>>(
    rows: Vec<R>,
) -> Result<Vec<T>, StoreError> {
    rows.into_iter().map(T::try_from).collect()
}

#[derive(Debug, Clone)]
pub struct NewDataset {
    pub id: Uuid,
    pub tenant_id: String,
    pub name: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub summary: Value,
    pub blob_key: String,
}

#[derive(Debug, Clone)]
pub struct DatasetRecord {
    pub id: Uuid,
    pub tenant_id: String,
    pub name: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub summary: Value,
    pub blob_key: String,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
pub(super) struct DatasetRow {
    id: String,
    tenant_id: String,
    name: String,
    size_bytes: i64,
    sha256: String,
    summary: String,
    blob_key: String,
    created_at: i64,
}

impl TryFrom<DatasetRow> for DatasetRecord {
    type Error = StoreError;
    fn try_from(r: DatasetRow) -> Result<Self, StoreError> {
        Ok(DatasetRecord {
            id: uuid(&r.id)?,
            tenant_id: r.tenant_id,
            name: r.name,
            size_bytes: r.size_bytes as u64,
            sha256: r.sha256,
            summary: json(&r.summary)?,
            blob_key: r.blob_key,
            created_at: ts(r.created_at),
        })
    }
}
