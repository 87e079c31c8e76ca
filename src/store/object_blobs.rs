//! Blobs in S3-compatible object storage (`s3://bucket/prefix`), so that API and worker
//! replicas on different hosts share models and artifacts with no shared disk. Credentials,
//! region and endpoint come from the usual AWS variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`; `AWS_ALLOW_HTTP=true` and
//! `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=false` for a self-hosted store), read by `object_store`.
//!
//! Writes stream from the local file into a multipart upload (8 MiB parts, four in flight),
//! which becomes visible only when it completes: a crash leaves no object, only an incomplete
//! upload for the bucket's lifecycle rule to abort. Keys are content-addressed or unique per
//! attempt, so a repeated write is harmless and nothing relies on conditional creates.

use std::io;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::signer::Signer;
use object_store::{GetOptions, GetRange, ObjectStore};
use tokio::io::AsyncWriteExt;

use super::blobs::{check_key, BlobReader, BlobStore, ScratchFile};

const PART_BYTES: usize = 8 << 20;
const PARTS_IN_FLIGHT: usize = 4;

#[derive(Debug)]
pub struct ObjectBlobs {
    store: Arc<dyn ObjectStore>,
    /// The bucket itself, for presigned URLs (which name the whole key, prefix included).
    signer: AmazonS3,
    prefix: String,
    url: String,
}

impl ObjectBlobs {
    /// `s3://bucket` or `s3://bucket/prefix`.
    pub fn from_url(url: &str) -> io::Result<ObjectBlobs> {
        let invalid = |why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("blob URL '{url}': {why} (expected s3://bucket or s3://bucket/prefix)"),
            )
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| invalid("only s3:// object storage is supported"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("no bucket"));
        }
        let s3 = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| invalid(&e.to_string()))?;
        let prefix = prefix.trim_matches('/');
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3.clone())
        } else {
            Arc::new(PrefixStore::new(s3.clone(), prefix))
        };
        Ok(ObjectBlobs {
            store,
            signer: s3,
            prefix: prefix.to_owned(),
            url: url.to_owned(),
        })
    }

    fn path(key: &str) -> io::Result<ObjectPath> {
        check_key(key)?;
        ObjectPath::parse(key).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    }
}

fn to_io(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e),
        other => io::Error::other(other),
    }
}

#[async_trait]
impl BlobStore for ObjectBlobs {
    async fn put(&self, key: &str, file: &Path) -> io::Result<()> {
        let path = Self::path(key)?;
        let mut source = tokio::fs::File::open(file).await?;
        let mut writer = BufWriter::with_capacity(self.store.clone(), path, PART_BYTES)
            .with_max_concurrency(PARTS_IN_FLIGHT);
        let written = async {
            tokio::io::copy(&mut source, &mut writer).await?;
            writer.shutdown().await
        }
        .await;
        if let Err(e) = written {
            // Abandon the multipart upload: no part of it becomes visible.
            let _ = writer.abort().await;
            return Err(e);
        }
        // The bytes live in the bucket now; the local file was only on its way there.
        tokio::fs::remove_file(file).await
    }

    async fn read(&self, key: &str, offset: u64, len: u64) -> io::Result<BlobReader> {
        let path = Self::path(key)?;
        if len == 0 {
            return Ok(Box::pin(tokio::io::empty()));
        }
        let options = GetOptions {
            range: Some(GetRange::Bounded(offset..offset + len)),
            ..Default::default()
        };
        let result = self.store.get_opts(&path, options).await.map_err(to_io)?;
        let stream = result.into_stream().map_err(to_io);
        Ok(Box::pin(tokio_util::io::StreamReader::new(stream)))
    }

    async fn size(&self, key: &str) -> io::Result<u64> {
        let meta = self.store.head(&Self::path(key)?).await.map_err(to_io)?;
        Ok(meta.size)
    }

    async fn scratch_copy(&self, key: &str, scratch_dir: &Path) -> io::Result<ScratchFile> {
        let path = Self::path(key)?;
        let mut stream = self.store.get(&path).await.map_err(to_io)?.into_stream();
        let target = scratch_dir.join(format!("blob-{}", uuid::Uuid::now_v7()));
        let scratch = ScratchFile::owned(target.clone());
        let mut file = tokio::fs::File::create(&target).await?;
        while let Some(chunk) = stream.next().await {
            file.write_all(&chunk.map_err(to_io)?).await?;
        }
        file.flush().await?;
        Ok(scratch)
    }

    async fn delete(&self, key: &str) -> io::Result<()> {
        match self.store.delete(&Self::path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(to_io(e)),
        }
    }

    async fn list(&self, prefix: &str) -> io::Result<Vec<(String, std::time::SystemTime)>> {
        let mut listed = self.store.list(None);
        let mut out = Vec::new();
        while let Some(meta) = listed.next().await {
            let meta = meta.map_err(to_io)?;
            let key = meta.location.to_string();
            if key.starts_with(prefix) && check_key(&key).is_ok() {
                out.push((key, meta.last_modified.into()));
            }
        }
        Ok(out)
    }

    fn copies_on_read(&self) -> bool {
        true
    }

    async fn presigned_get(
        &self,
        key: &str,
        expires: std::time::Duration,
    ) -> io::Result<Option<String>> {
        Self::path(key)?;
        let whole = match self.prefix.as_str() {
            "" => key.to_owned(),
            prefix => format!("{prefix}/{key}"),
        };
        let path =
            ObjectPath::parse(whole).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let url = self
            .signer
            .signed_url(axum::http::Method::GET, &path, expires)
            .await
            .map_err(to_io)?;
        Ok(Some(url.to_string()))
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}
