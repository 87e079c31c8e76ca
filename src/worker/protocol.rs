//! What a worker and the job process it starts say to each other. The worker writes a
//! [`JobSpec`] to the job's scratch directory and starts `compressd run-job <spec>`; the job
//! process writes [`FromJob`] lines on its stdout and reads [`ToJob`] lines on its stdin. Its
//! result is a file beside the spec, so that a large one never sits in a pipe.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::domain::results::ProgressDetail;

/// Everything the job process needs, owned and serialisable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSpec {
    pub job_id: Uuid,
    pub attempt: u32,
    pub model: InputModel,
    pub model_file: PathBuf,
    /// `safetensors`, `hf` (a folder: weights plus `model_files`) or `gguf`.
    pub model_format: String,
    /// A folder's other files (tokenizer and the like), by path inside the folder.
    pub model_files: Vec<(String, PathBuf)>,
    /// The dataset file and how the report names its evaluation split.
    pub dataset: Option<(PathBuf, String)>,
    /// What the dataset holds (its stored summary: tensors, or text with its split).
    pub dataset_summary: Option<Value>,
    pub architecture: Option<Value>,
    pub pipeline: Value,
    pub workdir: PathBuf,
    /// The job process's heap limit, in bytes.
    pub memory_budget: u64,
    pub chunk_delay_ms: u64,
    pub progress_interval_ms: u64,
    pub log_format: String,
    /// The `x-request-id` that submitted the job, for the job process's log lines.
    #[serde(default)]
    pub request_id: Option<String>,
    /// The worker's attempt span, as a W3C `traceparent`, when traces are on: the job
    /// process's spans continue its trace.
    #[serde(default)]
    pub trace_parent: Option<String>,
}

/// The uploaded model as the job's report describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputModel {
    pub id: Uuid,
    pub name: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub config: Option<Value>,
}

impl JobSpec {
    pub fn path(workdir: &Path) -> PathBuf {
        workdir.join("job.json")
    }

    pub fn result_path(&self) -> PathBuf {
        self.workdir.join("result.json")
    }
}

/// A line from the job process.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromJob {
    Progress {
        progress: f64,
        detail: Option<Box<ProgressDetail>>,
    },
    /// The result is in `result.json`.
    Finished,
}

/// A line to the job process: stop at the next checkpoint, and why.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToJob {
    Cancel,
    Shutdown,
}

/// How a job process's run ended, as it writes it to `result.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum JobResult {
    Succeeded(Prepared),
    /// The model cannot be used as it is.
    InvalidModel {
        detail: String,
    },
    /// The pipeline cannot apply to this model as asked.
    NotApplicable {
        detail: String,
    },
    /// Reading or writing failed; another attempt may succeed.
    Io {
        detail: String,
    },
    Cancelled,
    Shutdown,
    /// A bug: the pipeline panicked.
    Panicked {
        detail: String,
    },
}

/// The job's metrics and the files to keep, written, measured and named.
#[derive(Debug, Serialize, Deserialize)]
pub struct Prepared {
    pub metrics: Value,
    pub files: Vec<PreparedFile>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PreparedFile {
    pub path: PathBuf,
    pub file_name: String,
    pub kind: String,
    pub content_type: String,
    pub sha256: String,
    pub size_bytes: u64,
}
