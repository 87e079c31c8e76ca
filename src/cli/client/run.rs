//! `compressd run`: a job from flags for the common cases, or from a JSON/YAML file; with
//! `--wait` it follows the job to its end, with `--download` it then fetches the result.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::args::RunArgs;
use super::connection::{read_json, Connection, Failure};
use super::download::{fetch, pick};
use super::follow::follow;
use super::jobs::summary;

pub async fn run(args: RunArgs) -> Result<(), Failure> {
    let conn = Connection::new(&args.server)?;
    let mut request = match &args.pipeline {
        Some(path) => from_file(path)?,
        None => {
            let mut request = Map::new();
            request.insert("pipeline".into(), Value::Array(steps_from_flags(&args)?));
            request
        }
    };
    request.insert("model_id".into(), json!(args.model));
    if let Some(dataset) = &args.dataset {
        request.insert("dataset_id".into(), json!(dataset));
    }
    if args.no_cache {
        request.insert("cache".into(), json!(false));
    }
    let body = Value::Object(request);
    // One key for every retry of this submission: a retried POST cannot make a second job.
    let idempotency_key = uuid::Uuid::new_v4().to_string();
    let url = conn.url("/v1/jobs");
    let res = conn
        .send("submitting the job", |http| {
            Ok(http
                .post(&url)
                .header("idempotency-key", &idempotency_key)
                .json(&body))
        })
        .await?;
    let job = read_json("submitting the job", res).await?;
    let id = job["id"].as_str().unwrap_or_default().to_owned();
    conn.say(&format!(
        "job {id} {}",
        job["status"].as_str().unwrap_or("submitted")
    ));
    if !args.wait && args.download.is_none() {
        conn.print(&job, &id);
        return Ok(());
    }
    let done = follow(&conn, &id).await?;
    if let Some(path) = &args.download {
        fetch(&conn, &pick(&done, None)?, path).await?;
    }
    conn.print(&done, &summary(&done));
    Ok(())
}

/// The steps the flags ask for, in the order that composes: prune, quantize, GGUF export.
fn steps_from_flags(args: &RunArgs) -> Result<Vec<Value>, Failure> {
    let mut steps = Vec::new();
    if let Some(sparsity) = args.prune {
        if !(0.0..1.0).contains(&sparsity) {
            return Err(Failure::Input(format!(
                "--prune {sparsity}: a sparsity is a fraction from 0 up to (not including) 1"
            )));
        }
        let mut step = json!({ "op": "prune", "sparsity": sparsity });
        if let Some(scope) = &args.scope {
            step["scope"] = json!(scope);
        }
        if let Some(criterion) = &args.criterion {
            step["criterion"] = json!(criterion);
        }
        steps.push(step);
    }
    if let Some(scheme) = &args.quantize {
        let mut step = json!({ "op": "quantize", "scheme": scheme });
        if let Some(method) = &args.quantize_method {
            step["method"] = json!(method);
        }
        steps.push(step);
    }
    if let Some(store) = &args.store {
        // How the weights are written is said by the last step that writes them.
        let last = steps
            .last_mut()
            .ok_or_else(|| Failure::Input("--store applies to --prune or --quantize".into()))?;
        last["store"] = json!(store);
    }
    if let Some(ggml_type) = &args.gguf {
        steps.push(json!({ "op": "export", "format": "gguf", "type": ggml_type }));
    }
    if steps.is_empty() {
        return Err(Failure::Input(
            "say what to do: --prune SPARSITY, --quantize SCHEME, --gguf TYPE, or --pipeline FILE"
                .into(),
        ));
    }
    Ok(steps)
}

/// A pipeline file: a list of steps, or a whole job request (its `model_id` is replaced by the
/// one on the command line). JSON, or YAML when it does not parse as JSON.
fn from_file(path: &Path) -> Result<Map<String, Value>, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::local(&path.display().to_string(), e))?;
    let value: Value = match serde_json::from_str(&text) {
        Ok(value) => value,
        Err(json_error) => serde_norway::from_str(&text).map_err(|yaml_error| {
            Failure::Input(format!(
                "{} is neither JSON ({json_error}) nor YAML ({yaml_error})",
                path.display()
            ))
        })?,
    };
    match value {
        Value::Array(steps) => Ok(Map::from_iter([("pipeline".into(), Value::Array(steps))])),
        Value::Object(request) if request.contains_key("pipeline") => Ok(request),
        _ => Err(Failure::Input(format!(
            "{} must hold a list of steps or a job request with a `pipeline`",
            path.display()
        ))),
    }
}
