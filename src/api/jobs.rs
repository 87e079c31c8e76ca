//! `/v1/jobs`: submit, inspect, list and cancel compression jobs.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{parse_id, ttl_ms, ApiJson, ApiQuery};
use super::job_checks::{
    check_against_model, check_model_inputs, check_queue_room, check_webhook_url, queue_full,
    queue_limit,
};
use super::views::{next_cursor, JobView, Page, PageQuery};
use super::AppState;
use crate::domain::{Code, JobStatus, Pipeline, PipelineStepDoc, SUPPORTED_OPS};
use crate::store::{CreateJob, Created, JobFilter, JobRecord};

const MAX_IDEMPOTENCY_KEY: usize = 255;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJobRequest {
    /// The model to compress.
    pub model_id: Uuid,
    /// Dataset for steps that run the model (train, finetune, evaluate, sensitivity, prune
    /// with a schedule or gradient criterion). With a dataset and an architecture, every job
    /// also reports the model's accuracy, cost and speed before and after.
    #[serde(default)]
    pub dataset_id: Option<Uuid>,
    /// Steps, run in order; each names its `op`.
    #[schema(value_type = Vec<PipelineStepDoc>)]
    pub pipeline: Vec<Value>,
    /// Reuse the artifacts of a finished job with the same model bytes, dataset bytes and
    /// pipeline (default true); the job is then `succeeded` at once with `cached_from` set.
    #[serde(default = "yes")]
    pub cache: bool,
    /// Called (POST, the job as JSON, signed with the tenant's webhook secret) once the job
    /// is succeeded, failed or cancelled. http or https.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Seconds the job's artifacts are kept after it succeeds (at most ten years); then they
    /// are removed.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 315_360_000)]
    pub artifact_ttl_seconds: Option<u64>,
}

fn yes() -> bool {
    true
}

/// Submit a compression job. Answers 202 at once; the job runs on a worker. Send an
/// `Idempotency-Key` header to make retries of this request safe.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    request_body = CreateJobRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key with the same body returns the same job")),
    responses(
        (status = 202, description = "Queued (or, for a repeated Idempotency-Key, the job created the first time)", body = JobView),
        (status = 400, description = "Malformed JSON or header"),
        (status = 403, description = "The tenant's storage is full (`limit`: stored_bytes)"),
        (status = 409, description = "The tenant's queue is full (`limit`: queued_jobs)"),
        (status = 415, description = "Not JSON"),
        (status = 422, description = "Invalid pipeline, unknown model, or Idempotency-Key reused with another body"),
    )
)]
pub async fn create_job(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateJobRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let pipeline =
        Pipeline::parse(&req.pipeline).map_err(|e| ApiError::new(Code::InvalidPipeline, e.0))?;
    if let Some(url) = &req.webhook_url {
        check_webhook_url(url)?;
    }
    let ttl_ms = ttl_ms("artifact_ttl_seconds", req.artifact_ttl_seconds)?;
    let tenant = caller.tenant_id();
    let model = app
        .store
        .get_model(tenant, req.model_id)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                Code::ModelNotFound,
                format!(
                    "no model with id '{}'; upload one with POST /v1/models",
                    req.model_id
                ),
            )
        })?;
    check_against_model(&pipeline, &model).await?;
    let dataset_sha = check_model_inputs(&app, &caller, &pipeline, &model, req.dataset_id).await?;
    let canonical = json!({
        "model_id": req.model_id, "dataset_id": req.dataset_id, "pipeline": pipeline.to_json(),
        "cache": req.cache, "webhook_url": req.webhook_url, "artifact_ttl_seconds": req.artifact_ttl_seconds,
    });
    let request_hash = hex::encode(Sha256::digest(canonical.to_string()));
    // serde_json's maps are sorted, so equal pipelines give equal text.
    let cache_key = hex::encode(Sha256::digest(
        json!({
            "model": model.sha256,
            // The architecture and config change what a job measures and writes.
            "architecture": model.architecture,
            "config": model.config,
            "dataset": dataset_sha,
            "pipeline": pipeline.to_json(),
        })
        .to_string(),
    ));
    let new = CreateJob {
        id: Uuid::now_v7(),
        tenant_id: tenant.to_owned(),
        model_id: req.model_id,
        dataset_id: req.dataset_id,
        pipeline: pipeline.to_json(),
        max_attempts: app.config.max_attempts.max(1),
        idempotency_key: key,
        request_hash,
        cache_key,
        webhook_url: req.webhook_url.clone(),
        artifact_ttl_ms: ttl_ms,
        request_id: super::request_id::current(),
        trace_parent: crate::otlp::current_traceparent(),
        max_queued_jobs: queue_limit(&app, &caller),
    };
    if req.cache && new.idempotency_key.is_none() {
        if let Some(source) = app.store.cache_source(tenant, &new.cache_key).await? {
            if let Some(job) = app.store.insert_cached_job(&new, &source).await? {
                tracing::info!(job_id = %job.id, cached_from = %source.id, "job answered from the results cache");
                metrics::counter!("compressd_cache_hits_total").increment(1);
                return accepted(&app, job, false).await;
            }
        }
    }
    check_queue_room(&app, &caller).await?;
    super::stored::check_room(&app, &caller, 0).await?;
    let created = app.store.create_job(&new).await?;
    let (job, replayed) = match created {
        Created::New(job) => {
            tracing::info!(job_id = %job.id, model_id = %job.model_id, "job queued");
            (job, false)
        }
        Created::Replayed(job) => (job, true),
        Created::InputGone => {
            return Err(ApiError::new(
                Code::ModelNotFound,
                "the model or dataset was deleted while the job was being submitted",
            ))
        }
        Created::QueueFull(queued) => return Err(queue_full(queued)),
        Created::KeyReused => {
            return Err(ApiError::new(Code::IdempotencyKeyReused, "this Idempotency-Key was already used with a different request body; use a new key for a new job",
            ))
        }
    };
    accepted(&app, job, replayed).await
}

async fn accepted(app: &AppState, job: JobRecord, replayed: bool) -> Result<Response, ApiError> {
    let location = format!("/v1/jobs/{}", job.id);
    let view = job_view(app, job, MetricsView::Summary).await?;
    let mut res = (StatusCode::ACCEPTED, Json(view)).into_response();
    res.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).map_err(ApiError::internal)?,
    );
    if replayed {
        res.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(res)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or("").trim();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(ApiError::new(
            Code::InvalidIdempotencyKey,
            format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        ));
    }
    Ok(Some(key.to_owned()))
}

/// How much of a finished job's metrics an answer carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MetricsView {
    /// No metrics (list pages).
    None,
    /// Warnings, summary, evaluation and fidelity: what a status poll needs.
    #[default]
    Summary,
    /// Also the weight histograms and every step's per-tensor report.
    Full,
}

/// Query of `GET /v1/jobs/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobQuery {
    /// `summary` (default): the figures a status poll needs; `full`: also the weight
    /// histograms and every step's per-tensor report (can be large for big models).
    #[param(inline)]
    pub view: Option<JobViewParam>,
}

/// The values `view` takes.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobViewParam {
    Summary,
    Full,
}

pub async fn job_view(
    app: &AppState,
    job: JobRecord,
    view: MetricsView,
) -> Result<JobView, ApiError> {
    let (artifacts, metrics) = if job.status == JobStatus::Succeeded {
        let metrics = match view {
            MetricsView::None => None,
            MetricsView::Summary => app.store.job_metrics(job.id).await?.map(summary_only),
            MetricsView::Full => app.store.job_metrics(job.id).await?,
        };
        (app.store.artifacts_of_job(job.id).await?, metrics)
    } else {
        (Vec::new(), None)
    };
    let queue = match (job.status, view) {
        (JobStatus::Queued, MetricsView::Summary | MetricsView::Full) => {
            app.store.queue_standing(job.id).await?.map(Into::into)
        }
        _ => None,
    };
    let mut answer = JobView::new(job, artifacts, metrics);
    answer.queue = queue;
    Ok(answer)
}

/// The metrics without what grows with the model (histograms, per-tensor step reports).
fn summary_only(mut metrics: Value) -> Value {
    if let Value::Object(fields) = &mut metrics {
        fields.remove("histograms");
        fields.remove("steps");
    }
    metrics
}

pub async fn find_job(
    app: &AppState,
    caller: &Caller,
    raw_id: &str,
) -> Result<JobRecord, ApiError> {
    let id = parse_id("job", raw_id)?;
    app.store
        .get_job(caller.tenant_id(), id)
        .await?
        .ok_or_else(|| ApiError::not_found("job", raw_id))
}

/// A job: status, progress, metrics and artifacts.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "Job id"), JobQuery),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 400, description = "`view` is neither `summary` nor `full`"),
        (status = 404, description = "No such job"),
    )
)]
pub async fn get_job(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<JobQuery>,
) -> Result<Json<JobView>, ApiError> {
    let job = find_job(&app, &caller, &id).await?;
    let view = match q.view {
        Some(JobViewParam::Full) => MetricsView::Full,
        Some(JobViewParam::Summary) | None => MetricsView::Summary,
    };
    Ok(Json(job_view(&app, job, view).await?))
}

/// Delete a finished job and its artifacts (files no other job shares are removed). A queued
/// or running job must be cancelled first.
#[utoipa::path(
    delete,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such job"),
        (status = 409, description = "The job is still queued or running"),
    )
)]
pub async fn delete_job(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let job = find_job(&app, &caller, &id).await?;
    match app.store.delete_job(caller.tenant_id(), job.id).await? {
        Some(released) => {
            super::stored::release(&app, &released).await;
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiError::new(
            Code::JobActive,
            format!(
                "the job is {}; cancel it and wait for it to stop before deleting it",
                job.status.as_str()
            ),
        )),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobListQuery {
    /// Only jobs in this status: queued, running, succeeded, failed, cancelled.
    pub status: Option<String>,
    /// Only jobs of this model.
    pub model_id: Option<Uuid>,
    /// Only jobs whose pipeline has a step with this op (e.g. `prune`, `quantize`).
    pub op: Option<String>,
    /// Only jobs submitted at or after this time (RFC 3339).
    pub created_after: Option<DateTime<Utc>>,
    /// Only jobs submitted before this time (RFC 3339).
    pub created_before: Option<DateTime<Utc>>,
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
}

/// List jobs, newest first (without per-tensor metrics; fetch a job for those).
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    params(JobListQuery),
    responses(
        (status = 200, description = "A page of jobs", body = Page<JobView>),
        (status = 400, description = "Bad filter or paging parameters"),
    )
)]
pub async fn list_jobs(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<JobListQuery>,
) -> Result<Json<Page<JobView>>, ApiError> {
    let (limit, after) = PageQuery {
        limit: q.limit,
        after: q.after,
    }
    .parse()?;
    let status = q
        .status
        .as_deref()
        .map(JobStatus::parse)
        .transpose()
        .map_err(|e| ApiError::new(Code::InvalidQuery, e.to_string()))?;
    if let Some(op) = q.op.as_deref().filter(|op| !SUPPORTED_OPS.contains(op)) {
        return Err(ApiError::new(
            Code::InvalidQuery,
            format!(
                "op '{op}' is not an operation; one of: {}",
                SUPPORTED_OPS.join(", ")
            ),
        ));
    }
    let jobs = app
        .store
        .list_jobs(&JobFilter {
            tenant_id: caller.tenant_id().to_owned(),
            status,
            model_id: q.model_id,
            op: q.op,
            created_after: q.created_after.map(|t| t.timestamp_millis()),
            created_before: q.created_before.map(|t| t.timestamp_millis()),
            limit,
            after,
        })
        .await?;
    let next = next_cursor(&jobs, limit, |j| j.id);
    let mut data = Vec::with_capacity(jobs.len());
    for job in jobs {
        data.push(job_view(&app, job, MetricsView::None).await?);
    }
    Ok(Json(Page { data, next }))
}

/// Cancel a job. A queued job is cancelled at once; a running one stops at its next
/// checkpoint (watch its status or events).
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 202, description = "Cancelled, or cancellation requested", body = JobView),
        (status = 404, description = "No such job"),
        (status = 409, description = "The job already finished"),
    )
)]
pub async fn cancel_job(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let job = find_job(&app, &caller, &id).await?;
    if job.status.is_terminal() {
        return Err(ApiError::new(
            Code::JobFinished,
            format!(
                "the job already {}; there is nothing to cancel",
                job.status.as_str()
            ),
        ));
    }
    let job = app
        .store
        .cancel_job(caller.tenant_id(), job.id)
        .await?
        .ok_or_else(|| ApiError::not_found("job", &id))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(job_view(&app, job, MetricsView::Summary).await?),
    ))
}
