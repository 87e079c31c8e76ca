//! Workers: claim a job from the store, run its pipeline off the async runtime while keeping
//! the lease alive, then record the result. Any number of workers, in any number of
//! processes, share one queue through the store alone.

mod attempt;
mod input_cache;
pub mod job_process;
mod outputs;
mod pool;
pub(crate) mod prepare;
pub mod protocol;
mod run;
mod transformer_job;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;

use crate::compress::{Control, Interrupt};
use crate::storage_health::StorageHealth;
use crate::store::{BlobStore, Store};

pub use pool::WorkerPool;

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub lease: Duration,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub progress_interval: Duration,
    pub scratch_dir: PathBuf,
    /// Slows every chunk; for tests that must catch a job mid-flight.
    pub chunk_delay: Duration,
    /// Jobs of one tenant running at once, unless the tenant sets its own limit.
    pub max_running_per_tenant: i64,
    /// The executable that runs one attempt (`compressd run-job`): this binary.
    pub job_runner: PathBuf,
    /// Heap limit of each job process, in bytes.
    pub memory_budget: u64,
    /// Log format for the job processes, as the server's.
    pub log_format: String,
    /// Where inputs fetched from object storage are kept for later attempts, and how many
    /// bytes of them (0: none).
    pub input_cache_dir: PathBuf,
    pub input_cache_bytes: u64,
}

/// What one call of `run_next_job` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Idle,
    Succeeded(Uuid),
    Failed(Uuid),
    Retrying(Uuid),
    Cancelled(Uuid),
    Released(Uuid),
    /// The server's storage failed; the job waits in the queue without losing an attempt.
    Deferred(Uuid),
    /// No job was claimed: this process cannot write its files (see readiness).
    StorageUnavailable,
    /// Another worker took the job over; this attempt's result was discarded.
    LeaseLost(Uuid),
}

#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    store: Store,
    blobs: Arc<dyn BlobStore>,
    storage: Arc<StorageHealth>,
    settings: WorkerSettings,
    inputs: input_cache::InputCache,
    running: Mutex<HashMap<Uuid, Arc<Control>>>,
}

impl Worker {
    /// Each process start gets a fresh worker id.
    pub fn new(
        store: Store,
        blobs: Arc<dyn BlobStore>,
        storage: Arc<StorageHealth>,
        settings: WorkerSettings,
    ) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
        let id = format!("{host}/{}/{}", std::process::id(), Uuid::new_v4().simple());
        Worker {
            inner: Arc::new(Inner {
                id,
                store,
                blobs,
                storage,
                inputs: input_cache::InputCache::new(
                    settings.input_cache_dir.clone(),
                    settings.input_cache_bytes,
                ),
                settings,
                running: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn settings(&self) -> &WorkerSettings {
        &self.inner.settings
    }

    /// Asks every job running in this process to stop at its next checkpoint.
    pub fn interrupt_all(&self, why: Interrupt) {
        for control in self.inner.running.lock().expect("lock").values() {
            control.interrupt(why);
        }
    }

    pub fn running_jobs(&self) -> usize {
        self.inner.running.lock().expect("lock").len()
    }
}
