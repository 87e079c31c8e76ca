//! Uploaded datasets, scoped to their tenant like models.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::owned::Owned;
use super::rows::{json, ts, uuid};
use super::{now_ms, on_pool, unreferenced, BeginWrite, Result, Store, StoreError};

#[derive(Debug, Clone)]
pub struct NewDataset {
    pub id: Uuid,
    pub tenant_id: String,
    pub name: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub summary: Value,
    pub blob_key: String,
}

#[derive(Debug, Clone)]
pub struct DatasetRecord {
    pub id: Uuid,
    pub tenant_id: String,
    pub name: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub summary: Value,
    pub blob_key: String,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
pub(super) struct DatasetRow {
    id: String,
    tenant_id: String,
    name: String,
    size_bytes: i64,
    sha256: String,
    summary: String,
    blob_key: String,
    created_at: i64,
}

impl TryFrom<DatasetRow> for DatasetRecord {
    type Error = StoreError;
    fn try_from(r: DatasetRow) -> Result<Self> {
        Ok(DatasetRecord {
            id: uuid(&r.id)?,
            tenant_id: r.tenant_id,
            name: r.name,
            size_bytes: r.size_bytes as u64,
            sha256: r.sha256,
            summary: json(&r.summary)?,
            blob_key: r.blob_key,
            created_at: ts(r.created_at),
        })
    }
}

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
        self.get_owned::<DatasetRow>(tenant, id).await
    }

    /// Newest first; `after` is the id of the last dataset of the previous page.
    pub async fn list_datasets(
        &self,
        tenant: &str,
        limit: u32,
        after: Option<Uuid>,
    ) -> Result<Vec<DatasetRecord>> {
        self.list_owned::<DatasetRow>(tenant, limit, after).await
    }

    pub async fn active_jobs_for_dataset(&self, id: Uuid) -> Result<i64> {
        self.active_jobs_for::<DatasetRow>(id).await
    }

    /// Removes the row. Some(key) when its file is no longer referenced (the caller removes
    /// it), Some(None) when another row shares the bytes, None when there was no such dataset.
    pub async fn delete_dataset(&self, tenant: &str, id: Uuid) -> Result<Option<Option<String>>> {
        on_pool!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
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

impl Owned for DatasetRow {
    type Record = DatasetRecord;
    const TABLE: &'static str = "datasets";
    const JOB_COLUMN: &'static str = "dataset_id";
}
