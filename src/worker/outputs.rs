//! Turns a finished pipeline run into stored artifacts (the model and a JSON report) and the
//! job's metrics. Blobs are keyed by the attempt's lease token, so a stale attempt can never
//! overwrite the files of the attempt that won.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::compress::{OutputFile, PipelineRun, SafetensorsIndex};
use crate::domain::results::JobMetrics;
use crate::domain::Pipeline;
use crate::report::render;
use crate::store::{BlobStore, Lease, ModelRecord, NewArtifact};

pub struct JobOutputs {
    pub metrics: Value,
    pub artifacts: Vec<NewArtifact>,
}

pub async fn store_outputs(
    blobs: &Arc<dyn BlobStore>,
    lease: &Lease,
    model: &ModelRecord,
    pipeline: &Pipeline,
    run: PipelineRun,
    workdir: &Path,
) -> io::Result<JobOutputs> {
    // A pipeline that only measures leaves no model file: the model is as it was uploaded.
    let written = run
        .outputs
        .iter()
        .find(|o| o.kind == "model")
        .map(|o| o.path.clone());
    let main_bytes = match &written {
        Some(path) => std::fs::metadata(path)?.len(),
        None => model.size_bytes,
    };
    let PipelineRun {
        outputs,
        steps,
        evaluation,
        histograms,
    } = run;
    let metrics = JobMetrics::new(model.size_bytes, main_bytes, evaluation, histograms, steps);
    let metrics_json = serde_json::to_value(&metrics)?;
    // Read before the model file moves into blob storage.
    let config = model
        .config
        .as_ref()
        .zip(written.as_ref())
        .map(|(c, path)| config_beside(c, path));
    let mut put = Putter {
        blobs,
        prefix: format!("artifacts/{}/{}", lease.job.id, lease.token.simple()),
        base: safe_file_stem(&model.name),
        workdir,
        artifacts: Vec::new(),
        listed: Vec::new(),
    };
    let result = async {
        for output in &outputs {
            put.output(output).await?;
        }
        if let Some(config) = &config {
            put.config(config).await?;
        }
        let report = json!({
            "job_id": lease.job.id,
            "attempt": lease.job.attempts,
            "input_model": {
                "id": model.id,
                "name": model.name,
                "sha256": model.sha256,
                "size_bytes": model.size_bytes,
            },
            "pipeline": pipeline.to_json(),
            "metrics": metrics_json,
            "artifacts": put.listed,
        });
        let title = format!("compressd job {} — {}", lease.job.id, model.name);
        put.report_page(title, metrics).await?;
        put.text(
            "report.json",
            &serde_json::to_vec_pretty(&report)?,
            ".report.json",
            "report",
            "application/json",
        )
        .await
    }
    .await;
    if let Err(e) = result {
        for a in &put.artifacts {
            let _ = blobs.delete(&a.blob_key).await;
        }
        return Err(e);
    }
    Ok(JobOutputs {
        metrics: metrics_json,
        artifacts: put.artifacts,
    })
}

/// Puts a job's files into blob storage under the attempt's prefix, named after the model,
/// and remembers what it put (to record, or to delete again if a later put fails).
struct Putter<'a> {
    blobs: &'a Arc<dyn BlobStore>,
    prefix: String,
    base: String,
    workdir: &'a Path,
    artifacts: Vec<NewArtifact>,
    /// The model files and config as the JSON report lists them.
    listed: Vec<Value>,
}

impl Putter<'_> {
    async fn output(&mut self, output: &OutputFile) -> io::Result<()> {
        let content_type = if output.format.suffix.ends_with(".json") {
            "application/json"
        } else {
            "application/octet-stream"
        };
        let name = format!("{}{}", self.base, output.format.suffix);
        let a = put(
            self.blobs,
            &self.prefix,
            &output.path,
            name,
            output.kind,
            content_type,
        )
        .await?;
        self.list(&a, &output.format.description, output.format.read_with);
        self.artifacts.push(a);
        Ok(())
    }

    async fn config(&mut self, config: &Value) -> io::Result<()> {
        let path = self.workdir.join("config.json");
        tokio::fs::write(&path, serde_json::to_vec_pretty(config)?).await?;
        let a = put(
            self.blobs,
            &self.prefix,
            &path,
            "config.json".into(),
            "config",
            "application/json",
        )
        .await?;
        self.list(
            &a,
            "JSON: the uploaded config.json, plus the quantization_config of a quantized model",
            &["transformers", "vLLM", "llm-compressor"],
        );
        self.artifacts.push(a);
        Ok(())
    }

    fn list(&mut self, a: &NewArtifact, format: &str, read_with: &[&str]) {
        self.listed.push(json!({
            "kind": a.kind,
            "file_name": a.file_name,
            "sha256": a.sha256,
            "size_bytes": a.size_bytes,
            "format": format,
            "read_with": read_with,
        }));
    }

    /// A file written from bytes in the job's directory, then put.
    async fn text(
        &mut self,
        file: &str,
        bytes: &[u8],
        suffix: &str,
        kind: &str,
        content_type: &str,
    ) -> io::Result<()> {
        let path = self.workdir.join(file);
        tokio::fs::write(&path, bytes).await?;
        let name = format!("{}{suffix}", self.base);
        let a = put(self.blobs, &self.prefix, &path, name, kind, content_type).await?;
        self.artifacts.push(a);
        Ok(())
    }

    /// The HTML page and its charts, built from the metrics alone off the async runtime (the
    /// charts take a while on large models); a chart that cannot be drawn leaves the job's
    /// result intact and says so on the page.
    async fn report_page(&mut self, title: String, metrics: JobMetrics) -> io::Result<()> {
        let (html, charts) = tokio::task::spawn_blocking(move || render(&title, &metrics))
            .await
            .map_err(io::Error::other)?
            .unwrap_or_else(|e| {
                (format!("<!doctype html><html><body><h1>report unavailable</h1><p>{}</p></body></html>", e.replace('<', "&lt;")), Vec::new())
            });
        self.text(
            "report.html",
            html.as_bytes(),
            ".report.html",
            "report_html",
            "text/html; charset=utf-8",
        )
        .await?;
        for (name, svg) in charts {
            let (file, suffix) = (format!("{name}.svg"), format!(".{name}.svg"));
            self.text(&file, svg.as_bytes(), &suffix, "chart", "image/svg+xml")
                .await?;
        }
        Ok(())
    }
}

async fn put(
    blobs: &Arc<dyn BlobStore>,
    prefix: &str,
    path: &Path,
    file_name: String,
    kind: &str,
    content_type: &str,
) -> io::Result<NewArtifact> {
    let (sha256, size_bytes) = hash_file(path.to_owned()).await?;
    let blob_key = format!("{prefix}/{file_name}");
    blobs.put(&blob_key, path).await?;
    Ok(NewArtifact {
        id: Uuid::now_v7(),
        kind: kind.to_owned(),
        file_name,
        content_type: content_type.to_owned(),
        size_bytes,
        sha256,
        blob_key,
    })
}

/// The uploaded config with the model file's `quantization_config` (compressed-tensors reads
/// it from config.json), when the file has one.
fn config_beside(config: &Value, model_file: &Path) -> Value {
    let mut config = config.clone();
    let quantization = SafetensorsIndex::open(model_file)
        .ok()
        .and_then(|i| i.metadata.get("quantization_config").cloned())
        .and_then(|q| serde_json::from_str::<Value>(&q).ok());
    if let (Some(q), Value::Object(c)) = (quantization, &mut config) {
        c.insert("quantization_config".into(), q);
    }
    config
}

pub async fn hash_file(path: PathBuf) -> io::Result<(String, u64)> {
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            total += n as u64;
        }
        Ok((hex::encode(hasher.finalize()), total))
    })
    .await
    .map_err(io::Error::other)?
}

/// A file name stem from a user-given model name: letters, digits, '.', '-', '_' only.
fn safe_file_stem(name: &str) -> String {
    let stem: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    let stem = stem.trim_matches('.').to_owned();
    if stem.is_empty() {
        "model".into()
    } else {
        stem
    }
}

#[cfg(test)]
mod tests {
    use super::safe_file_stem;

    #[test]
    fn file_stems_are_safe() {
        assert_eq!(safe_file_stem("lenet"), "lenet");
        assert_eq!(safe_file_stem("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(safe_file_stem("a b\nc"), "a_b_c");
        assert_eq!(safe_file_stem(".."), "model");
    }
}
