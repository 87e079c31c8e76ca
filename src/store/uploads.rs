//! Resumable uploads: an upload row, and one row per part received. A resent part replaces
//! the earlier one; the caller removes the file the replaced row named.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::rows::ts;
use super::{on_pool, unreferenced, BeginWrite, KeyLock, Result, Store};

#[derive(Debug, Clone)]
pub struct UploadRecord {
    pub id: Uuid,
    pub tenant_id: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct UploadRow {
    id: String,
    tenant_id: String,
    expires_at: i64,
    created_at: i64,
}

impl From<UploadRow> for UploadRecord {
    fn from(r: UploadRow) -> Self {
        UploadRecord {
            id: Uuid::parse_str(&r.id).unwrap_or_default(),
            tenant_id: r.tenant_id,
            expires_at: ts(r.expires_at),
            created_at: ts(r.created_at),
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PartRecord {
    pub number: i64,
    pub size_bytes: i64,
    pub sha256: String,
    pub blob_key: String,
}

impl Store {
    pub async fn create_upload(&self, tenant: &str, ttl_ms: i64) -> Result<UploadRecord> {
        let now = self.clock_ms().await?;
        let row: UploadRow = on_pool!(&self.db, pool => sqlx::query_as(
            "INSERT INTO uploads (id, tenant_id, expires_at, created_at) VALUES ($1, $2, $3, $4) RETURNING *",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(tenant)
        .bind(now.saturating_add(ttl_ms))
        .bind(now)
        .fetch_one(pool)
        .await)?;
        Ok(row.into())
    }

    /// The tenant's upload, unless it has expired.
    pub async fn get_upload(&self, tenant: &str, id: Uuid) -> Result<Option<UploadRecord>> {
        let now = self.clock_ms().await?;
        let row: Option<UploadRow> = on_pool!(&self.db, pool => sqlx::query_as(
            "SELECT * FROM uploads WHERE id = $1 AND tenant_id = $2 AND expires_at > $3",
        )
        .bind(id.to_string())
        .bind(tenant)
        .bind(now)
        .fetch_optional(pool)
        .await)?;
        Ok(row.map(Into::into))
    }

    /// Takes the upload's one completion for `hold_ms`; false while another request holds it
    /// (a completion that dies lets go when the hold runs out).
    pub async fn begin_completion(&self, tenant: &str, id: Uuid, hold_ms: i64) -> Result<bool> {
        let now = self.clock_ms().await?;
        let n = on_pool!(&self.db, pool => sqlx::query(
            "UPDATE uploads SET completing_until = $3 WHERE id = $1 AND tenant_id = $2
             AND (completing_until IS NULL OR completing_until < $4)",
        )
        .bind(id.to_string())
        .bind(tenant)
        .bind(now.saturating_add(hold_ms))
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(n == 1)
    }

    /// Lets go of a completion that failed, so the client can fix the parts and try again.
    pub async fn end_completion(&self, id: Uuid) -> Result<()> {
        on_pool!(&self.db, pool => sqlx::query("UPDATE uploads SET completing_until = NULL WHERE id = $1")
            .bind(id.to_string())
            .execute(pool)
            .await
            .map(drop))?;
        Ok(())
    }

    /// Records a received part. Returns the blob key of the part it replaced, if no row names
    /// that file any more; None if the upload is gone.
    pub async fn put_part(
        &self,
        upload: Uuid,
        part: &PartRecord,
    ) -> Result<Option<Option<String>>> {
        let upload = upload.to_string();
        on_pool!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            // Two sends of the same part would each find no row and both insert one.
            KeyLock::lock_key(&mut tx, &format!("upload-part:{upload}:{}", part.number)).await?;
            let live: Option<(String,)> = sqlx::query_as("SELECT id FROM uploads WHERE id = $1")
                .bind(&upload)
                .fetch_optional(&mut *tx)
                .await?;
            if live.is_none() {
                return Ok(None);
            }
            let old: Option<(String,)> = sqlx::query_as(
                "DELETE FROM upload_parts WHERE upload_id = $1 AND number = $2 RETURNING blob_key",
            )
            .bind(&upload)
            .bind(part.number)
            .fetch_optional(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO upload_parts (upload_id, number, size_bytes, sha256, blob_key) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&upload)
            .bind(part.number)
            .bind(part.size_bytes)
            .bind(&part.sha256)
            .bind(&part.blob_key)
            .execute(&mut *tx)
            .await?;
            let released = unreferenced!(tx, old).pop();
            tx.commit().await?;
            Ok(Some(released))
        })
    }

    pub async fn upload_parts(&self, upload: Uuid) -> Result<Vec<PartRecord>> {
        Ok(on_pool!(&self.db, pool => sqlx::query_as(
            "SELECT number, size_bytes, sha256, blob_key FROM upload_parts WHERE upload_id = $1 ORDER BY number",
        )
        .bind(upload.to_string())
        .fetch_all(pool)
        .await)?)
    }

    /// Removes the upload and its part rows; returns the part files to remove, or None if
    /// there was no such upload (another replica may have removed it first).
    pub async fn delete_upload(&self, id: Uuid) -> Result<Option<Vec<String>>> {
        let id = id.to_string();
        on_pool!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let parts: Vec<(String,)> = sqlx::query_as("DELETE FROM upload_parts WHERE upload_id = $1 RETURNING blob_key")
                .bind(&id)
                .fetch_all(&mut *tx)
                .await?;
            let gone = sqlx::query("DELETE FROM uploads WHERE id = $1")
                .bind(&id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok((gone > 0).then(|| parts.into_iter().map(|(k,)| k).collect()))
        })
    }

    /// Uploads whose time to live has passed.
    pub async fn expired_uploads(&self, limit: i64) -> Result<Vec<Uuid>> {
        let now = self.clock_ms().await?;
        let rows: Vec<(String,)> = on_pool!(&self.db, pool => sqlx::query_as(
            "SELECT id FROM uploads WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(pool)
        .await)?;
        Ok(rows
            .into_iter()
            .filter_map(|(id,)| Uuid::parse_str(&id).ok())
            .collect())
    }
}
