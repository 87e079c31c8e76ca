//! Finished jobs' output files. Rows are only ever written together with the job's success.

use uuid::Uuid;

use super::records::{convert, ArtifactRecord, ArtifactRow};
use super::{now_ms, on_pool, unreferenced, Result, Store, BLOB_REFERENCES};

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
        let now = now_ms();
        on_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
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
