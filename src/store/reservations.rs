//! Files on their way in and on their way out, kept consistent with the rows that name them.
//!
//! A file is reserved before its bytes are put and until the row naming it is written: the
//! reservation counts against the tenant's storage (so parallel uploads cannot each pass the
//! quota check and together overshoot it) and as a reference (so a delete or the orphan sweep
//! cannot remove a file that is about to be named). A file goes only through
//! [`Store::remove_if_unreferenced`], which recounts its references under the key's lock and
//! removes it before letting go: an upload of the same bytes waits for the lock, then puts
//! them again.

use std::future::Future;

use uuid::Uuid;

use super::{on_pool, BeginWrite, KeyLock, Result, Store, BLOB_REFERENCES};

/// A reservation for one file; end it once the row naming the file is written (or the upload
/// failed).
#[derive(Debug, Clone)]
pub struct Reservation {
    pub id: Uuid,
    pub key: String,
}

/// The tenant's storage would pass its limit.
#[derive(Debug, Clone, Copy)]
pub struct OverQuota {
    pub used: u64,
    pub limit: u64,
}

impl Store {
    /// Reserves room for `bytes` (nothing more when `key` is already stored) under the
    /// tenant's `limit`, for `ttl_ms` at most.
    pub async fn reserve_blob(
        &self,
        tenant: &str,
        key: &str,
        bytes: u64,
        limit: Option<u64>,
        ttl_ms: i64,
    ) -> Result<std::result::Result<Reservation, OverQuota>> {
        let id = Uuid::now_v7();
        let now = self.clock_ms().await?;
        let stored = on_pool!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            // One tenant's reservations queue up behind each other; then the key's own lock.
            tx.lock_key(&format!("quota:{tenant}")).await?;
            tx.lock_key(key).await?;
            if let Some(limit) = limit {
                let (refs,): (i64,) = sqlx::query_as(BLOB_REFERENCES)
                    .bind(key)
                    .fetch_one(&mut *tx)
                    .await?;
                let (used,): (i64,) = sqlx::query_as(super::tenants::STORED_BYTES)
                    .bind(tenant)
                    .fetch_one(&mut *tx)
                    .await?;
                let used = used.max(0) as u64;
                let adding = if refs > 0 { 0 } else { bytes };
                if used.saturating_add(adding) > limit {
                    return Ok(Err(OverQuota { used, limit }));
                }
            }
            sqlx::query(
                "INSERT INTO blob_reservations (id, tenant_id, blob_key, size_bytes, expires_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id.to_string())
            .bind(tenant)
            .bind(key)
            .bind(i64::try_from(bytes).unwrap_or(i64::MAX))
            .bind(now.saturating_add(ttl_ms))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Reservation {
                id,
                key: key.to_owned(),
            }
        });
        Ok(Ok(stored))
    }

    pub async fn end_reservation(&self, reservation: &Reservation) -> Result<()> {
        on_pool!(&self.db, pool => sqlx::query("DELETE FROM blob_reservations WHERE id = $1")
            .bind(reservation.id.to_string())
            .execute(pool)
            .await
            .map(drop))?;
        Ok(())
    }

    /// Runs `remove` (deleting the file under `key`) if no row and no reservation names the
    /// key, holding the key's lock until it has run. Returns whether it ran. A failed removal
    /// leaves the file for the orphan sweep.
    pub async fn remove_if_unreferenced<F>(&self, key: &str, remove: F) -> Result<bool>
    where
        F: Future<Output = std::io::Result<()>>,
    {
        on_pool!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            tx.lock_key(key).await?;
            let (refs,): (i64,) = sqlx::query_as(BLOB_REFERENCES)
                .bind(key)
                .fetch_one(&mut *tx)
                .await?;
            if refs > 0 {
                return Ok(false);
            }
            if let Err(e) = remove.await {
                tracing::warn!(key, error = %e, "could not remove a file no row names; the sweep will retry");
                return Ok(false);
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Drops reservations whose upload died before it ended them; returns their keys, for the
    /// caller to remove if nothing else names them.
    pub async fn expire_reservations(&self, limit: i64) -> Result<Vec<String>> {
        let now = self.clock_ms().await?;
        let rows: Vec<(String,)> = on_pool!(&self.db, pool => sqlx::query_as(
            "DELETE FROM blob_reservations WHERE id IN (SELECT id FROM blob_reservations WHERE expires_at < $1 LIMIT $2) RETURNING blob_key",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(pool)
        .await)?;
        Ok(rows.into_iter().map(|(k,)| k).collect())
    }
}
