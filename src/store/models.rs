//! Uploaded models. Every read and delete names the tenant: another tenant's model does not
//! exist for the caller.

use serde_json::Value;
use uuid::Uuid;

use super::records::{convert, ModelRecord, ModelRow, NewModel};
use super::{now_ms, on_pool, unreferenced, Result, Store};

impl Store {
    pub async fn insert_model(&self, m: &NewModel) -> Result<ModelRecord> {
        let row: ModelRow = on_pool!(&self.db, pool => sqlx::query_as(
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
        .bind(now_ms())
        .bind(m.architecture.as_ref().map(Value::to_string))
        .bind(m.config.as_ref().map(Value::to_string))
        .bind(&m.tenant_id)
        .fetch_one(pool)
        .await)?;
        row.try_into()
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
        let row: Option<ModelRow> = on_pool!(&self.db, pool => sqlx::query_as("SELECT * FROM models WHERE id = $1 AND tenant_id = $2")
            .bind(id.to_string())
            .bind(tenant)
            .fetch_optional(pool)
            .await)?;
        row.map(TryInto::try_into).transpose()
    }

    /// Newest first; `after` is the id of the last model of the previous page.
    pub async fn list_models(
        &self,
        tenant: &str,
        limit: u32,
        after: Option<Uuid>,
    ) -> Result<Vec<ModelRecord>> {
        let rows: Vec<ModelRow> = on_pool!(&self.db, pool => sqlx::query_as(
            "SELECT * FROM models WHERE tenant_id = $3 AND ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(after.map(|a| a.to_string()))
        .bind(limit as i64)
        .bind(tenant)
        .fetch_all(pool)
        .await)?;
        convert(rows)
    }

    pub async fn active_jobs_for_model(&self, id: Uuid) -> Result<i64> {
        let (n,): (i64,) = on_pool!(&self.db, pool => sqlx::query_as(
            "SELECT COUNT(*) FROM jobs WHERE model_id = $1 AND status IN ('queued', 'running')",
        )
        .bind(id.to_string())
        .fetch_one(pool)
        .await)?;
        Ok(n)
    }

    /// Removes the model and its finished jobs with their artifact rows, in one transaction.
    /// Returns the blob keys that rows no longer reference: the caller removes those files.
    pub async fn delete_model(&self, tenant: &str, id: Uuid) -> Result<Option<Vec<String>>> {
        let id = id.to_string();
        on_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            let model: Option<(String,)> = sqlx::query_as(
                "DELETE FROM models WHERE id = $1 AND tenant_id = $2 RETURNING blob_key",
            )
            .bind(&id)
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((model_key,)) = model else {
                return Ok(None);
            };
            let mut keys: Vec<(String,)> = sqlx::query_as(
                "DELETE FROM artifacts WHERE job_id IN (SELECT id FROM jobs WHERE model_id = $1) RETURNING blob_key",
            )
            .bind(&id)
            .fetch_all(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM jobs WHERE model_id = $1")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            keys.push((model_key,));
            let released = unreferenced!(tx, keys);
            tx.commit().await?;
            Ok(Some(released))
        })
    }
}
