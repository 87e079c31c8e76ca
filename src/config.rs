//! Configuration: environment variables, each with a matching command-line flag.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "compressd", version, about = "Model compression as a service")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API and run workers (the default).
    Serve,
    /// Print the OpenAPI description (YAML) that the server serves at /openapi.json.
    Openapi,
    /// Manage API keys in the database named by DATABASE_URL.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage tenants in the database named by DATABASE_URL.
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Upload a model file, a Hugging Face folder or a dataset to a server; prints its id.
    Upload(crate::cli::client::UploadArgs),
    /// Submit a compression job (from flags or a pipeline file); prints its id, or with
    /// --wait follows it to the end.
    Run(crate::cli::client::RunArgs),
    /// List, show, follow, cancel or delete jobs on a server.
    #[command(subcommand)]
    Jobs(crate::cli::client::JobsCommand),
    /// Download a job's result (or another artifact), checked against its SHA-256.
    Download(crate::cli::client::DownloadArgs),
    /// Save a job's HTML report, and open it.
    Report(crate::cli::client::ReportArgs),
    /// Exit 0 if the server at COMPRESSD_BIND answers /readyz with 200 (for container
    /// health checks, where no curl is installed).
    Healthcheck,
    /// Run one job attempt described by SPEC (started by a worker; not for people).
    #[command(hide = true)]
    RunJob { spec: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key for a tenant (the tenant is created if new). The key is printed once.
    Create {
        /// The tenant the key acts for (created if it does not exist).
        #[arg(long)]
        tenant: String,
        /// A note to tell keys apart.
        #[arg(long, default_value = "")]
        label: String,
        /// Requests per minute for this key (default: COMPRESSD_RATE_LIMIT_PER_MINUTE).
        #[arg(long)]
        rate_limit_per_minute: Option<u32>,
        /// Move what the server stored while it ran without keys (tenant `local`) to this
        /// key's tenant. Without the flag the command asks at a terminal, and elsewhere says
        /// how to.
        #[arg(long, conflicts_with = "keep_local")]
        adopt_local: bool,
        /// Leave the keyless server's data with tenant `local` without asking.
        #[arg(long)]
        keep_local: bool,
    },
    /// List keys (never the keys themselves: id, prefix, tenant, state).
    List {
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key by id; it is refused from the next request on.
    Revoke {
        /// The key's id, as `keys list` shows it.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// List tenants with their limits.
    List,
    /// Change a tenant's limits: the ones given are set, the others stay as they are.
    Limits {
        /// The tenant's name.
        name: String,
        /// Bytes the tenant may keep (models, datasets, artifacts, upload parts).
        #[arg(long)]
        max_stored_bytes: Option<u64>,
        /// Jobs of the tenant running at once.
        #[arg(long)]
        max_running_jobs: Option<u32>,
        /// Jobs of the tenant waiting in the queue.
        #[arg(long)]
        max_queued_jobs: Option<u32>,
        /// First return every limit to the server's defaults (then apply the ones given).
        #[arg(long)]
        reset: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(
        long,
        global = true,
        env = "COMPRESSD_BIND",
        default_value = "127.0.0.1:8080"
    )]
    pub bind: String,
    /// A second address serving only /metrics, /healthz and /readyz, without keys: for a
    /// Prometheus scraper inside the cluster. Unset: /metrics is on the main address and needs
    /// the admin key unless the server runs open.
    #[arg(long, global = true, env = "COMPRESSD_METRICS_BIND")]
    pub metrics_bind: Option<String>,
    /// sqlite://PATH (created if missing) or postgres://…
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        default_value = "sqlite://./data/compressd.db"
    )]
    pub database_url: String,
    /// Where models, datasets and artifacts are kept: unset, the `blobs` folder of the data
    /// directory; `s3://bucket/prefix`, S3-compatible object storage shared by every replica
    /// (credentials, region and endpoint from the AWS_* variables).
    #[arg(long, global = true, env = "COMPRESSD_BLOB_URL")]
    pub blob_url: Option<String>,
    /// Where uploaded models, artifacts and scratch files live.
    #[arg(
        long,
        global = true,
        env = "COMPRESSD_DATA_DIR",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,
    /// What this process does: `all` serves the API and runs jobs; `api` only serves the API
    /// (no workers); `worker` only runs jobs, and its address serves only /healthz, /readyz and
    /// /metrics. API and worker replicas scale apart, sharing the database and the blobs.
    #[arg(long, global = true, env = "COMPRESSD_ROLE", default_value = "all", value_parser = ["all", "api", "worker"])]
    pub role: String,
    /// Jobs run at once by this process (default: number of cores; 0 runs no worker; the `api`
    /// role runs none).
    #[arg(long, global = true, env = "COMPRESSD_WORKERS")]
    pub workers: Option<usize>,
    /// Largest accepted upload, in bytes.
    #[arg(long, global = true, env = "COMPRESSD_MAX_UPLOAD_BYTES", default_value_t = 20 << 30)]
    pub max_upload_bytes: u64,
    /// How long a worker's claim on a job lasts without a heartbeat.
    #[arg(
        long,
        global = true,
        env = "COMPRESSD_LEASE_MS",
        default_value_t = 30_000
    )]
    pub lease_ms: u64,
    /// Attempts per job before it is marked failed.
    #[arg(
        long,
        global = true,
        env = "COMPRESSD_MAX_ATTEMPTS",
        default_value_t = 3
    )]
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, capped at one minute.
    #[arg(
        long,
        global = true,
        env = "COMPRESSD_RETRY_BASE_MS",
        default_value_t = 1_000
    )]
    pub retry_base_ms: u64,
    /// How often idle workers look for new jobs.
    #[arg(long, global = true, env = "COMPRESSD_POLL_MS", default_value_t = 500)]
    pub poll_ms: u64,
    /// With blobs in object storage: bytes of job inputs a worker keeps on its disk (under
    /// DATA_DIR/inputs), so that a retried job, or another job on the same model, does not
    /// fetch it again. 0 keeps none.
    #[arg(
        long,
        global = true,
        env = "COMPRESSD_INPUT_CACHE_BYTES",
        default_value_t = 16 << 30
    )]
    pub input_cache_bytes: u64,
    /// With blobs in object storage: answer a plain download (no Range or conditional
    /// headers) with a redirect to a presigned URL valid this many seconds, so the bytes flow
    /// from the store to the client without passing through an API replica.
    #[arg(long, global = true, env = "COMPRESSD_PRESIGNED_DOWNLOAD_SECONDS")]
    pub presigned_download_seconds: Option<u64>,
    /// How often a job's event stream reads the job: the pace on SQLite (default 200), and on
    /// PostgreSQL the fallback behind its change notifications (default 2000).
    #[arg(long, global = true, env = "COMPRESSD_EVENTS_POLL_MS")]
    pub events_poll_ms: Option<u64>,
    /// On SIGTERM, how long running jobs may take to finish before they go back to the queue.
    #[arg(
        long,
        global = true,
        env = "COMPRESSD_SHUTDOWN_GRACE_SECONDS",
        default_value_t = 30
    )]
    pub shutdown_grace_seconds: u64,
    /// Log format: text or json.
    #[arg(long, global = true, env = "COMPRESSD_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Key for the admin API (`/v1/admin/...`): tenants and their API keys. Unset: the admin
    /// API is off (the `keys` and `tenants` subcommands still work on the database).
    #[arg(
        long,
        global = true,
        env = "COMPRESSD_ADMIN_KEY",
        hide_env_values = true
    )]
    pub admin_key: Option<String>,
    /// Requests per minute per API key, unless the key sets its own.
    #[arg(
        long,
        global = true,
        env = "COMPRESSD_RATE_LIMIT_PER_MINUTE",
        default_value_t = 1200
    )]
    pub rate_limit_per_minute: u32,
    /// Bytes a tenant may keep (models, datasets, artifacts, upload parts), unless the tenant
    /// sets its own. Unset: no limit.
    #[arg(
        long = "default-max-stored-bytes",
        id = "default_max_stored_bytes",
        global = true,
        env = "COMPRESSD_MAX_STORED_BYTES"
    )]
    pub max_stored_bytes: Option<u64>,
    /// Jobs of one tenant running at once, unless the tenant sets its own.
    #[arg(
        long = "default-max-running-jobs",
        id = "default_max_running_jobs",
        global = true,
        env = "COMPRESSD_MAX_RUNNING_JOBS",
        default_value_t = 8
    )]
    pub max_running_jobs: u32,
    /// Jobs of one tenant waiting in the queue, unless the tenant sets its own.
    #[arg(
        long = "default-max-queued-jobs",
        id = "default_max_queued_jobs",
        global = true,
        env = "COMPRESSD_MAX_QUEUED_JOBS",
        default_value_t = 1000
    )]
    pub max_queued_jobs: u32,
    /// How long a resumable upload may stay incomplete before its parts are removed.
    #[arg(
        long,
        global = true,
        env = "COMPRESSD_UPLOAD_TTL_SECONDS",
        default_value_t = 86_400
    )]
    pub upload_ttl_seconds: u64,
    /// A request's headers must arrive within this long of its first byte, or the
    /// connection is closed (slow-loris).
    #[arg(
        long,
        global = true,
        env = "COMPRESSD_HEADER_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub header_timeout_ms: u64,
    /// Open connections in all; past it a new connection is answered 503 and closed.
    #[arg(
        long,
        global = true,
        env = "COMPRESSD_MAX_CONNECTIONS",
        default_value_t = 4096
    )]
    pub max_connections: usize,
    /// Open connections from one address; past it a new one is answered 429 and closed.
    #[arg(
        long,
        global = true,
        env = "COMPRESSD_MAX_CONNECTIONS_PER_IP",
        default_value_t = 512
    )]
    pub max_connections_per_ip: usize,
    /// A request body that sends nothing for this long is cut off (slow clients).
    #[arg(
        long,
        global = true,
        env = "COMPRESSD_BODY_IDLE_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub body_idle_timeout_ms: u64,
    /// Webhook delivery attempts before a delivery is marked failed.
    #[arg(
        long,
        global = true,
        env = "COMPRESSD_WEBHOOK_MAX_ATTEMPTS",
        default_value_t = 8
    )]
    pub webhook_max_attempts: u32,
    /// First webhook retry delay; doubles per attempt, capped at ten minutes.
    #[arg(
        long,
        global = true,
        env = "COMPRESSD_WEBHOOK_RETRY_BASE_MS",
        default_value_t = 2_000
    )]
    pub webhook_retry_base_ms: u64,
    /// How often expired uploads and artifacts are swept.
    #[arg(
        long,
        global = true,
        env = "COMPRESSD_SWEEP_MS",
        default_value_t = 60_000
    )]
    pub sweep_ms: u64,
    /// How often blob storage and scratch are searched for files a killed process left
    /// behind (lists every stored file).
    #[arg(
        long,
        global = true,
        env = "COMPRESSD_ORPHAN_SWEEP_MS",
        default_value_t = 3_600_000
    )]
    pub orphan_sweep_ms: u64,
    /// How old an unnamed blob or a dead attempt's scratch folder must be before the orphan
    /// pass removes it (younger ones may belong to work under way). For soak runs.
    #[arg(
        long,
        global = true,
        env = "COMPRESSD_ORPHAN_SETTLE_MS",
        default_value_t = 300_000,
        hide = true
    )]
    pub orphan_settle_ms: u64,
    /// Heap limit of each job's process, in bytes; a job that needs more fails saying so.
    /// Default: three quarters of the machine's (or container's) memory, shared among this
    /// process's workers, and at least 1 GiB.
    #[arg(long, global = true, env = "COMPRESSD_JOB_MEMORY_BYTES")]
    pub job_memory_bytes: Option<u64>,
    /// The executable that runs each job attempt (`compressd run-job`). Default: this binary.
    #[arg(long, global = true, env = "COMPRESSD_JOB_RUNNER", hide = true)]
    pub job_runner: Option<PathBuf>,
    /// Testing aid: sleep this long between chunks of every job.
    #[arg(
        long,
        global = true,
        env = "COMPRESSD_TEST_CHUNK_DELAY_MS",
        default_value_t = 0,
        hide = true
    )]
    pub test_chunk_delay_ms: u64,
    /// Testing aid: run as if this host's clock were off by this many milliseconds.
    #[arg(
        long,
        global = true,
        env = "COMPRESSD_TEST_CLOCK_SKEW_MS",
        default_value_t = 0,
        allow_negative_numbers = true,
        hide = true
    )]
    pub test_clock_skew_ms: i64,
}

impl Config {
    pub fn workers(&self) -> usize {
        if !self.runs_jobs() {
            return 0;
        }
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    pub fn serves_api(&self) -> bool {
        self.role != "worker"
    }

    pub fn runs_jobs(&self) -> bool {
        self.role != "api"
    }

    pub fn job_memory_budget(&self) -> u64 {
        self.job_memory_bytes.unwrap_or_else(|| {
            let share = available_memory().saturating_mul(3) / 4 / self.workers().max(1) as u64;
            share.max(1 << 30)
        })
    }

    /// The executable that runs job attempts.
    pub fn job_runner(&self) -> std::io::Result<PathBuf> {
        match &self.job_runner {
            Some(p) => Ok(p.clone()),
            None => std::env::current_exe(),
        }
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms.max(300))
    }

    pub fn blob_dir(&self) -> PathBuf {
        self.data_dir.join("blobs")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.data_dir.join("tmp")
    }

    pub fn scratch_dir(&self) -> PathBuf {
        self.data_dir.join("scratch")
    }

    /// Defaults, as `compressd` with no flags and no environment would run.
    pub fn defaults() -> Config {
        Cli::parse_from(["compressd"]).config
    }
}

/// The memory this process may use: the machine's, or less where a container's cgroup caps it.
fn available_memory() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .filter_map(|v| v.trim().parse::<u64>().ok())
    .min();
    match (meminfo, cgroup) {
        (Some(m), Some(c)) => m.min(c),
        (Some(m), None) => m,
        (None, Some(c)) => c,
        (None, None) => 8 << 30,
    }
}
