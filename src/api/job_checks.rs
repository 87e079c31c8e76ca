//! Checks a job must pass before it is queued: the pipeline against the model's tensors and
//! architecture, the dataset against the model, the webhook address, the tenant's queue.

use uuid::Uuid;

use super::auth::Caller;
use super::error::ApiError;
use super::AppState;
use crate::compress::nn::{check_fit, DatasetSummary};
use crate::compress::prune::select_tensors;
use crate::compress::quant::file::check_groups;
use crate::compress::transformer::tensors::block_linears;
use crate::compress::transformer::{ModelConfig, TransformerConfig};
use crate::compress::TensorEntry;
use crate::domain::steps::prune::PruneMethod;
use crate::domain::{Architecture, Code, Pipeline, Step, TensorSelection};
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

/// How many queued jobs the caller's tenant may have.
pub(super) fn queue_limit(app: &AppState, caller: &Caller) -> i64 {
    caller
        .tenant
        .limits
        .max_queued_jobs
        .unwrap_or(i64::from(app.config.max_queued_jobs))
}

/// Refuses (409, naming `queued_jobs`) a job that would pass the tenant's queue limit. The
/// store checks again where it adds the job, under the tenant's queue lock.
pub(super) async fn check_queue_room(app: &AppState, caller: &Caller) -> Result<(), ApiError> {
    let queued = app.store.queued_jobs(caller.tenant_id()).await?;
    if queued >= queue_limit(app, caller) {
        return Err(queue_full(queued));
    }
    Ok(())
}

pub(super) fn queue_full(queued: i64) -> ApiError {
    ApiError::over_limit(
        Code::QueueFull,
        "queued_jobs",
        format!("this tenant has {queued} queued jobs, its limit; wait for some to start or cancel some"),
    )
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
    if transformer_config(model)?.is_some() {
        return check_transformer_inputs(app, caller, pipeline, dataset_id).await;
    }
    if let Some((i, method)) =
        (pipeline.steps().iter().enumerate()).find_map(|(i, s)| s.calibrates().map(|m| (i, m)))
    {
        return Err(refuse(Code::UnsupportedModel, format!(
            "pipeline[{i}]: {method} runs a transformer over calibration text; this model is not one compressd runs (a Hugging Face folder or GGUF file of the Llama family or BERT)"
        )));
    }
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
    if is_text(&dataset.summary) {
        return Err(refuse(Code::DatasetMismatch, "this is a text dataset, for transformer models; this model runs on tensor datasets (train and evaluation inputs with labels)".into()));
    }
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
    let config = transformer_config(model)?;
    tokio::task::spawn_blocking(move || {
        let tensors: Vec<TensorEntry> =
            serde_json::from_value(tensors).map_err(ApiError::internal)?;
        let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        let default = config.as_ref().map(|c| block_linears(c, &names));
        for (i, step) in pipeline.steps().iter().enumerate() {
            let step = &effective(step, default.as_ref());
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

fn is_text(summary: &serde_json::Value) -> bool {
    summary.get("kind").and_then(serde_json::Value::as_str) == Some("text")
}

/// The config of a model compressd runs as a transformer (a Hugging Face folder or a GGUF
/// file whose family it knows); None for every other model.
pub(super) fn transformer_config(
    model: &ModelRecord,
) -> Result<Option<TransformerConfig>, ApiError> {
    if !matches!(model.format.as_str(), "hf" | "gguf") {
        return Ok(None);
    }
    let Some(config) = &model.config else {
        return Ok(None);
    };
    Ok(ModelConfig::parse(config).map_err(ApiError::internal)?.runs)
}

/// Transformers take `evaluate` and the steps that read only weights; a step that trains or
/// needs a sequential architecture is refused, and a measuring step needs a text dataset.
async fn check_transformer_inputs(
    app: &AppState,
    caller: &Caller,
    pipeline: &Pipeline,
    dataset_id: Option<Uuid>,
) -> Result<Option<String>, ApiError> {
    let mut calibrates: Option<&str> = None;
    for (i, step) in pipeline.steps().iter().enumerate() {
        calibrates = calibrates.or(step.calibrates());
        let ok = match step {
            Step::Evaluate(_) | Step::Quantize(_) | Step::Export(_) | Step::Entropy(_) => true,
            Step::Prune(p) if p.calibrates() => true,
            Step::Prune(p) => p.method != PruneMethod::L1Filter && !p.needs_dataset(),
            _ => false,
        };
        if !ok {
            return Err(ApiError::new(Code::UnsupportedModel, format!(
                "pipeline[{i}] ({}): transformer models take evaluate and the weight-only steps (prune by magnitude or N:M without a schedule, quantize, export, entropy), prune with criterion wanda or sparsegpt, and quantize with method gptq, awq or awq_gptq; this step is for sequential models",
                step.op()
            )));
        }
    }
    let measures = pipeline
        .steps()
        .iter()
        .any(|s| matches!(s, Step::Evaluate(_)));
    let Some(id) = dataset_id else {
        if let Some(method) = calibrates {
            return Err(ApiError::new(Code::DatasetRequired, format!("{method} reads calibration text: give dataset_id of a text or JSON Lines dataset whose split has a calibration part (POST /v1/datasets)")));
        }
        if measures {
            return Err(ApiError::new(Code::DatasetRequired, "evaluate measures the model on text: give dataset_id of a text or JSON Lines dataset (POST /v1/datasets)"));
        }
        return Ok(None);
    };
    let dataset = app
        .store
        .get_dataset(caller.tenant_id(), id)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                Code::DatasetNotFound,
                format!("no dataset with id '{id}'; upload one with POST /v1/datasets"),
            )
        })?;
    if !is_text(&dataset.summary) {
        return Err(ApiError::new(Code::DatasetMismatch, "a transformer is measured on text: this dataset holds tensors; upload UTF-8 text or JSON Lines instead"));
    }
    let calibration = dataset
        .summary
        .pointer("/split/calibration")
        .and_then(|c| serde_json::from_value::<[u64; 2]>(c.clone()).ok());
    if let Some(method) = calibrates.filter(|_| !matches!(calibration, Some([a, b]) if b > a)) {
        return Err(ApiError::new(Code::DatasetMismatch, format!("{method} reads the dataset's calibration split, and this one's is empty: upload the text again with a split whose calibration part holds text (e.g. {{\"by\":\"bytes\",\"evaluation\":[0,N],\"calibration\":[N,M]}})")));
    }
    Ok(Some(dataset.sha256))
}

/// What a step selects on this model: a transformer's blocks' linear layers when the request
/// names no `include`.
fn effective(step: &Step, default: Option<&TensorSelection>) -> Step {
    match default {
        Some(d) => step.map_selection(|s| match s.include {
            Some(_) => s.clone(),
            None => {
                let mut out = d.clone();
                out.exclude.extend(s.exclude.iter().cloned());
                out
            }
        }),
        None => step.clone(),
    }
}
