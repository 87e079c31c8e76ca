//! Per-key request rates, kept in the database so that every API replica spends the same
//! budget. GCRA: each key has a theoretical arrival time (TAT); a request moves it one
//! emission interval on, and is refused when that would put it more than a burst ahead of now.
//! One statement on the happy path; the row lock of the upsert orders concurrent requests.

use uuid::Uuid;

use super::{Db, Result, Store};

/// After one request: the key's TAT and the database's now (Unix µs), and whether the
/// request was let through.
#[derive(Debug, Clone, Copy)]
pub struct RateTaken {
    pub allowed: bool,
    pub tat_us: i64,
    pub now_us: i64,
}

impl Store {
    /// Spends one request of `key`, whose requests are `interval_us` apart on average with up
    /// to `burst` at once.
    pub async fn take_rate(&self, key: Uuid, interval_us: i64, burst: i64) -> Result<RateTaken> {
        let (now, max) = match self.db {
            Db::Sqlite(_) => (
                "CAST(ROUND((julianday('now') - 2440587.5) * 86400000000.0) AS INTEGER)",
                "MAX",
            ),
            // statement_timestamp(): one now for the whole statement.
            Db::Postgres(_) => (
                "(EXTRACT(EPOCH FROM statement_timestamp()) * 1000000)::BIGINT",
                "GREATEST",
            ),
        };
        let take = format!(
            "INSERT INTO rate_limits (key_id, tat) VALUES ($1, {now} + $2)
             ON CONFLICT (key_id) DO UPDATE SET tat = {max}(rate_limits.tat, {now}) + $2
             WHERE {max}(rate_limits.tat, {now}) + $2 - {now} <= $3
             RETURNING tat, {now}"
        );
        let limit = interval_us.saturating_mul(burst);
        let taken: Option<(i64, i64)> = super::on_pool!(&self.db, pool => sqlx::query_as(&take)
            .bind(key.to_string())
            .bind(interval_us)
            .bind(limit)
            .fetch_optional(pool)
            .await)?;
        if let Some((tat_us, now_us)) = taken {
            return Ok(RateTaken {
                allowed: true,
                tat_us,
                now_us,
            });
        }
        let standing = format!("SELECT tat, {now} FROM rate_limits WHERE key_id = $1");
        let (tat_us, now_us): (i64, i64) = super::on_pool!(&self.db, pool => sqlx::query_as(&standing)
            .bind(key.to_string())
            .fetch_one(pool)
            .await)?;
        Ok(RateTaken {
            allowed: false,
            tat_us,
            now_us,
        })
    }
}
