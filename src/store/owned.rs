//! The reads that models and datasets share: one by id, and a page of them newest first.
//! Written once over the table; every read names the tenant.

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
    /// The table. A constant, never input.
    const TABLE: &'static str;
    /// The columns a list reads: what a page shows, never per-tensor data.
    const LIST_COLUMNS: &'static str;
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
            "SELECT {} FROM {} WHERE tenant_id = $3 AND ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
            R::LIST_COLUMNS,
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
}
