//! `/v1/jobs`: submit, inspect, list and cancel compression jobs.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{parse_id, ApiJson, ApiQuery};
use super::views::{next_cursor, JobView, Page, PageQuery};
use super::AppState;
use crate::compress::nn::{check_fit, DatasetSummary};
use crate::compress::prune::select_tensors;
use crate::compress::quantize::check_groups;
use crate::compress::TensorEntry;
use crate::domain::{Architecture, JobStatus, Pipeline, PipelineStepDoc, QatStep, Step};
use crate::store::{CreateJob, Created, JobFilter, JobRecord, ModelRecord};

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
        (status = 400, description = "Malformed JSON or header", body = crate::domain::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = crate::domain::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid pipeline, unknown model, or Idempotency-Key reused with another body", body = crate::domain::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_job(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateJobRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let pipeline = Pipeline::parse(&req.pipeline)
        .map_err(|e| ApiError::unprocessable("invalid-pipeline", "Invalid pipeline", e.0))?;
    let model = app.store.get_model(req.model_id).await?.ok_or_else(|| {
        ApiError::unprocessable(
            "model-not-found",
            "Unknown model",
            format!(
                "no model with id '{}'; upload one with POST /v1/models",
                req.model_id
            ),
        )
    })?;
    check_against_model(&pipeline, &model)?;
    check_model_inputs(&app, &pipeline, &model, req.dataset_id).await?;
    let canonical = json!({ "model_id": req.model_id, "dataset_id": req.dataset_id, "pipeline": pipeline.to_json() });
    let request_hash = hex::encode(Sha256::digest(canonical.to_string()));
    let created = app
        .store
        .create_job(&CreateJob {
            id: Uuid::now_v7(),
            model_id: req.model_id,
            dataset_id: req.dataset_id,
            pipeline: pipeline.to_json(),
            max_attempts: app.config.max_attempts.max(1),
            idempotency_key: key,
            request_hash,
        })
        .await?;
    let (job, replayed) = match created {
        Created::New(job) => {
            tracing::info!(job_id = %job.id, model_id = %job.model_id, "job queued");
            (job, false)
        }
        Created::Replayed(job) => (job, true),
        Created::KeyReused => {
            return Err(ApiError::unprocessable(
                "idempotency-key-reused",
                "Idempotency-Key reused",
                "this Idempotency-Key was already used with a different request body; use a new key for a new job",
            ))
        }
    };
    let location = format!("/v1/jobs/{}", job.id);
    let view = job_view(&app, job, true).await?;
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
        return Err(ApiError::bad_request(
            "invalid-idempotency-key",
            format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        ));
    }
    Ok(Some(key.to_owned()))
}

/// Refuses, before queueing, a job whose steps need an architecture or a dataset it lacks, or
/// whose dataset does not fit the model.
async fn check_model_inputs(
    app: &AppState,
    pipeline: &Pipeline,
    model: &ModelRecord,
    dataset_id: Option<Uuid>,
) -> Result<(), ApiError> {
    let refuse = |code: &'static str, title: &'static str, detail: String| {
        ApiError::unprocessable(code, title, detail)
    };
    let arch = match &model.architecture {
        Some(a) => {
            Some(serde_json::from_value::<Architecture>(a.clone()).map_err(ApiError::internal)?)
        }
        None => None,
    };
    if let Some(a) = &arch {
        check_runnable(pipeline, a)
            .map_err(|e| refuse("unsupported-model", "Model cannot run this pipeline", e))?;
    }
    if pipeline.needs_architecture() && arch.is_none() {
        return Err(refuse(
            "architecture-required",
            "Model has no architecture",
            "this pipeline runs the model (train, finetune, evaluate, sensitivity, l1_filter, or pruning with a schedule or gradient criterion), but the model has no architecture; upload one with PUT /v1/models/{id}/architecture".into(),
        ));
    }
    let Some(id) = dataset_id else {
        if pipeline.needs_dataset() {
            return Err(refuse(
                "dataset-required",
                "Dataset required",
                "this pipeline trains or measures the model; give dataset_id (upload one with POST /v1/datasets)".into(),
            ));
        }
        return Ok(());
    };
    let dataset = app.store.get_dataset(id).await?.ok_or_else(|| {
        refuse(
            "dataset-not-found",
            "Unknown dataset",
            format!("no dataset with id '{id}'; upload one with POST /v1/datasets"),
        )
    })?;
    let Some(arch) = arch else {
        return Err(refuse(
            "architecture-required",
            "Model has no architecture",
            "a dataset is only used by models that carry an architecture; set one with PUT /v1/models/{id}/architecture".into(),
        ));
    };
    let summary: DatasetSummary =
        serde_json::from_value(dataset.summary).map_err(ApiError::internal)?;
    check_fit(&summary, &arch)
        .map_err(|e| refuse("dataset-mismatch", "Dataset does not fit the model", e))
}

/// Activation values one batch may hold at a layer (1 GiB of f32).
const MAX_BATCH_ACTIVATION: u64 = 1 << 28;

fn check_runnable(pipeline: &Pipeline, arch: &Architecture) -> Result<(), String> {
    if pipeline.trains() {
        arch.check_trainable()?;
    }
    let batch = pipeline.largest_batch() as u64;
    let values = batch.saturating_mul(arch.max_activation());
    if values > MAX_BATCH_ACTIVATION {
        return Err(format!(
            "a batch of {batch} samples would hold {values} activation values at one layer (at most {MAX_BATCH_ACTIVATION}); lower batch_size"
        ));
    }
    Ok(())
}

/// Refuses, before queueing, a pipeline that cannot apply to the model's tensors.
fn check_against_model(pipeline: &Pipeline, model: &ModelRecord) -> Result<(), ApiError> {
    let tensors: Vec<TensorEntry> =
        serde_json::from_value(model.tensors.clone()).map_err(ApiError::internal)?;
    for (i, step) in pipeline.steps().iter().enumerate() {
        match step {
            Step::Prune(p) => select_tensors(&tensors, &p.selection, "prune").map(drop),
            Step::Quantize(q) | Step::Qat(QatStep { quantize: q, .. }) => {
                select_tensors(&tensors, &q.selection, "quantize")
                    .and_then(|selected| check_groups(&tensors, &selected, q.scheme))
            }
            Step::Export(e) => select_tensors(&tensors, &e.selection, "export").map(drop),
            Step::Train(_)
            | Step::Finetune(_)
            | Step::Evaluate(_)
            | Step::Sensitivity(_)
            | Step::Entropy(_)
            | Step::Distill(_)
            | Step::Auto(_) => Ok(()),
        }
        .map_err(|e| {
            ApiError::unprocessable(
                "invalid-pipeline",
                "Pipeline does not apply to this model",
                format!("pipeline[{i}] ({}): {e}", step.op()),
            )
        })?;
    }
    Ok(())
}

pub async fn job_view(
    app: &AppState,
    job: JobRecord,
    with_metrics: bool,
) -> Result<JobView, ApiError> {
    let artifacts = if job.status == JobStatus::Succeeded {
        app.store.artifacts_of_job(job.id).await?
    } else {
        Vec::new()
    };
    Ok(JobView::new(job, artifacts, with_metrics))
}

pub async fn find_job(app: &AppState, raw_id: &str) -> Result<JobRecord, ApiError> {
    let id = parse_id("job", raw_id)?;
    app.store
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::not_found("job", raw_id))
}

/// A job: status, progress, metrics and artifacts.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 404, description = "No such job", body = crate::domain::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_job(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let job = find_job(&app, &id).await?;
    Ok(Json(job_view(&app, job, true).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobListQuery {
    /// Only jobs in this status: queued, running, succeeded, failed, cancelled.
    pub status: Option<String>,
    /// Only jobs of this model.
    pub model_id: Option<Uuid>,
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
        (status = 400, description = "Bad filter or paging parameters", body = crate::domain::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_jobs(
    State(app): State<AppState>,
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
        .map_err(|e| ApiError::bad_request("invalid-query", e.to_string()))?;
    let jobs = app
        .store
        .list_jobs(&JobFilter {
            status,
            model_id: q.model_id,
            limit,
            after,
        })
        .await?;
    let next = next_cursor(&jobs, limit, |j| j.id);
    let mut data = Vec::with_capacity(jobs.len());
    for job in jobs {
        data.push(job_view(&app, job, false).await?);
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
        (status = 404, description = "No such job", body = crate::domain::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job already finished", body = crate::domain::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel_job(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let job = find_job(&app, &id).await?;
    if job.status.is_terminal() {
        return Err(ApiError::conflict(
            "job-finished",
            format!(
                "the job already {}; there is nothing to cancel",
                job.status.as_str()
            ),
        ));
    }
    let job = app
        .store
        .cancel_job(job.id)
        .await?
        .ok_or_else(|| ApiError::not_found("job", &id))?;
    Ok((StatusCode::ACCEPTED, Json(job_view(&app, job, true).await?)))
}
