//! The relational store: models, jobs (the queue) and artifacts, in SQLite or PostgreSQL.
//! Both backends run the same SQL through one `Store`; where they must differ (claiming a job)
//! each has its own statement. Timestamps are stored as Unix milliseconds.

mod artifacts;
pub mod blobs;
mod cache;
mod datasets;
mod job_changes;
mod job_logs;
mod job_record;
mod jobs;
mod models;
mod object_blobs;
mod owned;
mod rate_limits;
mod reservations;
mod rows;
mod tenants;
mod uploads;
mod webhooks;

use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use artifacts::{ArtifactRecord, NewArtifact};
pub use blobs::{BlobReader, BlobStore, LocalBlobs, ScratchFile};
pub use datasets::{DatasetRecord, NewDataset};
pub use job_changes::{changed as job_changed, JobChanges};
pub use job_logs::LogLine;
pub use job_record::{JobRecord, Lease, WebhookState};
pub use jobs::{CreateJob, Created, Finish, JobFilter, QueueStanding};
pub use models::{ModelFile, ModelRecord, NewModel};
pub use object_blobs::ObjectBlobs;
pub use rate_limits::RateTaken;
pub use reservations::{OverQuota, Reservation};
pub use tenants::{
    hash_key, KeyRecord, Limits, LocalData, TenantError, TenantRecord, Usage, LOCAL_TENANT,
};
pub use uploads::{PartRecord, UploadRecord};
pub use webhooks::Delivery;

/// How deleting a model or dataset went.
#[derive(Debug)]
pub enum Removal {
    Missing,
    /// Queued or running jobs use it (counted in the deleting transaction, so a job submitted
    /// at the same moment is either counted here or refused for want of its model).
    InUse(i64),
    /// Gone; these files no row names any more.
    Removed(Vec<String>),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported DATABASE_URL '{0}': use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Clone, Debug)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` against whichever pool the store holds; `$body` is written once and compiled
/// for each backend.
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// A transaction that will write. SQLite starts it with `BEGIN IMMEDIATE`, taking the write lock
/// up front: a deferred transaction that reads and then writes cannot wait for a concurrent
/// writer (SQLite answers "database is locked" at once instead of using the busy timeout).
/// PostgreSQL's row locks need nothing of the kind.
pub(crate) trait BeginWrite {
    type Db: sqlx::Database;
    async fn begin_write(&self) -> sqlx::Result<sqlx::Transaction<'static, Self::Db>>;
}

impl BeginWrite for SqlitePool {
    type Db = sqlx::Sqlite;
    async fn begin_write(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

/// Serialises the transactions that touch one key (a blob's references, one part of an
/// upload): PostgreSQL takes a transaction-scoped advisory lock on it, so a count taken after
/// the lock sees every earlier holder's commit; SQLite's `BEGIN IMMEDIATE` already admits one
/// writer at a time.
pub(crate) trait KeyLock {
    async fn lock_key(&mut self, key: &str) -> sqlx::Result<()>;
}

impl KeyLock for sqlx::Transaction<'_, sqlx::Sqlite> {
    async fn lock_key(&mut self, _key: &str) -> sqlx::Result<()> {
        Ok(())
    }
}

impl KeyLock for sqlx::Transaction<'_, sqlx::Postgres> {
    async fn lock_key(&mut self, key: &str) -> sqlx::Result<()> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(key)
            .execute(&mut **self)
            .await
            .map(drop)
    }
}

impl BeginWrite for PgPool {
    type Db = sqlx::Postgres;
    async fn begin_write(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.begin().await
    }
}

#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
}

impl Store {
    /// Connects and runs the backend's migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        let db = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(true);
            if let Some(dir) = opts.get_filename().parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
                }
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(opts)
                .await?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            Db::Sqlite(pool)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            Db::Postgres(pool)
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        Ok(Store { db })
    }

    pub fn backend(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    pub async fn ping(&self) -> Result<()> {
        on_pool!(&self.db, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop))?;
        Ok(())
    }

    pub async fn close(&self) {
        on_pool!(&self.db, pool => pool.close().await)
    }

    /// Now by the database's clock, in Unix milliseconds. Every time the store records or
    /// compares (leases, backoffs, expiries, creation times) is read from it, so that replicas
    /// whose own clocks are off neither steal live leases nor keep dead ones.
    pub async fn clock_ms(&self) -> Result<i64> {
        Ok(match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query_scalar(
                    "SELECT CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)",
                )
                .fetch_one(pool)
                .await?
            }
            Db::Postgres(pool) => {
                sqlx::query_scalar("SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT")
                    .fetch_one(pool)
                    .await?
            }
        })
    }
}

static LOCAL_CLOCK_SKEW_MS: AtomicI64 = AtomicI64::new(0);

/// Testing aid: moves this process's own clock (`now_ms`) by `ms`, as a host whose clock is
/// off would have it.
pub fn skew_local_clock(ms: i64) {
    LOCAL_CLOCK_SKEW_MS.store(ms, Ordering::Relaxed);
}

/// Now by this host's clock, in Unix milliseconds: for what goes to other parties (webhook
/// timestamps), never for what the store compares (see [`Store::clock_ms`]).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis() + LOCAL_CLOCK_SKEW_MS.load(Ordering::Relaxed)
}

/// How many rows name a blob (`$1`); content-addressed files are shared, so a file goes only
/// when this reaches zero.
pub(crate) const BLOB_REFERENCES: &str = "SELECT (SELECT COUNT(*) FROM models WHERE blob_key = $1)
    + (SELECT COUNT(*) FROM datasets WHERE blob_key = $1)
    + (SELECT COUNT(*) FROM artifacts WHERE blob_key = $1)
    + (SELECT COUNT(*) FROM upload_parts WHERE blob_key = $1)
    + (SELECT COUNT(*) FROM model_files WHERE blob_key = $1)
    + (SELECT COUNT(*) FROM blob_reservations WHERE blob_key = $1)";

/// Of the blob keys `$keys` (`(String,)` rows, e.g. from `DELETE … RETURNING blob_key`), those
/// no row names any more inside the transaction `$tx`: the files the caller may remove.
macro_rules! unreferenced {
    ($tx:expr, $keys:expr) => {{
        let mut released: Vec<String> = Vec::new();
        let mut keys: Vec<(String,)> = IntoIterator::into_iter($keys).collect();
        // One order for everyone, so two transactions never wait on each other's keys.
        keys.sort();
        for (key,) in keys {
            $crate::store::KeyLock::lock_key(&mut $tx, &key).await?;
            let (refs,): (i64,) = sqlx::query_as($crate::store::BLOB_REFERENCES)
                .bind(&key)
                .fetch_one(&mut *$tx)
                .await?;
            if refs == 0 && !released.contains(&key) {
                released.push(key);
            }
        }
        released
    }};
}
pub(crate) use unreferenced;

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}
