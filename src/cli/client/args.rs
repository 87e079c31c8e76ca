//! The client subcommands' flags. Every one takes the server's address and key from a flag,
//! the environment, or the user's config file, in that order.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Clone, Args)]
pub struct Server {
    /// The server's base URL [default: the config file's `url`, else http://127.0.0.1:8080].
    #[arg(long, env = "COMPRESSD_URL")]
    pub url: Option<String>,
    /// The API key (a tenant's key) [default: the config file's `api_key`; none for a server
    /// that runs open].
    #[arg(long, env = "COMPRESSD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Machine-readable output: one JSON document on stdout, no progress bars.
    #[arg(long)]
    pub json: bool,
    /// How long to keep retrying a server that cannot be reached, answers 5xx or 429.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub retry_seconds: u64,
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// A safetensors or GGUF file, a Hugging Face folder, or a dataset file (with --dataset).
    pub path: PathBuf,
    /// The name to store it under [default: the file or folder name].
    #[arg(long)]
    pub name: Option<String>,
    /// Store it as a dataset rather than a model.
    #[arg(long)]
    pub dataset: bool,
    /// Files larger than this go in a resumable upload of parts this size; running the same
    /// command again after an interruption sends only the parts the server lacks.
    #[arg(long, default_value_t = 32 << 20, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..=(4 << 30)))]
    pub part_size: u64,
    /// Test hook: give up after sending this many parts, as an interrupted upload would.
    #[arg(long, hide = true, env = "COMPRESSD_CLIENT_STOP_AFTER_PARTS")]
    pub stop_after_parts: Option<u64>,
    #[command(flatten)]
    pub server: Server,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The model to compress (an id from `compressd upload`).
    pub model: String,
    /// A dataset (needed by the steps that run the model: calibrated methods, fine-tuning,
    /// evaluation).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Prune to this sparsity (fraction of weights that become zero, 0 to 1).
    #[arg(long, value_name = "SPARSITY")]
    pub prune: Option<f64>,
    /// Where the pruning threshold applies: every tensor to the target, or one threshold over all.
    #[arg(long, value_parser = ["layer", "global"], requires = "prune")]
    pub scope: Option<String>,
    /// How weights are scored before pruning (wanda and sparsegpt need a --dataset).
    #[arg(long, value_parser = ["magnitude", "taylor", "movement", "wanda", "sparsegpt"], requires = "prune")]
    pub criterion: Option<String>,
    /// Quantize the weights.
    #[arg(long, value_parser = ["int8", "int4", "fp8_e4m3", "fp16", "bf16", "kmeans"])]
    pub quantize: Option<String>,
    /// How the quantized values are chosen (gptq and awq need a --dataset).
    #[arg(long, value_parser = ["rtn", "gptq", "awq", "awq_gptq"], requires = "quantize")]
    pub quantize_method: Option<String>,
    /// Export a GGUF file of this type (Q8_0, Q4_0, Q4_K_M, …).
    #[arg(long, value_name = "TYPE")]
    pub gguf: Option<String>,
    /// How the pruned or quantized model is written: `sparse` keeps only the non-zeros (a
    /// smaller file); `dense` keeps the input's layout.
    #[arg(long, value_parser = ["dense", "sparse"])]
    pub store: Option<String>,
    /// The pipeline from a file instead (JSON or YAML: a list of steps, or a whole job request).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["prune", "quantize", "gguf"])]
    pub pipeline: Option<PathBuf>,
    /// Run again even when the server has the result of the same model, data and pipeline.
    #[arg(long)]
    pub no_cache: bool,
    /// Follow the job until it ends; exit 1 if it fails.
    #[arg(long)]
    pub wait: bool,
    /// Wait, then download the result here.
    #[arg(long, short = 'o', value_name = "PATH")]
    pub download: Option<PathBuf>,
    #[command(flatten)]
    pub server: Server,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// The tenant's jobs, newest first.
    List {
        /// Only jobs in this state.
        #[arg(long, value_parser = ["queued", "running", "succeeded", "failed", "cancelled"])]
        status: Option<String>,
        /// Only jobs on this model.
        #[arg(long)]
        model: Option<String>,
        /// Only jobs with a step of this op.
        #[arg(long)]
        op: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        server: Server,
    },
    /// One job: status, metrics, result.
    Show {
        id: String,
        /// Also the weight histograms and every step's per-tensor report (with --json).
        #[arg(long)]
        full: bool,
        #[command(flatten)]
        server: Server,
    },
    /// Follow a job until it ends (reconnecting when the connection drops); exit 1 if it fails.
    Watch {
        id: String,
        #[command(flatten)]
        server: Server,
    },
    /// The job's log: what its processes wrote and what the workers said about each attempt.
    Logs {
        id: String,
        /// Keep printing new lines until the job ends (reconnecting when the connection drops).
        #[arg(long, short = 'f')]
        follow: bool,
        #[command(flatten)]
        server: Server,
    },
    /// Ask a queued or running job to stop.
    Cancel {
        id: String,
        #[command(flatten)]
        server: Server,
    },
    /// Delete a finished job and its artifacts.
    Delete {
        id: String,
        #[command(flatten)]
        server: Server,
    },
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// A job id (its result, or the artifact of --kind) or an artifact id.
    pub id: String,
    /// Which of the job's artifacts: model (the result), report, model_folder, imatrix, …
    #[arg(long)]
    pub kind: Option<String>,
    /// Where to write it [default: the artifact's file name]. An interrupted download resumes
    /// from `PATH.part`.
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub server: Server,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The job id.
    pub id: String,
    /// Where to write the HTML report [default: report-<job id>.html].
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Open it in the browser (xdg-open or open).
    #[arg(long)]
    pub open: bool,
    #[command(flatten)]
    pub server: Server,
}
