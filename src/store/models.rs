//! Uploaded models. Every read and delete names the tenant: another tenant's model does not
//! exist for the caller.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::owned::Owned;
use super::rows::{json, ts, uuid};
use super::{on_pool, unreferenced, BeginWrite, KeyLock, Removal, Result, Store, StoreError};

#[derive(Debug, Clone)]
pub struct NewModel {
    pub id: Uuid,
    pub tenant_id: String,
    pub name: String,
    pub format: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub tensor_count: u64,
    pub parameter_count: u64,
    pub tensors: Value,
    pub metadata: Value,
    pub blob_key: String,
    pub architecture: Option<Value>,
    pub config: Option<Value>,
    /// A folder's other files (tokenizer and the like), by path inside the folder.
    pub files: Vec<ModelFile>,
}

/// One file of a model's folder beside the weights.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct ModelFile {
    pub path: String,
    #[sqlx(try_from = "i64")]
    pub size_bytes: u64,
    pub sha256: String,
    pub blob_key: String,
}

/// A stored model: what was inserted, and when. Reads its fields through `Deref`.
#[derive(Debug, Clone)]
pub struct ModelRecord {
    pub model: NewModel,
    pub created_at: DateTime<Utc>,
}

impl std::ops::Deref for ModelRecord {
    type Target = NewModel;

    fn deref(&self) -> &NewModel {
        &self.model
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ModelRow {
    id: String,
    tenant_id: String,
    name: String,
    format: String,
    size_bytes: i64,
    sha256: String,
    tensor_count: i64,
    parameter_count: i64,
    tensors: String,
    metadata: String,
    blob_key: String,
    architecture: Option<String>,
    config: Option<String>,
    created_at: i64,
}

impl TryFrom<ModelRow> for ModelRecord {
    type Error = StoreError;
    fn try_from(r: ModelRow) -> Result<Self> {
        let model = NewModel {
            id: uuid(&r.id)?,
            tenant_id: r.tenant_id,
            name: r.name,
            format: r.format,
            size_bytes: r.size_bytes as u64,
            sha256: r.sha256,
            tensor_count: r.tensor_count as u64,
            parameter_count: r.parameter_count as u64,
            tensors: json(&r.tensors)?,
            metadata: json(&r.metadata)?,
            blob_key: r.blob_key,
            architecture: r.architecture.as_deref().map(json).transpose()?,
            config: r.config.as_deref().map(json).transpose()?,
            files: Vec::new(),
        };
        Ok(ModelRecord {
            model,
            created_at: ts(r.created_at),
        })
    }
}

impl Store {
    pub async fn insert_model(&self, m: &NewModel) -> Result<ModelRecord> {
        let now = self.clock_ms().await?;
        let row: ModelRow = on_pool!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let row: ModelRow = sqlx::query_as(
            "INSERT INTO models (id, name, format, size_bytes, sha256, tensor_count, parameter_count, tensors, metadata, blob_key, created_at, architecture, config, tenant_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING *",
        )
        .bind(m.id.to_string())
        .bind(&m.name)
        .bind(&m.format)
        .bind(m.size_bytes as i64)
        .bind(&m.sha256)
        .bind(m.tensor_count as i64)
        .bind(m.parameter_count as i64)
        .bind(m.tensors.to_string())
        .bind(m.metadata.to_string())
        .bind(&m.blob_key)
        .bind(now)
        .bind(m.architecture.as_ref().map(Value::to_string))
        .bind(m.config.as_ref().map(Value::to_string))
        .bind(&m.tenant_id)
        .fetch_one(&mut *tx)
        .await?;
            for f in &m.files {
                sqlx::query("INSERT INTO model_files (model_id, path, size_bytes, sha256, blob_key) VALUES ($1, $2, $3, $4, $5)")
                    .bind(m.id.to_string())
                    .bind(&f.path)
                    .bind(f.size_bytes as i64)
                    .bind(&f.sha256)
                    .bind(&f.blob_key)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            row
        });
        let mut record: ModelRecord = row.try_into()?;
        record.model.files = m.files.clone();
        Ok(record)
    }

    async fn with_files(&self, record: Option<ModelRecord>) -> Result<Option<ModelRecord>> {
        let Some(mut record) = record else {
            return Ok(None);
        };
        record.model.files = on_pool!(&self.db, pool => sqlx::query_as(
            "SELECT path, size_bytes, sha256, blob_key FROM model_files WHERE model_id = $1 ORDER BY path",
        )
        .bind(record.id.to_string())
        .fetch_all(pool)
        .await)?;
        Ok(Some(record))
    }

    /// Sets (or clears) the architecture; false if the tenant has no such model.
    pub async fn set_architecture(
        &self,
        tenant: &str,
        id: Uuid,
        architecture: Option<&Value>,
    ) -> Result<bool> {
        let n = on_pool!(&self.db, pool => sqlx::query("UPDATE models SET architecture = $2 WHERE id = $1 AND tenant_id = $3")
            .bind(id.to_string())
            .bind(architecture.map(Value::to_string))
            .bind(tenant)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    pub async fn get_model(&self, tenant: &str, id: Uuid) -> Result<Option<ModelRecord>> {
        let record = self.get_owned::<ModelRow>(tenant, id).await?;
        self.with_files(record).await
    }

    /// Newest first; `after` is the id of the last model of the previous page.
    pub async fn list_models(
        &self,
        tenant: &str,
        limit: u32,
        after: Option<Uuid>,
    ) -> Result<Vec<ModelRecord>> {
        self.list_owned::<ModelRow>(tenant, limit, after).await
    }

    /// Removes the model and its finished jobs with their artifact rows, in one transaction.
    /// Returns the blob keys that rows no longer reference: the caller removes those files.
    pub async fn delete_model(&self, tenant: &str, id: Uuid) -> Result<Removal> {
        let id = id.to_string();
        on_pool!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            tx.lock_key(&format!("model:{id}")).await?;
            let (owned,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM models WHERE id = $1 AND tenant_id = $2")
                .bind(&id)
                .bind(tenant)
                .fetch_one(&mut *tx)
                .await?;
            if owned == 0 {
                return Ok(Removal::Missing);
            }
            let (active,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM jobs WHERE model_id = $1 AND status IN ('queued', 'running')",
            )
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
            if active > 0 {
                return Ok(Removal::InUse(active));
            }
            let files: Vec<(String,)> = sqlx::query_as("DELETE FROM model_files WHERE model_id = $1 RETURNING blob_key")
                .bind(&id)
                .fetch_all(&mut *tx)
                .await?;
            let model: Option<(String,)> = sqlx::query_as(
                "DELETE FROM models WHERE id = $1 AND tenant_id = $2 RETURNING blob_key",
            )
            .bind(&id)
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((model_key,)) = model else {
                return Ok(Removal::Missing);
            };
            let mut keys: Vec<(String,)> = sqlx::query_as(
                "DELETE FROM artifacts WHERE job_id IN (SELECT id FROM jobs WHERE model_id = $1) RETURNING blob_key",
            )
            .bind(&id)
            .fetch_all(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM job_metrics WHERE job_id IN (SELECT id FROM jobs WHERE model_id = $1)")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM jobs WHERE model_id = $1")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            keys.push((model_key,));
            keys.extend(files);
            let released = unreferenced!(tx, keys);
            tx.commit().await?;
            Ok(Removal::Removed(released))
        })
    }
}

impl Owned for ModelRow {
    type Record = ModelRecord;
    const TABLE: &'static str = "models";
    // A file may list 65 536 tensors; a page of models shows counts, not the list.
    const LIST_COLUMNS: &'static str =
        "id, tenant_id, name, format, size_bytes, sha256, tensor_count, parameter_count,
        '[]' AS tensors, metadata, blob_key, architecture, config, created_at";
}
