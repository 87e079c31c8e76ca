//! Retention: removes uploads and artifacts whose time to live has passed, and temporary files
//! that a killed process left behind. Every replica sweeps; the deletes are idempotent.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{BlobStore, Store};

/// Temporary upload files older than this belong to no live request.
const ORPHAN_AGE: Duration = Duration::from_secs(24 * 3600);
const BATCH: i64 = 500;

pub struct Sweeper {
    pub store: Store,
    pub blobs: Arc<dyn BlobStore>,
    pub tmp_dir: PathBuf,
}

impl Sweeper {
    pub async fn run(self, every: Duration, stop: CancellationToken) {
        loop {
            if let Err(e) = self.sweep_once().await {
                tracing::warn!(error = %e, "retention sweep failed; will try again");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// One pass; returns how many files it removed.
    pub async fn sweep_once(&self) -> anyhow::Result<usize> {
        let mut removed = 0;
        for id in self.store.expired_uploads(BATCH).await? {
            if let Some(keys) = self.store.delete_upload(id).await? {
                removed += self.remove(&keys).await;
                tracing::info!(upload_id = %id, "expired upload removed");
            }
        }
        let keys = self.store.expire_artifacts(BATCH).await?;
        removed += self.remove(&keys).await;
        removed += remove_old_files(&self.tmp_dir).await;
        Ok(removed)
    }

    async fn remove(&self, keys: &[String]) -> usize {
        let mut n = 0;
        for key in keys {
            match self.blobs.delete(key).await {
                Ok(()) => n += 1,
                Err(e) => tracing::warn!(key, error = %e, "could not remove an expired file"),
            }
        }
        n
    }
}

async fn remove_old_files(dir: &std::path::Path) -> usize {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return 0;
    };
    let mut n = 0;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let old = entry
            .metadata()
            .await
            .ok()
            .filter(|m| m.is_file())
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > ORPHAN_AGE);
        if old && tokio::fs::remove_file(entry.path()).await.is_ok() {
            n += 1;
        }
    }
    n
}
