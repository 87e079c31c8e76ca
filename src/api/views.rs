//! The JSON bodies the API answers with.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::ApiError;
use crate::domain::{ArchitectureWire, Code, JobStatus, PipelineStepDoc, Problem};
use crate::store::{ArtifactRecord, DatasetRecord, JobRecord, ModelRecord};

pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 200;

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelView {
    pub id: Uuid,
    pub name: String,
    /// `safetensors` (one file), `hf` (a Hugging Face folder) or `gguf`.
    pub format: String,
    pub size_bytes: u64,
    /// Hex SHA-256 of the file as uploaded.
    pub sha256: String,
    pub tensor_count: u64,
    pub parameter_count: u64,
    /// The file's `__metadata__`.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Every tensor's name, dtype and shape (single-model responses only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<TensorView>>)]
    pub tensors: Option<Value>,
    /// The layers the service runs the model with, if the model has one.
    #[schema(value_type = Option<ArchitectureWire>)]
    pub architecture: Option<Value>,
    /// The `config.json` uploaded with the model, if any (for a GGUF file, the one its
    /// metadata describes).
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
    /// A Hugging Face folder's other files (tokenizer and the like), kept with the model and
    /// returned with its compressed artifacts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ModelFileView>,
    /// For a Hugging Face folder or a GGUF file: the architecture and whether compressd runs it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transformer: Option<TransformerView>,
    pub created_at: DateTime<Utc>,
    /// Where to download the file (a folder's weights, joined into one safetensors file).
    pub file_url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelFileView {
    pub path: String,
    pub size_bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransformerView {
    /// `architectures[0]` of the config.
    pub architecture: String,
    /// `decoder` (Llama, Mistral, Qwen2), `encoder` (BERT), or null: weights only.
    pub family: Option<String>,
    /// Whether evaluate and fidelity figures apply (a family compressd runs, with its tokenizer).
    pub runs: bool,
    pub has_tokenizer: bool,
    /// What a user should know (weights only, a tokenizer that could not be rebuilt).
    pub note: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TensorView {
    name: String,
    dtype: String,
    shape: Vec<u64>,
}

impl ModelView {
    pub fn new(record: ModelRecord, with_tensors: bool) -> Self {
        let m = record.model;
        let transformer = transformer_view(&m.format, m.config.as_ref(), &m.files, &m.metadata);
        ModelView {
            file_url: format!("/v1/models/{}/file", m.id),
            id: m.id,
            name: m.name,
            format: m.format,
            size_bytes: m.size_bytes,
            sha256: m.sha256,
            tensor_count: m.tensor_count,
            parameter_count: m.parameter_count,
            metadata: m.metadata,
            tensors: with_tensors.then_some(m.tensors),
            transformer,
            files: m
                .files
                .iter()
                .map(|f| ModelFileView {
                    path: f.path.clone(),
                    size_bytes: f.size_bytes,
                    sha256: f.sha256.clone(),
                })
                .collect(),
            architecture: m.architecture,
            config: m.config,
            created_at: record.created_at,
        }
    }
}

fn transformer_view(
    format: &str,
    config: Option<&Value>,
    files: &[crate::store::ModelFile],
    metadata: &Value,
) -> Option<TransformerView> {
    use crate::compress::transformer::{ModelConfig, TransformerConfig};
    if !matches!(format, "hf" | "gguf") {
        return None;
    }
    let parsed = ModelConfig::parse(config?).ok()?;
    let family = parsed.runs.as_ref().map(|r| match r {
        TransformerConfig::Decoder(_) => "decoder".to_owned(),
        TransformerConfig::Encoder(_) => "encoder".to_owned(),
    });
    let has_tokenizer = files.iter().any(|f| f.path == "tokenizer.json");
    Some(TransformerView {
        architecture: parsed.architecture,
        runs: family.is_some() && has_tokenizer,
        family,
        has_tokenizer,
        note: metadata
            .get("compressd.note")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetView {
    pub id: Uuid,
    pub name: String,
    pub size_bytes: u64,
    /// Hex SHA-256 of the file as uploaded.
    pub sha256: String,
    /// Sample shape, input dtype, class count, and per split: tensor names, sample count and
    /// samples per class.
    #[schema(value_type = Object)]
    pub summary: Value,
    pub created_at: DateTime<Utc>,
}

impl From<DatasetRecord> for DatasetView {
    fn from(d: DatasetRecord) -> Self {
        DatasetView {
            id: d.id,
            name: d.name,
            size_bytes: d.size_bytes,
            sha256: d.sha256,
            summary: d.summary,
            created_at: d.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ArtifactView {
    pub id: Uuid,
    pub job_id: Uuid,
    /// `model` (the result), `report` (HTML or JSON), `config` (a folder's config.json),
    /// `model_file` (a folder's other files), `model_folder` (the folder as one tar),
    /// `model_dequantized`, `architecture`, or `imatrix` (llama.cpp's importance matrix).
    pub kind: String,
    pub file_name: String,
    pub content_type: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub created_at: DateTime<Utc>,
    /// When the file is removed (the job's `artifact_ttl_seconds`); null: kept until deleted.
    pub expires_at: Option<DateTime<Utc>>,
    pub file_url: String,
}

impl From<ArtifactRecord> for ArtifactView {
    fn from(a: ArtifactRecord) -> Self {
        ArtifactView {
            file_url: format!("/v1/artifacts/{}/file", a.id),
            id: a.id,
            job_id: a.job_id,
            kind: a.kind,
            file_name: a.file_name,
            content_type: a.content_type,
            size_bytes: a.size_bytes,
            sha256: a.sha256,
            created_at: a.created_at,
            expires_at: a.expires_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: Uuid,
    pub model_id: Uuid,
    pub dataset_id: Option<Uuid>,
    /// The pipeline as it will run, with defaults filled in.
    #[schema(value_type = Vec<PipelineStepDoc>)]
    pub pipeline: Value,
    pub status: JobStatus,
    /// Fraction done, 0 to 1.
    pub progress: f64,
    /// What a long step is doing: step index, op, round, epoch, latest accuracy.
    #[schema(value_type = Option<crate::domain::results::ProgressDetail>)]
    pub progress_detail: Option<Value>,
    /// Set when the job failed (or, while queued for a retry, the last attempt's error).
    #[schema(value_type = Option<Problem>)]
    pub error: Option<Value>,
    pub attempts: u32,
    pub max_attempts: u32,
    pub cancel_requested: bool,
    /// What the finished job measured (single-job answers only): the summary, evaluation and
    /// fidelity; with `?view=full` also the histograms and each step's per-tensor report.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::domain::results::JobMetrics>)]
    pub metrics: Option<Value>,
    /// The file to download: the compressed model (for a Hugging Face folder, the folder as
    /// one tar, `model_folder`; otherwise the `model` file). Null until the job has succeeded.
    pub result: Option<ArtifactView>,
    pub artifacts: Vec<ArtifactView>,
    /// Set when the job was answered from the results cache: the finished job with the same
    /// model bytes, dataset bytes and pipeline whose artifacts it shares.
    pub cached_from: Option<Uuid>,
    pub cache_hit: bool,
    /// The webhook delivery, if the job named a `webhook_url`.
    pub webhook: Option<WebhookView>,
    /// Where a queued job stands (single-job answers only; absent once it has started).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueView>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl JobView {
    /// `metrics`: the job's metrics when the view shows them (single-job answers).
    pub fn new(j: JobRecord, artifacts: Vec<ArtifactRecord>, metrics: Option<Value>) -> Self {
        JobView {
            id: j.id,
            model_id: j.model_id,
            dataset_id: j.dataset_id,
            pipeline: j.pipeline,
            status: j.status,
            progress: j.progress,
            progress_detail: j.progress_detail,
            error: j.error,
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            cancel_requested: j.cancel_requested,
            metrics,
            result: ["model_folder", "model"]
                .iter()
                .find_map(|kind| artifacts.iter().find(|a| a.kind == *kind))
                .cloned()
                .map(ArtifactView::from),
            artifacts: artifacts.into_iter().map(ArtifactView::from).collect(),
            cache_hit: j.cached_from.is_some(),
            cached_from: j.cached_from,
            webhook: j.webhook.map(|w| WebhookView {
                url: w.url,
                status: w.status,
                attempts: w.attempts,
                last_error: w.last_error,
            }),
            queue: None,
            created_at: j.created_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
            updated_at: j.updated_at,
        }
    }
}

/// Where a queued job stands, and when it should start at the pace the service keeps.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    /// 1 when the job is its tenant's next to start: a tenant's jobs start in the order they
    /// were submitted.
    pub position: u64,
    /// Queued jobs of every tenant submitted before this one. Workers share out turns
    /// between tenants, so some of them may start after it.
    pub jobs_ahead: u64,
    /// Jobs the service (every worker) ran to an end in the last 15 minutes (results-cache
    /// answers, which run nothing, left out): the pace the estimate assumes.
    pub finished_last_15_minutes: u64,
    /// `jobs_ahead` at that pace, from now (or from the job's retry time, if later). Null
    /// when no job finished in the last 15 minutes: then there is no pace to go by.
    pub estimated_start_at: Option<DateTime<Utc>>,
}

impl From<crate::store::QueueStanding> for QueueView {
    fn from(q: crate::store::QueueStanding) -> Self {
        let estimated_start_at = (q.finished_recently > 0).then(|| {
            let seconds =
                q.jobs_ahead as f64 * q.window_ms as f64 / 1e3 / q.finished_recently as f64;
            q.now.max(q.run_after) + chrono::Duration::milliseconds((seconds * 1e3) as i64)
        });
        QueueView {
            position: q.tenant_ahead + 1,
            jobs_ahead: q.jobs_ahead,
            finished_last_15_minutes: q.finished_recently,
            estimated_start_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    pub url: String,
    /// pending (not yet delivered; retried with backoff), delivered, or failed (gave up).
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// A page of a list, newest first. Pass `next` as `after` to get the following page.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T: ToSchema> {
    pub data: Vec<T>,
    pub next: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
}

impl PageQuery {
    pub fn parse(&self) -> Result<(u32, Option<Uuid>), ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::new(
                Code::InvalidQuery,
                format!("limit must be between 1 and {MAX_PAGE}"),
            ));
        }
        let after = self
            .after
            .as_deref()
            .map(|a| {
                Uuid::parse_str(a).map_err(|_| {
                    ApiError::new(
                        Code::InvalidQuery,
                        "after must be a cursor taken from a previous page's next",
                    )
                })
            })
            .transpose()?;
        Ok((limit, after))
    }
}

/// The cursor for the page after `items`, if the page was full.
pub fn next_cursor<T>(items: &[T], limit: u32, id: impl Fn(&T) -> Uuid) -> Option<String> {
    (items.len() == limit as usize)
        .then(|| items.last().map(|i| id(i).to_string()))
        .flatten()
}
