//! Job inputs kept on the worker's disk between attempts. From object storage a multi-GB model
//! costs a transfer each time it is read; the cache keeps the copy an attempt fetched (checked
//! against the SHA-256 its content-addressed key names) so that a retry of the job, or another
//! job on the same model, on this host starts from disk. A local blob directory is read in
//! place and needs none of this.
//!
//! Entries are files named by the SHA-256 of their blob key, written under a temporary name and
//! renamed, so a reader never sees a partial one. An attempt gets a hard link of the entry in
//! its own scratch folder: evicting the entry later cannot pull the file from under a running
//! job. The least recently used entries go once the cache passes its size.

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::store::{BlobStore, ScratchFile};

#[derive(Debug)]
pub struct InputCache {
    dir: PathBuf,
    max_bytes: u64,
}

impl InputCache {
    pub fn new(dir: PathBuf, max_bytes: u64) -> InputCache {
        InputCache { dir, max_bytes }
    }

    /// A local file with the blob's bytes for an attempt working in `workdir`: the cached copy
    /// when there is a whole one, else a fresh copy that is then kept.
    pub async fn fetch(
        &self,
        blobs: &dyn BlobStore,
        key: &str,
        workdir: &Path,
    ) -> io::Result<ScratchFile> {
        if self.max_bytes == 0 || !blobs.copies_on_read() {
            return blobs.scratch_copy(key, workdir).await;
        }
        let entry = self.dir.join(hex::encode(Sha256::digest(key.as_bytes())));
        let size = blobs.size(key).await?;
        let linked = workdir.join(format!("input-{}", uuid::Uuid::now_v7()));
        let cached = tokio::fs::metadata(&entry)
            .await
            .is_ok_and(|m| m.len() == size);
        if cached && tokio::fs::hard_link(&entry, &linked).await.is_ok() {
            // Its modification time is its last use, for eviction.
            let _ = touch(&entry);
            metrics::counter!("compressd_input_cache_hits_total").increment(1);
            return Ok(ScratchFile::owned(linked));
        }
        metrics::counter!("compressd_input_cache_misses_total").increment(1);
        let copy = blobs.scratch_copy(key, workdir).await?;
        verify(key, copy.path()).await?;
        if let Err(e) = self.keep(copy.path(), &entry, size).await {
            tracing::warn!(error = %e, "could not keep the job's input for later attempts");
        }
        Ok(copy)
    }

    async fn keep(&self, copy: &Path, entry: &Path, size: u64) -> io::Result<()> {
        if size > self.max_bytes {
            return Ok(());
        }
        tokio::fs::create_dir_all(&self.dir).await?;
        let tmp = self.dir.join(format!(".tmp-{}", uuid::Uuid::now_v7()));
        tokio::fs::hard_link(copy, &tmp).await?;
        tokio::fs::rename(&tmp, entry).await?;
        let (dir, max) = (self.dir.clone(), self.max_bytes);
        tokio::task::spawn_blocking(move || evict(&dir, max))
            .await
            .map_err(io::Error::other)?
    }
}

/// A blob under a content-addressed key (`…/sha256/<hex>`) must hash to that hex; a copy that
/// does not is refused rather than kept and reused.
async fn verify(key: &str, file: &Path) -> io::Result<()> {
    let Some(expected) = key
        .rsplit_once("/sha256/")
        .map(|(_, hex)| hex.to_owned())
        .filter(|hex| hex.len() == 64)
    else {
        return Ok(());
    };
    let file = file.to_owned();
    let (actual, _) = tokio::task::spawn_blocking(move || super::prepare::hash_file(&file))
        .await
        .map_err(io::Error::other)??;
    if actual == expected {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the copy of {key} read from storage hashes to {actual}"),
        ))
    }
}

fn touch(path: &Path) -> io::Result<()> {
    std::fs::File::options()
        .append(true)
        .open(path)?
        .set_modified(SystemTime::now())
}

/// Removes the least recently used entries until the cache holds at most `max` bytes, and
/// temporary names a crash left behind.
fn evict(dir: &Path, max: u64) -> io::Result<()> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        let age = meta.modified()?.elapsed().unwrap_or_default();
        if entry.file_name().to_string_lossy().starts_with(".tmp-") {
            if age > std::time::Duration::from_secs(3600) {
                let _ = std::fs::remove_file(entry.path());
            }
        } else if meta.is_file() {
            entries.push((meta.modified()?, meta.len(), entry.path()));
        }
    }
    entries.sort();
    let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
    for (_, len, path) in entries {
        if total <= max {
            break;
        }
        std::fs::remove_file(&path)?;
        total -= len;
    }
    Ok(())
}
