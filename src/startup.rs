//! Builds the application: store, blob storage, workers and the HTTP server on one listener.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::store::{BlobStore, LocalBlobs, ObjectBlobs, Store};
use crate::telemetry;
use crate::worker::{Worker, WorkerPool, WorkerSettings};

pub struct Application {
    address: std::net::SocketAddr,
    metrics_address: Option<std::net::SocketAddr>,
    server: JoinHandle<std::io::Result<()>>,
    pool: WorkerPool,
    worker: Worker,
    store: Store,
    shutdown: CancellationToken,
    grace: Duration,
    /// Webhook sender and retention sweeper.
    background: Vec<JoinHandle<()>>,
}

impl Application {
    /// Connects, migrates, binds (port 0 picks a free port) and starts serving and working.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        if config.test_clock_skew_ms != 0 {
            crate::store::skew_local_clock(config.test_clock_skew_ms);
        }
        let store = Store::connect(&config.database_url)
            .await
            .with_context(|| format!("opening the store at {}", redact(&config.database_url)))?;
        store
            .ensure_local_tenant()
            .await
            .context("creating the local tenant")?;
        for dir in [config.tmp_dir(), config.scratch_dir()] {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let blobs: Arc<dyn BlobStore> = match &config.blob_url {
            Some(url) => Arc::new(ObjectBlobs::from_url(url)?),
            None => Arc::new(
                LocalBlobs::new(config.blob_dir())
                    .with_context(|| format!("creating {}", config.blob_dir().display()))?,
            ),
        };
        // Refuse to serve before anything starts: a refused process must not run jobs.
        let listener = TcpListener::bind(&config.bind)
            .await
            .with_context(|| format!("binding {}", config.bind))?;
        let address = listener.local_addr()?;
        // Open (no keys, everyone is tenant `local`) only on loopback and only while no admin
        // key is set: an operator who set one means keys to be needed, also once the last
        // tenant key is revoked.
        let loopback = address.ip().is_loopback();
        let open = loopback && config.admin_key.is_none();
        let keys = store.live_keys_exist().await?;
        if config.serves_api() && !loopback && !keys && config.admin_key.is_none() {
            anyhow::bail!(
                "refusing to serve on {address} with no API keys: anyone who can reach it could use it. \
                 Create a key first (`compressd keys create --tenant NAME`), set COMPRESSD_ADMIN_KEY, \
                 or bind to 127.0.0.1"
            );
        }
        if config.serves_api() && open && !keys {
            tracing::warn!(%address, "no API keys exist: serving without authentication, as tenant 'local', because the address is loopback");
        }
        let mut local_dirs = vec![config.tmp_dir(), config.scratch_dir()];
        if config.blob_url.is_none() {
            local_dirs.push(config.blob_dir());
        }
        let storage = Arc::new(crate::storage_health::StorageHealth::new(local_dirs));
        let worker = Worker::new(
            store.clone(),
            blobs.clone(),
            storage.clone(),
            WorkerSettings {
                lease: config.lease(),
                max_attempts: config.max_attempts.max(1),
                retry_base: Duration::from_millis(config.retry_base_ms),
                progress_interval: Duration::from_millis(250),
                scratch_dir: config.scratch_dir(),
                chunk_delay: Duration::from_millis(config.test_chunk_delay_ms),
                max_running_per_tenant: i64::from(config.max_running_jobs),
                job_runner: config
                    .job_runner()
                    .context("finding the executable that runs jobs")?,
                memory_budget: config.job_memory_budget(),
                log_format: config.log_format.clone(),
                input_cache_dir: config.data_dir.join("inputs"),
                input_cache_bytes: config.input_cache_bytes,
            },
        );
        // The recorder first: what is recorded before it exists is lost.
        let metrics = telemetry::metrics_handle();
        metrics::gauge!("compressd_workers").set(config.workers() as f64);
        let pool = WorkerPool::start(
            worker.clone(),
            config.workers(),
            Duration::from_millis(config.poll_ms.max(10)),
        );
        let shutdown = CancellationToken::new();
        let background = background_tasks(&config, &store, &blobs, &shutdown);
        let grace = Duration::from_secs(config.shutdown_grace_seconds);
        let blobs_described = blobs.describe();
        let state = AppState {
            store: store.clone(),
            blobs,
            config: Arc::new(config.clone()),
            metrics,
            shutdown: shutdown.clone(),
            open,
            storage,
            job_changes: store.job_changes(shutdown.clone()),
        };
        let state_for_metrics = state.clone();
        // A worker has no API to offer: its address is for probes and the scraper.
        let app = if config.serves_api() {
            api::router(state)
        } else {
            api::metrics_router(state)
        };
        let stop = shutdown.clone();
        let header_timeout = Duration::from_millis(config.header_timeout_ms.max(100));
        let limits = crate::serve::Limits {
            header_timeout,
            connections: config.max_connections.max(1),
            per_ip: config.max_connections_per_ip.max(1),
        };
        let metrics_listener = match &config.metrics_bind {
            Some(bind) => Some(
                TcpListener::bind(bind)
                    .await
                    .with_context(|| format!("binding the metrics listener {bind}"))?,
            ),
            None => None,
        };
        let metrics_address = metrics_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let server = tokio::spawn(crate::serve::serve(listener, app, limits, stop.clone()));
        let mut background = background;
        if let Some(listener) = metrics_listener {
            let router = api::metrics_router(state_for_metrics);
            background.push(tokio::spawn(async move {
                if let Err(e) = crate::serve::serve(listener, router, limits, stop).await {
                    tracing::error!(error = %e, "the metrics listener stopped");
                }
            }));
        }
        tracing::info!(
            %address,
            metrics_address = metrics_address.map(|a| a.to_string()),
            store = store.backend(),
            role = %config.role,
            blobs = blobs_described,
            workers = config.workers(),
            worker_id = worker.id(),
            "compressd listening"
        );
        Ok(Application {
            address,
            metrics_address,
            server,
            pool,
            worker,
            store,
            shutdown,
            grace,
            background,
        })
    }

    pub fn address(&self) -> std::net::SocketAddr {
        self.address
    }

    /// Where `/metrics` is served without a key, when `COMPRESSD_METRICS_BIND` is set.
    pub fn metrics_address(&self) -> Option<std::net::SocketAddr> {
        self.metrics_address
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// A worker of this process, for tests to drive the queue one job at a time.
    pub fn worker(&self) -> Worker {
        self.worker.clone()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until `signal` fires, then shuts down gracefully.
    pub async fn run_until_stopped(self, signal: ShutdownSignal) -> anyhow::Result<()> {
        signal.wait().await;
        tracing::info!("shutdown requested: no new jobs; running jobs get the grace period");
        self.stop().await
    }

    /// Stops accepting requests and jobs, lets running jobs finish within the grace period,
    /// releases the rest back to the queue.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.pool.shutdown(self.grace).await;
        let served = self.server.await;
        for task in self.background {
            let _ = task.await;
        }
        self.store.close().await;
        served??;
        tracing::info!("compressd stopped");
        Ok(())
    }
}

/// SIGTERM or Ctrl-C, listened for from the moment it is installed: install it before
/// anything starts work, so that a signal during start-up is not lost to the default action.
pub struct ShutdownSignal {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    pub fn install() -> Self {
        ShutdownSignal {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
        }
    }

    pub async fn wait(self) {
        #[cfg(unix)]
        let term = async move {
            match self.term {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
    }
}

/// Hides a password in a database URL before it is logged.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].find(':') {
            Some(colon) => format!("{}:***{}", &url[..s + 3 + colon], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

/// The webhook sender and the retention sweeper, both stopped by `shutdown`.
fn background_tasks(
    config: &Config,
    store: &Store,
    blobs: &Arc<dyn BlobStore>,
    shutdown: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(crate::notify::run(
            store.clone(),
            crate::notify::WebhookSettings {
                max_attempts: config.webhook_max_attempts.max(1),
                retry_base: Duration::from_millis(config.webhook_retry_base_ms),
                poll: Duration::from_millis(config.poll_ms.clamp(10, 1000)),
            },
            shutdown.clone(),
        )),
        tokio::spawn(
            crate::sweeper::Sweeper {
                store: store.clone(),
                blobs: blobs.clone(),
                tmp_dir: config.tmp_dir(),
                scratch_dir: config.scratch_dir(),
                orphans_every: Duration::from_millis(config.orphan_sweep_ms.max(1000)),
                settle: Duration::from_millis(config.orphan_settle_ms),
            }
            .run(
                Duration::from_millis(config.sweep_ms.max(50)),
                shutdown.clone(),
            ),
        ),
    ]
}
