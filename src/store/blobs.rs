//! Blob storage for uploaded models and artifacts. Everything that touches model or artifact
//! bytes goes through `BlobStore`; `LocalBlobs` keeps them in a directory, `ObjectBlobs`
//! (object_blobs.rs) in S3-compatible object storage, so that replicas share files.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt};

pub type BlobReader = Pin<Box<dyn AsyncRead + Send>>;

/// A local copy of a blob for a worker to read; removed on drop when it was a download.
#[derive(Debug)]
pub struct ScratchFile {
    path: PathBuf,
    owned: bool,
}

impl ScratchFile {
    /// A downloaded copy, removed when dropped.
    pub(crate) fn owned(path: PathBuf) -> ScratchFile {
        ScratchFile { path, owned: true }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        if self.owned {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[async_trait]
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Moves a finished local file in under `key`; it appears whole or not at all.
    async fn put(&self, key: &str, file: &Path) -> io::Result<()>;
    /// Streams `len` bytes of the blob from `offset`.
    async fn read(&self, key: &str, offset: u64, len: u64) -> io::Result<BlobReader>;
    async fn size(&self, key: &str) -> io::Result<u64>;
    /// A local file with the blob's bytes, for the compression code to read.
    async fn scratch_copy(&self, key: &str, scratch_dir: &Path) -> io::Result<ScratchFile>;
    /// Removes the blob; a missing blob is not an error.
    async fn delete(&self, key: &str) -> io::Result<()>;
    /// Every blob whose key starts with `prefix`, and when it was last written: for the sweep
    /// that finds files no row names.
    async fn list(&self, prefix: &str) -> io::Result<Vec<(String, std::time::SystemTime)>>;
    /// Where the blobs are, for the start-up log.
    fn describe(&self) -> String;
    /// Whether `scratch_copy` transfers the bytes (object storage) rather than naming a file
    /// already on this disk: then a worker keeps copies for later attempts.
    fn copies_on_read(&self) -> bool {
        false
    }
    /// A URL that serves the blob without this service for `expires`, where the store can
    /// sign one (object storage); None where it cannot (a local directory).
    async fn presigned_get(
        &self,
        _key: &str,
        _expires: std::time::Duration,
    ) -> io::Result<Option<String>> {
        Ok(None)
    }
}

/// Refuses keys that could escape the store's root.
pub(super) fn check_key(key: &str) -> io::Result<()> {
    let ok = !key.is_empty()
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid blob key '{key}'"),
        ))
    }
}

#[derive(Debug, Clone)]
pub struct LocalBlobs {
    root: PathBuf,
}

impl LocalBlobs {
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(LocalBlobs { root })
    }

    fn path(&self, key: &str) -> io::Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

#[async_trait]
impl BlobStore for LocalBlobs {
    async fn put(&self, key: &str, file: &Path) -> io::Result<()> {
        let target = self.path(key)?;
        let parent = target.parent().expect("keys have a parent").to_owned();
        tokio::fs::create_dir_all(&parent).await?;
        let source = file.to_owned();
        tokio::task::spawn_blocking(move || {
            std::fs::File::open(&source)?.sync_all()?;
            if let Err(e) = std::fs::rename(&source, &target) {
                // A delete emptied and removed the folder meanwhile: make it again.
                if e.kind() != io::ErrorKind::NotFound || !source.exists() {
                    return Err(e);
                }
                std::fs::create_dir_all(&parent)?;
                std::fs::rename(&source, &target)?;
            }
            // Make the rename itself durable.
            std::fs::File::open(&parent)?.sync_all()
        })
        .await
        .map_err(io::Error::other)?
    }

    async fn read(&self, key: &str, offset: u64, len: u64) -> io::Result<BlobReader> {
        let mut file = tokio::fs::File::open(self.path(key)?).await?;
        file.seek(io::SeekFrom::Start(offset)).await?;
        Ok(Box::pin(file.take(len)))
    }

    async fn size(&self, key: &str) -> io::Result<u64> {
        Ok(tokio::fs::metadata(self.path(key)?).await?.len())
    }

    async fn scratch_copy(&self, key: &str, _scratch_dir: &Path) -> io::Result<ScratchFile> {
        let path = self.path(key)?;
        tokio::fs::metadata(&path).await?;
        Ok(ScratchFile { path, owned: false })
    }

    async fn delete(&self, key: &str) -> io::Result<()> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        // The empty folders of an attempt's artifacts or an upload's parts go too; shared
        // folders (a tenant's content-addressed files) stay.
        let own_folders = key.starts_with("artifacts/") || key.starts_with("uploads/");
        let mut dir = path.parent().filter(|_| own_folders);
        while let Some(d) = dir.filter(|d| *d != self.root && d.parent() != Some(&self.root)) {
            if tokio::fs::remove_dir(d).await.is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> io::Result<Vec<(String, std::time::SystemTime)>> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut dirs = vec![root.clone()];
            while let Some(dir) = dirs.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    let Ok(meta) = entry.metadata() else { continue };
                    let key = path
                        .strip_prefix(&root)
                        .ok()
                        .and_then(|k| k.to_str())
                        .map(str::to_owned);
                    let Some(key) = key else { continue };
                    if meta.is_dir() {
                        if prefix.starts_with(&key) || key.starts_with(&prefix) {
                            dirs.push(path);
                        }
                    } else if key.starts_with(&prefix) && check_key(&key).is_ok() {
                        out.push((key, meta.modified()?));
                    }
                }
            }
            Ok(out)
        })
        .await
        .map_err(io::Error::other)?
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_the_root() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/./b",
            "a b",
            "a\\b",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        assert!(check_key("models/0190-ab.safetensors").is_ok());
    }
}
