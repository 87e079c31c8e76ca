//! Finished jobs' output files. Rows are only ever written together with the job's success.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::rows::{convert, ts, uuid};
use super::StoreError;
use super::{on_pool, unreferenced, BeginWrite, Result, Store, BLOB_REFERENCES};

#[derive(Debug, Clone)]
pub struct NewArtifact {
    pub id: Uuid,
    pub kind: String,
    pub file_name: String,
    pub content_type: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub blob_key: String,
}

#[derive(Debug, Clone)]
pub struct ArtifactRecord {
    pub id: Uuid,
    pub tenant_id: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub job_id: Uuid,
    pub kind: String,
    pub file_name: String,
    pub content_type: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub blob_key: String,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
pub(super) struct ArtifactRow {
    id: String,
    tenant_id: String,
    expires_at: Option<i64>,
    job_id: String,
    kind: String,
    file_name: String,
    content_type: String,
    size_bytes: i64,
    sha256: String,
    blob_key: String,
    created_at: i64,
}

impl TryFrom<ArtifactRow> for ArtifactRecord {
    type Error = StoreError;
    fn try_from(r: ArtifactRow) -> Result<Self> {
        Ok(ArtifactRecord {
            id: uuid(&r.id)?,
            tenant_id: r.tenant_id,
            expires_at: r.expires_at.map(ts),
            job_id: uuid(&r.job_id)?,
            kind: r.kind,
            file_name: r.file_name,
            content_type: r.content_type,
            size_bytes: r.size_bytes as u64,
            sha256: r.sha256,
            blob_key: r.blob_key,
            created_at: ts(r.created_at),
        })
    }
}

impl Store {
    pub async fn get_artifact(&self, tenant: &str, id: Uuid) -> Result<Option<ArtifactRecord>> {
        let row: Option<ArtifactRow> = on_pool!(&self.db, pool => sqlx::query_as("SELECT * FROM artifacts WHERE id = $1 AND tenant_id = $2")
            .bind(id.to_string())
            .bind(tenant)
            .fetch_optional(pool)
            .await)?;
        row.map(TryInto::try_into).transpose()
    }

    pub async fn artifacts_of_job(&self, job_id: Uuid) -> Result<Vec<ArtifactRecord>> {
        let rows: Vec<ArtifactRow> = on_pool!(&self.db, pool => sqlx::query_as(
            "SELECT * FROM artifacts WHERE job_id = $1 ORDER BY kind, id",
        )
        .bind(job_id.to_string())
        .fetch_all(pool)
        .await)?;
        convert(rows)
    }

    /// Removes artifact rows whose time to live has passed (at most `limit`), returning the
    /// blob keys no row references any more.
    pub async fn expire_artifacts(&self, limit: i64) -> Result<Vec<String>> {
        let now = self.clock_ms().await?;
        on_pool!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let gone: Vec<(String,)> = sqlx::query_as(
                "DELETE FROM artifacts WHERE id IN (SELECT id FROM artifacts WHERE expires_at < $1 LIMIT $2) RETURNING blob_key",
            )
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
            let released = unreferenced!(tx, gone);
            tx.commit().await?;
            Ok(released)
        })
    }

    /// Whether any row still names this blob.
    pub async fn blob_in_use(&self, key: &str) -> Result<bool> {
        let (refs,): (i64,) = on_pool!(&self.db, pool => sqlx::query_as(BLOB_REFERENCES)
            .bind(key)
            .fetch_one(pool)
            .await)?;
        Ok(refs > 0)
    }
}
