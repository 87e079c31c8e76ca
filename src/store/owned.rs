//! The reads that models and datasets share: one by id, a page of them newest first, and how
//! many active jobs use one. Written once over the table; every read names the tenant.

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::FromRow;
use uuid::Uuid;

use super::rows::convert;
use super::{on_pool, Result, Store, StoreError};

/// A table of uploads a tenant owns.
pub(super) trait Owned:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
    type Record: TryFrom<Self, Error = StoreError>;
    /// The table, and the column of `jobs` that names a row of it. Constants, never input.
    const TABLE: &'static str;
    const JOB_COLUMN: &'static str;
}

impl Store {
    pub(super) async fn get_owned<R: Owned>(
        &self,
        tenant: &str,
        id: Uuid,
    ) -> Result<Option<R::Record>> {
        let sql = format!(
            "SELECT * FROM {} WHERE id = $1 AND tenant_id = $2",
            R::TABLE
        );
        let row: Option<R> = on_pool!(&self.db, pool => sqlx::query_as(&sql)
            .bind(id.to_string())
            .bind(tenant)
            .fetch_optional(pool)
            .await)?;
        row.map(R::Record::try_from).transpose()
    }

    /// Newest first; `after` is the id of the last row of the previous page.
    pub(super) async fn list_owned<R: Owned>(
        &self,
        tenant: &str,
        limit: u32,
        after: Option<Uuid>,
    ) -> Result<Vec<R::Record>> {
        let sql = format!(
            "SELECT * FROM {} WHERE tenant_id = $3 AND ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
            R::TABLE
        );
        let rows: Vec<R> = on_pool!(&self.db, pool => sqlx::query_as(&sql)
            .bind(after.map(|a| a.to_string()))
            .bind(limit as i64)
            .bind(tenant)
            .fetch_all(pool)
            .await)?;
        convert(rows)
    }

    pub(super) async fn active_jobs_for<R: Owned>(&self, id: Uuid) -> Result<i64> {
        let sql = format!(
            "SELECT COUNT(*) FROM jobs WHERE {} = $1 AND status IN ('queued', 'running')",
            R::JOB_COLUMN
        );
        let (n,): (i64,) = on_pool!(&self.db, pool => sqlx::query_as(&sql)
            .bind(id.to_string())
            .fetch_one(pool)
            .await)?;
        Ok(n)
    }
}
