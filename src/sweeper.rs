//! Retention and orphans: removes uploads and artifacts whose time to live has passed, lets go
//! of reservations whose upload died, and finds what a killed process left behind: files in
//! blob storage that no row names, scratch folders of attempts that no longer run, temporary
//! files. Every replica sweeps; every removal recounts references under the file's lock.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::{BlobStore, Store};

/// Temporary upload files older than this belong to no live request.
const ORPHAN_AGE: Duration = Duration::from_secs(24 * 3600);
const BATCH: i64 = 500;

pub struct Sweeper {
    pub store: Store,
    pub blobs: Arc<dyn BlobStore>,
    pub tmp_dir: PathBuf,
    pub scratch_dir: PathBuf,
    /// How often the orphan pass (which lists all of blob storage) runs.
    pub orphans_every: Duration,
    /// A blob or scratch folder this young may belong to work under way that has not yet
    /// recorded it; the orphan pass leaves it for the next pass.
    pub settle: Duration,
}

impl Sweeper {
    pub async fn run(self, every: Duration, stop: CancellationToken) {
        let mut last_orphans: Option<Instant> = None;
        loop {
            if let Err(e) = self.sweep_once().await {
                tracing::warn!(error = %e, "retention sweep failed; will try again");
            }
            if last_orphans.is_none_or(|t| t.elapsed() >= self.orphans_every) {
                last_orphans = Some(Instant::now());
                match self.sweep_orphans(self.settle).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "orphaned files removed"),
                    Err(e) => tracing::warn!(error = %e, "orphan sweep failed; will try again"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// One retention pass; returns how many files it removed.
    pub async fn sweep_once(&self) -> anyhow::Result<usize> {
        let mut removed = 0;
        for id in self.store.expired_uploads(BATCH).await? {
            if let Some(keys) = self.store.delete_upload(id).await? {
                removed += self.remove(&keys).await?;
                tracing::info!(upload_id = %id, "expired upload removed");
            }
        }
        let keys = self.store.expire_artifacts(BATCH).await?;
        removed += self.remove(&keys).await?;
        let keys = self.store.expire_reservations(BATCH).await?;
        removed += self.remove(&keys).await?;
        removed += remove_old_files(&self.tmp_dir, ORPHAN_AGE).await;
        Ok(removed)
    }

    /// Files in blob storage that no row names and no live attempt is writing, and scratch
    /// folders of attempts that no longer run, older than `settle`. Returns how many went.
    pub async fn sweep_orphans(&self, settle: Duration) -> anyhow::Result<usize> {
        let mut removed = 0;
        for (key, written) in self.blobs.list("").await? {
            if !settled(written, settle) || self.live_attempt(&key).await? {
                continue;
            }
            let blobs = self.blobs.clone();
            let remove = async { blobs.delete(&key).await };
            if self.store.remove_if_unreferenced(&key, remove).await? {
                tracing::info!(key, "orphaned file removed");
                removed += 1;
            }
        }
        removed += self.sweep_scratch(settle).await?;
        Ok(removed)
    }

    /// Whether `key` is an artifact of an attempt that still holds its job's lease (its rows
    /// are written when the attempt finishes).
    async fn live_attempt(&self, key: &str) -> anyhow::Result<bool> {
        let mut parts = key.split('/');
        let (Some("artifacts"), Some(job), Some(token)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Ok(false);
        };
        match (Uuid::parse_str(job), Uuid::parse_str(token)) {
            (Ok(job), Ok(token)) => Ok(self.store.holds_lease(job, token).await?),
            _ => Ok(false),
        }
    }

    /// Scratch folders are named `<job>-<lease token>`; a folder whose attempt no longer
    /// holds the lease belongs to a process that died.
    async fn sweep_scratch(&self, settle: Duration) -> anyhow::Result<usize> {
        let Ok(mut entries) = tokio::fs::read_dir(&self.scratch_dir).await else {
            return Ok(0);
        };
        let mut removed = 0;
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((job, token)) = name.rsplit_once('-').filter(|_| name.len() == 36 + 1 + 32)
            else {
                continue;
            };
            let (Ok(job), Ok(token)) = (Uuid::parse_str(job), Uuid::parse_str(token)) else {
                continue;
            };
            let written = entry.metadata().await.and_then(|m| m.modified());
            if !written.is_ok_and(|w| settled(w, settle))
                || self.store.holds_lease(job, token).await?
            {
                continue;
            }
            if tokio::fs::remove_dir_all(entry.path()).await.is_ok() {
                tracing::info!(folder = name, "scratch folder of a dead attempt removed");
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn remove(&self, keys: &[String]) -> anyhow::Result<usize> {
        let mut n = 0;
        for key in keys {
            let blobs = self.blobs.clone();
            if self
                .store
                .remove_if_unreferenced(key, async { blobs.delete(key).await })
                .await?
            {
                n += 1;
            }
        }
        Ok(n)
    }
}

fn settled(written: SystemTime, settle: Duration) -> bool {
    written.elapsed().is_ok_and(|age| age >= settle)
}

async fn remove_old_files(dir: &Path, age: Duration) -> usize {
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
            .is_some_and(|t| settled(t, age));
        if old && tokio::fs::remove_file(entry.path()).await.is_ok() {
            n += 1;
        }
    }
    n
}
