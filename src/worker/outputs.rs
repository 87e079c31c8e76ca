//! Puts the files a job process prepared into blob storage. Blobs are keyed by the attempt's
//! lease token, so a stale attempt can never overwrite the files of the attempt that won; the
//! caller records them in the transaction that marks the job succeeded.

use std::io;
use std::sync::Arc;

use serde_json::Value;
use uuid::Uuid;

use super::protocol::Prepared;
use crate::store::{BlobStore, Lease, NewArtifact};

pub struct JobOutputs {
    pub metrics: Value,
    pub artifacts: Vec<NewArtifact>,
}

pub async fn store_outputs(
    blobs: &Arc<dyn BlobStore>,
    lease: &Lease,
    prepared: Prepared,
) -> io::Result<JobOutputs> {
    let prefix = format!("artifacts/{}/{}", lease.job.id, lease.token.simple());
    let mut artifacts = Vec::with_capacity(prepared.files.len());
    for f in prepared.files {
        let blob_key = format!("{prefix}/{}", f.file_name);
        if let Err(e) = blobs.put(&blob_key, &f.path).await {
            for a in &artifacts {
                let a: &NewArtifact = a;
                let _ = blobs.delete(&a.blob_key).await;
            }
            return Err(e);
        }
        artifacts.push(NewArtifact {
            id: Uuid::now_v7(),
            kind: f.kind,
            file_name: f.file_name,
            content_type: f.content_type,
            size_bytes: f.size_bytes,
            sha256: f.sha256,
            blob_key,
        });
    }
    Ok(JobOutputs {
        metrics: prepared.metrics,
        artifacts,
    })
}
