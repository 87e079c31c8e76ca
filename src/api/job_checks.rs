//! Checks a job must pass before it is queued: the pipeline against the model's tensors and
//! architecture, the dataset against the model, the webhook address, the tenant's queue.

use uuid::Uuid;

use super::auth::Caller;
use super::error::ApiError;
use super::AppState;
use crate::compress::nn::{check_fit, DatasetSummary};
use crate::compress::prune::select_tensors;
use crate::compress::quant::file::check_groups;
use crate::compress::TensorEntry;
use crate::domain::{Architecture, Code, Pipeline};
use crate::store::ModelRecord;

const MAX_WEBHOOK_URL: usize = 2048;

pub(super) fn check_webhook_url(url: &str) -> Result<(), ApiError> {
    let bad = |why: &str| ApiError::new(Code::InvalidWebhookUrl, format!("webhook_url {why}"));
    if url.len() > MAX_WEBHOOK_URL {
        return Err(bad(&format!("is longer than {MAX_WEBHOOK_URL} characters")));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&format!("is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(bad("must be an http or https URL with a host"));
    }
    Ok(())
}

/// Refuses (409, naming `queued_jobs`) a job that would pass the tenant's queue limit.
pub(super) async fn check_queue_room(app: &AppState, caller: &Caller) -> Result<(), ApiError> {
    let limit = caller
        .tenant
        .limits
        .max_queued_jobs
        .unwrap_or(i64::from(app.config.max_queued_jobs));
    let queued = app.store.queued_jobs(caller.tenant_id()).await?;
    if queued >= limit {
        return Err(ApiError::over_limit(Code::QueueFull,
            "queued_jobs",
            format!("this tenant has {queued} queued jobs, its limit; wait for some to start or cancel some"),
        ));
    }
    Ok(())
}

/// Refuses, before queueing, a job whose steps need an architecture or a dataset it lacks, or
/// whose dataset does not fit the model.
/// Returns the dataset's SHA-256, if the job has one.
pub(super) async fn check_model_inputs(
    app: &AppState,
    caller: &Caller,
    pipeline: &Pipeline,
    model: &ModelRecord,
    dataset_id: Option<Uuid>,
) -> Result<Option<String>, ApiError> {
    let refuse = ApiError::new;
    let arch = match &model.architecture {
        Some(a) => {
            Some(serde_json::from_value::<Architecture>(a.clone()).map_err(ApiError::internal)?)
        }
        None => None,
    };
    if let Some(a) = &arch {
        check_runnable(pipeline, a).map_err(|e| refuse(Code::UnsupportedModel, e))?;
    }
    if pipeline.needs_architecture() && arch.is_none() {
        return Err(refuse(Code::ArchitectureRequired, "this pipeline runs the model (train, finetune, evaluate, sensitivity, l1_filter, or pruning with a schedule or gradient criterion), but the model has no architecture; upload one with PUT /v1/models/{id}/architecture".into(),
        ));
    }
    let Some(id) = dataset_id else {
        if pipeline.needs_dataset() {
            return Err(refuse(Code::DatasetRequired, "this pipeline trains or measures the model; give dataset_id (upload one with POST /v1/datasets)".into(),
            ));
        }
        return Ok(None);
    };
    let dataset = app
        .store
        .get_dataset(caller.tenant_id(), id)
        .await?
        .ok_or_else(|| {
            refuse(
                Code::DatasetNotFound,
                format!("no dataset with id '{id}'; upload one with POST /v1/datasets"),
            )
        })?;
    let Some(arch) = arch else {
        return Err(refuse(Code::ArchitectureRequired, "a dataset is only used by models that carry an architecture; set one with PUT /v1/models/{id}/architecture".into(),
        ));
    };
    let summary: DatasetSummary =
        serde_json::from_value(dataset.summary).map_err(ApiError::internal)?;
    check_fit(&summary, &arch).map_err(|e| refuse(Code::DatasetMismatch, e))?;
    Ok(Some(dataset.sha256))
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
    if let Some((layer, per_sample)) = arch.largest_unfold() {
        let values = batch.saturating_mul(per_sample);
        if values > MAX_BATCH_ACTIVATION {
            return Err(format!(
                "layer '{layer}' (conv2d) unfolds one sample into {per_sample} values (output positions × input channels × kernel area), {values} for a batch of {batch}; at most {MAX_BATCH_ACTIVATION} fit a job's memory: lower batch_size, or shrink the kernel, padding or input"
            ));
        }
    }
    Ok(())
}

/// Refuses, before queueing, a pipeline whose steps select tensors the model does not have
/// (or whose quantization groups do not divide the rows). Runs on a blocking thread: a model
/// may have many tensors and a step many patterns.
pub(super) async fn check_against_model(
    pipeline: &Pipeline,
    model: &ModelRecord,
) -> Result<(), ApiError> {
    let (pipeline, tensors) = (pipeline.clone(), model.tensors.clone());
    tokio::task::spawn_blocking(move || {
        let tensors: Vec<TensorEntry> =
            serde_json::from_value(tensors).map_err(ApiError::internal)?;
        for (i, step) in pipeline.steps().iter().enumerate() {
            let Some(s) = step.needs().selects() else {
                continue;
            };
            select_tensors(&tensors, s.selection, step.op())
                .and_then(|selected| match s.scheme {
                    Some(scheme) => check_groups(&tensors, &selected, scheme),
                    None => Ok(()),
                })
                .map_err(|e| {
                    ApiError::new(
                        Code::PipelineNotApplicable,
                        format!("pipeline[{i}] ({}): {e}", step.op()),
                    )
                })?;
        }
        Ok(())
    })
    .await
    .map_err(ApiError::internal)?
}
