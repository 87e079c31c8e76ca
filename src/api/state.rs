//! What every handler shares: the store, the blob storage, the configuration, metrics, the
//! shutdown signal and the storage health check.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::store::{BlobStore, Store};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub blobs: Arc<dyn BlobStore>,
    pub config: Arc<Config>,
    pub metrics: PrometheusHandle,
    /// Cancelled when the server begins to shut down; long-lived streams end then.
    pub shutdown: CancellationToken,
    /// Bound to loopback with no admin key: with no live API key, requests run as the
    /// `local` tenant.
    pub open: bool,
    pub storage: Arc<crate::storage_health::StorageHealth>,
    /// Announcements of changed jobs (PostgreSQL); None where event streams poll.
    pub job_changes: Option<crate::store::JobChanges>,
}

impl AppState {
    /// How long a request body may send nothing before it is cut off.
    pub fn body_idle(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.config.body_idle_timeout_ms.max(100))
    }
}
