//! Tenants and their API keys. A key is shown once, when it is made; the store keeps only its
//! SHA-256, and finds the caller by hashing what they present.

use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::rows::ts;
use super::{is_unique_violation, on_pool, BeginWrite, KeyLock, Result, Store};

/// The tenant of a server that runs without keys, and of rows older than tenants.
pub const LOCAL_TENANT: &str = "local";

/// What the keyless server stored, as counted for (or moved by) an adoption.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalData {
    pub models: i64,
    pub datasets: i64,
    pub jobs: i64,
}

impl LocalData {
    pub fn is_empty(&self) -> bool {
        *self == LocalData::default()
    }
}

impl std::fmt::Display for LocalData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} models, {} datasets and {} jobs",
            self.models, self.datasets, self.jobs
        )
    }
}

/// What a tenant holds and runs now, beside its limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub stored_bytes: i64,
    pub running_jobs: i64,
    pub queued_jobs: i64,
}

/// Every table whose rows belong to a tenant.
const TENANT_TABLES: [&str; 6] = [
    "models",
    "datasets",
    "jobs",
    "artifacts",
    "uploads",
    "blob_reservations",
];

/// Per-tenant limits; None means the server's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_stored_bytes: Option<i64>,
    pub max_running_jobs: Option<i64>,
    pub max_queued_jobs: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct TenantRecord {
    pub id: String,
    pub name: String,
    pub webhook_secret: String,
    pub limits: Limits,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct TenantRow {
    id: String,
    name: String,
    webhook_secret: String,
    max_stored_bytes: Option<i64>,
    max_running_jobs: Option<i64>,
    max_queued_jobs: Option<i64>,
    created_at: i64,
}

impl From<TenantRow> for TenantRecord {
    fn from(r: TenantRow) -> Self {
        TenantRecord {
            id: r.id,
            name: r.name,
            webhook_secret: r.webhook_secret,
            limits: Limits {
                max_stored_bytes: r.max_stored_bytes,
                max_running_jobs: r.max_running_jobs,
                max_queued_jobs: r.max_queued_jobs,
            },
            created_at: ts(r.created_at),
        }
    }
}

#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub id: Uuid,
    pub tenant_id: String,
    pub tenant_name: String,
    pub prefix: String,
    pub label: String,
    pub rate_per_minute: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: String,
    tenant_id: String,
    tenant_name: String,
    prefix: String,
    label: String,
    rate_per_minute: Option<i64>,
    created_at: i64,
    revoked_at: Option<i64>,
}

impl From<KeyRow> for KeyRecord {
    fn from(r: KeyRow) -> Self {
        KeyRecord {
            id: Uuid::parse_str(&r.id).unwrap_or_default(),
            tenant_id: r.tenant_id,
            tenant_name: r.tenant_name,
            prefix: r.prefix,
            label: r.label,
            rate_per_minute: r.rate_per_minute,
            created_at: ts(r.created_at),
            revoked_at: r.revoked_at.map(ts),
        }
    }
}

const KEY_COLUMNS: &str = "k.id, k.tenant_id, t.name AS tenant_name, k.prefix, k.label, k.rate_per_minute, k.created_at, k.revoked_at";
const KEY_FROM: &str = "FROM api_keys k JOIN tenants t ON t.id = k.tenant_id";
/// A key row with its tenant's columns, for authentication.
#[derive(sqlx::FromRow)]
struct AuthRow {
    #[sqlx(flatten)]
    key: KeyRow,
    webhook_secret: String,
    max_stored_bytes: Option<i64>,
    max_running_jobs: Option<i64>,
    max_queued_jobs: Option<i64>,
    tenant_created_at: i64,
}

/// The stored form of a key.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("a tenant named '{0}' already exists")]
    Exists(String),
    #[error(transparent)]
    Store(#[from] super::StoreError),
}

impl Store {
    /// Makes sure the keyless server's tenant exists.
    pub async fn ensure_local_tenant(&self) -> Result<()> {
        let now = self.clock_ms().await?;
        on_pool!(&self.db, pool => sqlx::query(
            "INSERT INTO tenants (id, name, webhook_secret, created_at) VALUES ($1, $1, $2, $3) ON CONFLICT (id) DO NOTHING",
        )
        .bind(LOCAL_TENANT)
        .bind(format!("whsec_{}", random_hex(32)))
        .bind(now)
        .execute(pool)
        .await
        .map(drop))?;
        Ok(())
    }

    pub async fn create_tenant(
        &self,
        name: &str,
        limits: &Limits,
    ) -> std::result::Result<TenantRecord, TenantError> {
        let now = self.clock_ms().await?;
        let inserted: std::result::Result<TenantRow, sqlx::Error> = on_pool!(&self.db, pool => sqlx::query_as(
            "INSERT INTO tenants (id, name, webhook_secret, max_stored_bytes, max_running_jobs, max_queued_jobs, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
        )
        .bind(Uuid::now_v7().simple().to_string())
        .bind(name)
        .bind(format!("whsec_{}", random_hex(32)))
        .bind(limits.max_stored_bytes)
        .bind(limits.max_running_jobs)
        .bind(limits.max_queued_jobs)
        .bind(now)
        .fetch_one(pool)
        .await);
        match inserted {
            Ok(row) => Ok(row.into()),
            Err(e) if is_unique_violation(&e) => Err(TenantError::Exists(name.to_owned())),
            Err(e) => Err(TenantError::Store(e.into())),
        }
    }

    pub async fn tenant_by_name(&self, name: &str) -> Result<Option<TenantRecord>> {
        let row: Option<TenantRow> = on_pool!(&self.db, pool => sqlx::query_as("SELECT * FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await)?;
        Ok(row.map(Into::into))
    }

    pub async fn tenant(&self, id: &str) -> Result<Option<TenantRecord>> {
        let row: Option<TenantRow> = on_pool!(&self.db, pool => sqlx::query_as("SELECT * FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        Ok(row.map(Into::into))
    }

    pub async fn list_tenants(&self) -> Result<Vec<TenantRecord>> {
        let rows: Vec<TenantRow> = on_pool!(&self.db, pool => sqlx::query_as("SELECT * FROM tenants ORDER BY name")
            .fetch_all(pool)
            .await)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Replaces the tenant's limits; None if there is no such tenant.
    pub async fn set_limits(&self, name: &str, limits: &Limits) -> Result<Option<TenantRecord>> {
        let row: Option<TenantRow> = on_pool!(&self.db, pool => sqlx::query_as(
            "UPDATE tenants SET max_stored_bytes = $2, max_running_jobs = $3, max_queued_jobs = $4 WHERE name = $1 RETURNING *",
        )
        .bind(name)
        .bind(limits.max_stored_bytes)
        .bind(limits.max_running_jobs)
        .bind(limits.max_queued_jobs)
        .fetch_optional(pool)
        .await)?;
        Ok(row.map(Into::into))
    }

    /// A new key for the tenant: its record and the key itself (not stored; show it once).
    pub async fn create_key(
        &self,
        tenant: &TenantRecord,
        label: &str,
        rate_per_minute: Option<i64>,
    ) -> Result<(KeyRecord, String)> {
        let now = self.clock_ms().await?;
        let secret = format!("cmpd_{}", random_hex(24));
        let id = Uuid::now_v7();
        on_pool!(&self.db, pool => sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, prefix, key_hash, label, rate_per_minute, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id.to_string())
        .bind(&tenant.id)
        .bind(&secret[..13])
        .bind(hash_key(&secret))
        .bind(label)
        .bind(rate_per_minute)
        .bind(now)
        .execute(pool)
        .await
        .map(drop))?;
        let key = self
            .key(id)
            .await?
            .ok_or_else(|| super::StoreError::Corrupt(format!("key {id} vanished after insert")))?;
        Ok((key, secret))
    }

    pub async fn key(&self, id: Uuid) -> Result<Option<KeyRecord>> {
        let row: Option<KeyRow> = on_pool!(&self.db, pool => sqlx::query_as(&format!("SELECT {KEY_COLUMNS} {KEY_FROM} WHERE k.id = $1"))
            .bind(id.to_string())
            .fetch_optional(pool)
            .await)?;
        Ok(row.map(Into::into))
    }

    /// Keys, newest first, of one tenant or of all.
    pub async fn list_keys(&self, tenant_name: Option<&str>) -> Result<Vec<KeyRecord>> {
        let rows: Vec<KeyRow> = on_pool!(&self.db, pool => sqlx::query_as(&format!(
            "SELECT {KEY_COLUMNS} {KEY_FROM} WHERE ($1 IS NULL OR t.name = $1) ORDER BY k.id DESC"
        ))
        .bind(tenant_name)
        .fetch_all(pool)
        .await)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Revokes a key at once; false if there is no such key.
    pub async fn revoke_key(&self, id: Uuid) -> Result<bool> {
        let now = self.clock_ms().await?;
        let n = on_pool!(&self.db, pool => sqlx::query(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
        )
        .bind(id.to_string())
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(n > 0)
    }

    /// The live key whose hash matches, with its tenant.
    /// The live key whose hash matches, with its tenant, in one query (every request asks).
    pub async fn authenticate(&self, key: &str) -> Result<Option<(KeyRecord, TenantRecord)>> {
        let row: Option<AuthRow> = on_pool!(&self.db, pool => sqlx::query_as(&format!(
            "SELECT {KEY_COLUMNS}, t.webhook_secret, t.max_stored_bytes, t.max_running_jobs,
                    t.max_queued_jobs, t.created_at AS tenant_created_at
             {KEY_FROM} WHERE k.key_hash = $1 AND k.revoked_at IS NULL"
        ))
        .bind(hash_key(key))
        .fetch_optional(pool)
        .await)?;
        Ok(row.map(|r| {
            let key = KeyRecord::from(r.key);
            let tenant = TenantRecord::from(TenantRow {
                id: key.tenant_id.clone(),
                name: key.tenant_name.clone(),
                webhook_secret: r.webhook_secret,
                max_stored_bytes: r.max_stored_bytes,
                max_running_jobs: r.max_running_jobs,
                max_queued_jobs: r.max_queued_jobs,
                created_at: r.tenant_created_at,
            });
            (key, tenant)
        }))
    }

    pub async fn live_keys_exist(&self) -> Result<bool> {
        let row: Option<(String,)> = on_pool!(&self.db, pool => sqlx::query_as(
            "SELECT id FROM api_keys WHERE revoked_at IS NULL LIMIT 1",
        )
        .fetch_optional(pool)
        .await)?;
        Ok(row.is_some())
    }

    pub async fn usage(&self, tenant: &str) -> Result<Usage> {
        let query = format!(
            "SELECT ({STORED_BYTES}),
                (SELECT COUNT(*) FROM jobs WHERE tenant_id = $1 AND status = 'running'),
                (SELECT COUNT(*) FROM jobs WHERE tenant_id = $1 AND status = 'queued')"
        );
        let (stored_bytes, running_jobs, queued_jobs): (i64, i64, i64) = on_pool!(&self.db, pool => sqlx::query_as(&query)
            .bind(tenant)
            .fetch_one(pool)
            .await)?;
        Ok(Usage {
            stored_bytes,
            running_jobs,
            queued_jobs,
        })
    }

    /// What the keyless server's tenant holds.
    pub async fn local_data(&self) -> Result<LocalData> {
        let (models, datasets, jobs): (i64, i64, i64) = on_pool!(&self.db, pool => sqlx::query_as(LOCAL_COUNTS)
            .bind(LOCAL_TENANT)
            .fetch_one(pool)
            .await)?;
        Ok(LocalData {
            models,
            datasets,
            jobs,
        })
    }

    /// Moves everything the keyless server stored to `tenant_id`, in one transaction: its keys
    /// then see the models, datasets, jobs and artifacts made before keys existed, and a
    /// submission retried with an Idempotency-Key used in open mode still finds its job.
    pub async fn adopt_local_data(&self, tenant_id: &str) -> Result<LocalData> {
        let moved = on_pool!(&self.db, pool => async {
            let mut tx = pool.begin_write().await?;
            // Under both queue locks: a submission racing the move counts its queue in full.
            for tenant in sorted_pair(LOCAL_TENANT, tenant_id) {
                tx.lock_key(&format!("queue:{tenant}")).await?;
            }
            let (models, datasets, jobs): (i64, i64, i64) = sqlx::query_as(LOCAL_COUNTS)
                .bind(LOCAL_TENANT)
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE jobs SET idempotency_key = $1 || substr(idempotency_key, CAST($2 AS INTEGER))
                 WHERE tenant_id = $3 AND idempotency_key IS NOT NULL",
            )
            .bind(format!("{tenant_id}:"))
            .bind(LOCAL_TENANT.len() as i64 + 2)
            .bind(LOCAL_TENANT)
            .execute(&mut *tx)
            .await?;
            for table in TENANT_TABLES {
                sqlx::query(&format!("UPDATE {table} SET tenant_id = $1 WHERE tenant_id = $2"))
                    .bind(tenant_id)
                    .bind(LOCAL_TENANT)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(LocalData { models, datasets, jobs })
        }.await)?;
        Ok(moved)
    }

    /// Bytes the tenant keeps: each distinct file counted once (shared bytes are stored once).
    pub async fn stored_bytes(&self, tenant: &str) -> Result<i64> {
        let (n,): (i64,) = on_pool!(&self.db, pool => sqlx::query_as(STORED_BYTES)
        .bind(tenant)
        .fetch_one(pool)
        .await)?;
        Ok(n)
    }
}

const LOCAL_COUNTS: &str = "SELECT (SELECT COUNT(*) FROM models WHERE tenant_id = $1),
    (SELECT COUNT(*) FROM datasets WHERE tenant_id = $1),
    (SELECT COUNT(*) FROM jobs WHERE tenant_id = $1)";

fn sorted_pair<'a>(a: &'a str, b: &'a str) -> [&'a str; 2] {
    if a <= b {
        [a, b]
    } else {
        [b, a]
    }
}

/// The bytes a tenant keeps (`$1`): each distinct file once, files on their way in included.
pub(super) const STORED_BYTES: &str = "SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM (
    SELECT blob_key, MAX(size_bytes) AS size_bytes FROM (
        SELECT blob_key, size_bytes FROM models WHERE tenant_id = $1
        UNION ALL SELECT blob_key, size_bytes FROM datasets WHERE tenant_id = $1
        UNION ALL SELECT blob_key, size_bytes FROM artifacts WHERE tenant_id = $1
        UNION ALL SELECT p.blob_key, p.size_bytes FROM upload_parts p JOIN uploads u ON u.id = p.upload_id WHERE u.tenant_id = $1
        UNION ALL SELECT blob_key, size_bytes FROM blob_reservations WHERE tenant_id = $1
        UNION ALL SELECT f.blob_key, f.size_bytes FROM model_files f JOIN models m ON m.id = f.model_id WHERE m.tenant_id = $1
    ) AS files GROUP BY blob_key
) AS distinct_files";
