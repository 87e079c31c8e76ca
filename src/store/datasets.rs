//! Uploaded datasets, scoped to their tenant like models.

use uuid::Uuid;

use super::records::{convert, DatasetRecord, DatasetRow, NewDataset};
use super::{now_ms, on_pool, unreferenced, Result, Store};

impl Store {
    pub async fn insert_dataset(&self, d: &NewDataset) -> Result<DatasetRecord> {
        let row: DatasetRow = on_pool!(&self.db, pool => sqlx::query_as(
            "INSERT INTO datasets (id, name, size_bytes, sha256, summary, blob_key, created_at, tenant_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
        )
        .bind(d.id.to_string())
        .bind(&d.name)
        .bind(d.size_bytes as i64)
        .bind(&d.sha256)
        .bind(d.summary.to_string())
        .bind(&d.blob_key)
        .bind(now_ms())
        .bind(&d.tenant_id)
        .fetch_one(pool)
        .await)?;
        row.try_into()
    }

    pub async fn get_dataset(&self, tenant: &str, id: Uuid) -> Result<Option<DatasetRecord>> {
        let row: Option<DatasetRow> = on_pool!(&self.db, pool => sqlx::query_as("SELECT * FROM datasets WHERE id = $1 AND tenant_id = $2")
            .bind(id.to_string())
            .bind(tenant)
            .fetch_optional(pool)
            .await)?;
        row.map(TryInto::try_into).transpose()
    }

    /// Newest first; `after` is the id of the last dataset of the previous page.
    pub async fn list_datasets(
        &self,
        tenant: &str,
        limit: u32,
        after: Option<Uuid>,
    ) -> Result<Vec<DatasetRecord>> {
        let rows: Vec<DatasetRow> = on_pool!(&self.db, pool => sqlx::query_as(
            "SELECT * FROM datasets WHERE tenant_id = $3 AND ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(after.map(|a| a.to_string()))
        .bind(limit as i64)
        .bind(tenant)
        .fetch_all(pool)
        .await)?;
        convert(rows)
    }

    pub async fn active_jobs_for_dataset(&self, id: Uuid) -> Result<i64> {
        let (n,): (i64,) = on_pool!(&self.db, pool => sqlx::query_as(
            "SELECT COUNT(*) FROM jobs WHERE dataset_id = $1 AND status IN ('queued', 'running')",
        )
        .bind(id.to_string())
        .fetch_one(pool)
        .await)?;
        Ok(n)
    }

    /// Removes the row. Some(key) when its file is no longer referenced (the caller removes
    /// it), Some(None) when another row shares the bytes, None when there was no such dataset.
    pub async fn delete_dataset(&self, tenant: &str, id: Uuid) -> Result<Option<Option<String>>> {
        on_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            let gone: Option<(String,)> = sqlx::query_as(
                "DELETE FROM datasets WHERE id = $1 AND tenant_id = $2 RETURNING blob_key",
            )
            .bind(id.to_string())
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
            if gone.is_none() {
                return Ok(None);
            }
            let released = unreferenced!(tx, gone).pop();
            tx.commit().await?;
            Ok(Some(released))
        })
    }
}
