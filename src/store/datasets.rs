//! Uploaded datasets, scoped to their tenant like models.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::owned::Owned;
use super::rows::{json, ts, uuid};
use super::{on_pool, unreferenced, BeginWrite, KeyLock, Removal, Result, Store, StoreError};

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
        let now = self.clock_ms().await?;
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
        .bind(now)
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

    /// Removes the row, unless queued or running jobs use it.
    pub async fn delete_dataset(&self, tenant: &str, id: Uuid) -> Result<Removal> {
        on_pool!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            tx.lock_key(&format!("dataset:{id}")).await?;
            let (owned,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM datasets WHERE id = $1 AND tenant_id = $2")
                .bind(id.to_string())
                .bind(tenant)
                .fetch_one(&mut *tx)
                .await?;
            if owned == 0 {
                return Ok(Removal::Missing);
            }
            let (active,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM jobs WHERE dataset_id = $1 AND status IN ('queued', 'running')",
            )
            .bind(id.to_string())
            .fetch_one(&mut *tx)
            .await?;
            if active > 0 {
                return Ok(Removal::InUse(active));
            }
            let gone: Option<(String,)> = sqlx::query_as(
                "DELETE FROM datasets WHERE id = $1 AND tenant_id = $2 RETURNING blob_key",
            )
            .bind(id.to_string())
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
            if gone.is_none() {
                return Ok(Removal::Missing);
            }
            let released = unreferenced!(tx, gone);
            tx.commit().await?;
            Ok(Removal::Removed(released))
        })
    }
}

impl Owned for DatasetRow {
    type Record = DatasetRecord;
    const TABLE: &'static str = "datasets";
    const LIST_COLUMNS: &'static str = "*";
}
