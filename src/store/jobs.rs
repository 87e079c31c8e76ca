//! The job queue. A claim is a lease: a token and an expiry. Every write a worker makes is
//! fenced by its token, so an attempt that lost its lease can no longer change the job.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::artifacts::NewArtifact;
use super::job_record::{JobRecord, JobRow, Lease};
use super::rows::{convert, ts};
use super::{is_unique_violation, on_pool, BeginWrite, Db, KeyLock, Result, Store};
use crate::domain::results::ProgressDetail;
use crate::domain::JobStatus;

pub struct CreateJob {
    pub id: Uuid,
    pub tenant_id: String,
    pub model_id: Uuid,
    pub dataset_id: Option<Uuid>,
    pub pipeline: Value,
    pub max_attempts: u32,
    pub idempotency_key: Option<String>,
    pub request_hash: String,
    /// Model bytes, dataset bytes and canonical pipeline: equal keys give equal results.
    pub cache_key: String,
    pub webhook_url: Option<String>,
    pub artifact_ttl_ms: Option<i64>,
    /// The `x-request-id` of the submitting request.
    pub request_id: Option<String>,
    /// The submitting request's W3C `traceparent`, when traces are on.
    pub trace_parent: Option<String>,
    /// The tenant's queued jobs may not pass this.
    pub max_queued_jobs: i64,
}

pub enum Created {
    New(JobRecord),
    /// The idempotency key was seen before with the same request.
    Replayed(JobRecord),
    /// The idempotency key was seen before with a different request.
    KeyReused,
    /// The model or dataset was deleted while the job was being submitted.
    InputGone,
    /// The tenant already has this many queued jobs, its limit.
    QueueFull(i64),
}

/// What the insert transaction found.
enum Inserted {
    Row(Box<JobRow>),
    InputGone,
    QueueFull(i64),
}

pub struct JobFilter {
    pub tenant_id: String,
    pub status: Option<JobStatus>,
    pub model_id: Option<Uuid>,
    /// Jobs whose pipeline has a step with this op.
    pub op: Option<String>,
    /// Submitted at or after, and before, these times (Unix milliseconds).
    pub created_after: Option<i64>,
    pub created_before: Option<i64>,
    pub limit: u32,
    pub after: Option<Uuid>,
}

/// How an attempt ends.
#[derive(Clone)]
pub enum Finish {
    Succeeded {
        metrics: Value,
        artifacts: Vec<NewArtifact>,
    },
    Failed {
        error: Value,
    },
    Retry {
        error: Value,
        delay_ms: i64,
    },
    Cancelled,
    /// Shutdown: back to the queue without spending an attempt.
    Released,
    /// The server's storage failed under the attempt: back to the queue after `delay_ms`
    /// without spending an attempt (the job did nothing wrong).
    Deferred {
        error: Value,
        delay_ms: i64,
    },
}

// A tenant at its running-jobs limit ($5 unless the tenant sets its own) waits its turn.
const CLAIMABLE: &str = "((status = 'queued' AND run_after <= $4)
    OR (status = 'running' AND lease_expires_at < $4 AND attempts < max_attempts AND cancel_requested = FALSE))
    AND (SELECT COUNT(*) FROM jobs r WHERE r.tenant_id = jobs.tenant_id AND r.status = 'running' AND r.id <> jobs.id)
        < COALESCE((SELECT t.max_running_jobs FROM tenants t WHERE t.id = jobs.tenant_id), $5)";

/// The advisory lock job claims take turns on (PostgreSQL).
const CLAIM_LOCK: i64 = 0x636c_6169_6d00;

// Fair share between tenants: first the tenant with the fewest jobs running, then the one
// whose latest job started longest ago (so tenants take turns), then the oldest job.
const FAIR_ORDER: &str =
    "(SELECT COUNT(*) FROM jobs r WHERE r.tenant_id = jobs.tenant_id AND r.status = 'running'),
    COALESCE((SELECT MAX(r.started_at) FROM jobs r WHERE r.tenant_id = jobs.tenant_id), 0), id";

const CLAIM_SET: &str =
    "status = 'running', attempts = attempts + 1, lease_token = $1, lease_owner = $2,
    lease_expires_at = $3, started_at = COALESCE(started_at, $4), updated_at = $4, progress = 0,
    progress_detail = NULL";

/// A queued job's place: what the store counts for it at one instant of the database's clock.
#[derive(Debug, Clone)]
pub struct QueueStanding {
    /// The tenant's queued jobs submitted before it.
    pub tenant_ahead: u64,
    /// Every tenant's queued jobs submitted before it.
    pub jobs_ahead: u64,
    /// Jobs that ran to an end (succeeded or failed; not results-cache answers, which run
    /// nothing) in the last `window_ms`.
    pub finished_recently: u64,
    pub window_ms: i64,
    pub now: DateTime<Utc>,
    /// When the job may be claimed (later than now while it waits out a retry backoff).
    pub run_after: DateTime<Utc>,
}

/// The window the start estimate takes its pace from.
const PACE_WINDOW_MS: i64 = 15 * 60 * 1000;

impl Store {
    /// Where a queued job stands; None when it is not queued (any more).
    pub async fn queue_standing(&self, id: Uuid) -> Result<Option<QueueStanding>> {
        let now = self.clock_ms().await?;
        // Job ids are UUIDv7: their text sorts by submission time.
        let row: Option<(i64, i64, i64, i64)> = on_pool!(&self.db, pool => sqlx::query_as(
            "SELECT
                (SELECT COUNT(*) FROM jobs a WHERE a.status = 'queued' AND a.tenant_id = j.tenant_id AND a.id < j.id),
                (SELECT COUNT(*) FROM jobs a WHERE a.status = 'queued' AND a.id < j.id),
                (SELECT COUNT(*) FROM jobs f WHERE f.status IN ('succeeded', 'failed') AND f.finished_at >= $2 AND f.cached_from IS NULL),
                j.run_after
             FROM jobs j WHERE j.id = $1 AND j.status = 'queued'",
        )
        .bind(id.to_string())
        .bind(now - PACE_WINDOW_MS)
        .fetch_optional(pool)
        .await)?;
        Ok(row.map(
            |(tenant_ahead, jobs_ahead, finished, run_after)| QueueStanding {
                tenant_ahead: tenant_ahead as u64,
                jobs_ahead: jobs_ahead as u64,
                finished_recently: finished as u64,
                window_ms: PACE_WINDOW_MS,
                now: ts(now),
                run_after: ts(run_after),
            },
        ))
    }

    pub async fn create_job(&self, job: &CreateJob) -> Result<Created> {
        let now = self.clock_ms().await?;
        // Keys are unique per tenant: the stored key carries the tenant id.
        let idempotency_key = job
            .idempotency_key
            .as_ref()
            .map(|k| format!("{}:{k}", job.tenant_id));
        // Under the model's (and dataset's) lock: a delete of either either counts this job
        // as active or has happened, and then the job is refused instead of orphaned.
        let inserted: std::result::Result<Inserted, sqlx::Error> = on_pool!(&self.db, pool => async {
            let mut tx = pool.begin_write().await?;
            // Under the tenant's queue lock: parallel submits cannot pass the queue limit.
            tx.lock_key(&format!("queue:{}", job.tenant_id)).await?;
            let (queued,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM jobs WHERE tenant_id = $1 AND status = 'queued'",
            )
            .bind(&job.tenant_id)
            .fetch_one(&mut *tx)
            .await?;
            if queued >= job.max_queued_jobs {
                return Ok(Inserted::QueueFull(queued));
            }
            tx.lock_key(&format!("model:{}", job.model_id)).await?;
            if let Some(d) = job.dataset_id {
                tx.lock_key(&format!("dataset:{d}")).await?;
            }
            let (present,): (i64,) = sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM models WHERE id = $1 AND tenant_id = $3)
                      * (CASE WHEN $2 IS NULL THEN 1 ELSE (SELECT COUNT(*) FROM datasets WHERE id = $2 AND tenant_id = $3) END)",
            )
            .bind(job.model_id.to_string())
            .bind(job.dataset_id.map(|d| d.to_string()))
            .bind(&job.tenant_id)
            .fetch_one(&mut *tx)
            .await?;
            if present == 0 {
                return Ok(Inserted::InputGone);
            }
            let row: JobRow = sqlx::query_as(
            "INSERT INTO jobs (id, model_id, pipeline, status, max_attempts, idempotency_key, request_hash, run_after, created_at, updated_at, dataset_id,
                               tenant_id, cache_key, webhook_url, webhook_status, webhook_next_at, artifact_ttl_ms, request_id, trace_parent)
             VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $7, $7, $8, $9, $10, $11, CASE WHEN $11 IS NULL THEN NULL ELSE 'pending' END, $7, $12, $13, $14) RETURNING *",
            )
            .bind(job.id.to_string())
            .bind(job.model_id.to_string())
            .bind(job.pipeline.to_string())
            .bind(job.max_attempts as i64)
            .bind(&idempotency_key)
            .bind(&job.request_hash)
            .bind(now)
            .bind(job.dataset_id.map(|d| d.to_string()))
            .bind(&job.tenant_id)
            .bind(&job.cache_key)
            .bind(&job.webhook_url)
            .bind(job.artifact_ttl_ms)
            .bind(&job.request_id)
            .bind(&job.trace_parent)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Inserted::Row(Box::new(row)))
        }.await);
        match inserted {
            Ok(Inserted::Row(row)) => Ok(Created::New((*row).try_into()?)),
            Ok(Inserted::InputGone) => Ok(Created::InputGone),
            Ok(Inserted::QueueFull(queued)) => Ok(Created::QueueFull(queued)),
            Err(e) if is_unique_violation(&e) && idempotency_key.is_some() => {
                let (row, hash): (JobRow, Option<String>) = on_pool!(&self.db, pool => {
                    let row: JobRow = sqlx::query_as("SELECT * FROM jobs WHERE idempotency_key = $1")
                        .bind(&idempotency_key)
                        .fetch_one(pool)
                        .await?;
                    let (hash,): (Option<String>,) =
                        sqlx::query_as("SELECT request_hash FROM jobs WHERE idempotency_key = $1")
                            .bind(&idempotency_key)
                            .fetch_one(pool)
                            .await?;
                    (row, hash)
                });
                if hash.as_deref() == Some(job.request_hash.as_str()) {
                    Ok(Created::Replayed(row.try_into()?))
                } else {
                    Ok(Created::KeyReused)
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get_job(&self, tenant: &str, id: Uuid) -> Result<Option<JobRecord>> {
        let row: Option<JobRow> = on_pool!(&self.db, pool => sqlx::query_as("SELECT * FROM jobs WHERE id = $1 AND tenant_id = $2")
            .bind(id.to_string())
            .bind(tenant)
            .fetch_optional(pool)
            .await)?;
        row.map(TryInto::try_into).transpose()
    }

    /// A job by id alone, for code that already holds the job's tenant (workers, streams).
    pub async fn job_by_id(&self, id: Uuid) -> Result<Option<JobRecord>> {
        let row: Option<JobRow> = on_pool!(&self.db, pool => sqlx::query_as("SELECT * FROM jobs WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(pool)
            .await)?;
        row.map(TryInto::try_into).transpose()
    }

    /// Newest first.
    pub async fn list_jobs(&self, f: &JobFilter) -> Result<Vec<JobRecord>> {
        let rows: Vec<JobRow> = on_pool!(&self.db, pool => sqlx::query_as(
            "SELECT * FROM jobs WHERE tenant_id = $5 AND ($1 IS NULL OR status = $1) AND ($2 IS NULL OR model_id = $2)
             AND ($3 IS NULL OR id < $3) AND ($6 IS NULL OR pipeline LIKE $6)
             AND ($7 IS NULL OR created_at >= $7) AND ($8 IS NULL OR created_at < $8)
             ORDER BY id DESC LIMIT $4",
        )
        .bind(f.status.map(JobStatus::as_str))
        .bind(f.model_id.map(|m| m.to_string()))
        .bind(f.after.map(|a| a.to_string()))
        .bind(f.limit as i64)
        .bind(&f.tenant_id)
        // Pipelines are stored as compact JSON, so a step's op reads `"op":"<op>"`.
        .bind(f.op.as_ref().map(|op| format!("%\"op\":\"{op}\"%")))
        .bind(f.created_after)
        .bind(f.created_before)
        .fetch_all(pool)
        .await)?;
        convert(rows)
    }

    /// Whether the attempt with `token` still holds the job's lease.
    pub async fn holds_lease(&self, id: Uuid, token: Uuid) -> Result<bool> {
        let (n,): (i64,) = on_pool!(&self.db, pool => sqlx::query_as(
            "SELECT COUNT(*) FROM jobs WHERE id = $1 AND lease_token = $2 AND status = 'running'",
        )
        .bind(id.to_string())
        .bind(token.to_string())
        .fetch_one(pool)
        .await)?;
        Ok(n > 0)
    }

    /// The metrics of a succeeded job (per-tensor figures included), kept apart from its row.
    pub async fn job_metrics(&self, id: Uuid) -> Result<Option<Value>> {
        let row: Option<(String,)> = on_pool!(&self.db, pool => sqlx::query_as("SELECT metrics FROM job_metrics WHERE job_id = $1")
            .bind(id.to_string())
            .fetch_optional(pool)
            .await)?;
        row.map(|(m,)| super::rows::json(&m)).transpose()
    }

    pub async fn count_jobs_by_status(&self) -> Result<Vec<(String, i64)>> {
        Ok(
            on_pool!(&self.db, pool => sqlx::query_as("SELECT status, COUNT(*) FROM jobs GROUP BY status")
            .fetch_all(pool)
            .await)?,
        )
    }

    /// Queued jobs stop at once; running ones are asked to stop at their next checkpoint.
    /// Returns the job as it now stands, or None if there is no such job.
    pub async fn cancel_job(&self, tenant: &str, id: Uuid) -> Result<Option<JobRecord>> {
        let now = self.clock_ms().await?;
        on_pool!(&self.db, pool => {
            sqlx::query("UPDATE jobs SET status = 'cancelled', finished_at = $2, updated_at = $2 WHERE id = $1 AND status = 'queued' AND tenant_id = $3")
                .bind(id.to_string())
                .bind(now)
                .bind(tenant)
                .execute(pool)
                .await?;
            sqlx::query("UPDATE jobs SET cancel_requested = TRUE, updated_at = $2 WHERE id = $1 AND status = 'running' AND tenant_id = $3")
                .bind(id.to_string())
                .bind(now)
                .bind(tenant)
                .execute(pool)
                .await?;
        });
        self.get_job(tenant, id).await
    }

    /// Claims a runnable job, tenants taking turns (see `FAIR_ORDER`): a queued one whose
    /// backoff has passed, or a running one whose worker stopped renewing its lease.
    pub async fn claim_job(
        &self,
        worker: &str,
        lease_ms: i64,
        max_running_per_tenant: i64,
    ) -> Result<Option<Lease>> {
        let now = self.clock_ms().await?;
        let token = Uuid::new_v4();
        let sql = match self.db {
            Db::Sqlite(_) => format!(
                "UPDATE jobs SET {CLAIM_SET} WHERE id = (SELECT id FROM jobs WHERE {CLAIMABLE} ORDER BY {FAIR_ORDER} LIMIT 1) RETURNING *"
            ),
            Db::Postgres(_) => format!(
                "UPDATE jobs SET {CLAIM_SET} WHERE id = (SELECT id FROM jobs WHERE {CLAIMABLE} ORDER BY {FAIR_ORDER} LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING *"
            ),
        };
        macro_rules! claim {
            () => {
                sqlx::query_as(&sql)
                    .bind(token.to_string())
                    .bind(worker)
                    .bind(now + lease_ms)
                    .bind(now)
                    .bind(max_running_per_tenant)
            };
        }
        let row: Option<JobRow> = match &self.db {
            Db::Sqlite(pool) => claim!().fetch_optional(pool).await?,
            Db::Postgres(pool) => {
                // Claims take turns, so that the running-jobs count each one reads includes the
                // claim committed just before it (two at the same instant would both see room
                // for one more). SQLite's single writer already orders them.
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(CLAIM_LOCK)
                    .execute(&mut *tx)
                    .await?;
                let row = claim!().fetch_optional(&mut *tx).await?;
                tx.commit().await?;
                row
            }
        };
        Ok(row
            .map(JobRecord::try_from)
            .transpose()?
            .map(|job| Lease { job, token }))
    }

    /// Settles running jobs whose lease ran out and that cannot be claimed again: cancelled
    /// if a cancel was asked for, failed if no attempts are left. Returns how many.
    pub async fn reap_expired(&self, error: &(dyn Fn(u32) -> Value + Sync)) -> Result<u64> {
        let now = self.clock_ms().await?;
        let cancelled = on_pool!(&self.db, pool => sqlx::query(
            "UPDATE jobs SET status = 'cancelled', finished_at = $1, updated_at = $1, lease_token = NULL, lease_expires_at = NULL
             WHERE status = 'running' AND lease_expires_at < $1 AND cancel_requested = TRUE",
        )
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected());
        let exhausted: Vec<(String, i64)> = on_pool!(&self.db, pool => sqlx::query_as(
            "SELECT id, attempts FROM jobs WHERE status = 'running' AND lease_expires_at < $1 AND attempts >= max_attempts",
        )
        .bind(now)
        .fetch_all(pool)
        .await)?;
        let mut failed = 0;
        for (id, attempts) in exhausted {
            failed += on_pool!(&self.db, pool => sqlx::query(
                "UPDATE jobs SET status = 'failed', error = $2, finished_at = $3, updated_at = $3, lease_token = NULL, lease_expires_at = NULL
                 WHERE id = $1 AND status = 'running' AND lease_expires_at < $3",
            )
            .bind(&id)
            .bind(error(attempts as u32).to_string())
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected());
        }
        Ok(cancelled + failed)
    }

    /// Extends the lease. None: the lease is lost. Some(true): a cancel was asked for.
    pub async fn heartbeat(&self, id: Uuid, token: Uuid, lease_ms: i64) -> Result<Option<bool>> {
        let now = self.clock_ms().await?;
        let row: Option<(bool,)> = on_pool!(&self.db, pool => sqlx::query_as(
            "UPDATE jobs SET lease_expires_at = $3, updated_at = $4 WHERE id = $1 AND lease_token = $2 AND status = 'running'
             RETURNING cancel_requested",
        )
        .bind(id.to_string())
        .bind(token.to_string())
        .bind(now + lease_ms)
        .bind(now)
        .fetch_optional(pool)
        .await)?;
        Ok(row.map(|(c,)| c))
    }

    pub async fn set_progress(
        &self,
        id: Uuid,
        token: Uuid,
        progress: f64,
        detail: Option<&ProgressDetail>,
    ) -> Result<bool> {
        let now = self.clock_ms().await?;
        let n = on_pool!(&self.db, pool => sqlx::query(
            "UPDATE jobs SET progress = $3, updated_at = $4, progress_detail = COALESCE($5, progress_detail) WHERE id = $1 AND lease_token = $2 AND status = 'running'",
        )
        .bind(id.to_string())
        .bind(token.to_string())
        .bind(progress)
        .bind(now)
        .bind(detail.map(|d| serde_json::to_string(d).expect("a progress detail serialises")))
        .execute(pool)
        .await?
        .rows_affected());
        Ok(n > 0)
    }

    /// Ends an attempt. Returns false, changing nothing, if `token` no longer holds the lease.
    pub async fn finish_job(&self, id: Uuid, token: Uuid, finish: Finish) -> Result<bool> {
        let now = self.clock_ms().await?;
        const FENCE: &str = "WHERE id = $1 AND lease_token = $2 AND status = 'running'";
        // lease_owner stays: it tells which worker ran the job last.
        const UNLEASE: &str = "lease_token = NULL, lease_expires_at = NULL";
        let (id_s, token_s) = (id.to_string(), token.to_string());
        let updated = on_pool!(&self.db, pool => match &finish {
            Finish::Succeeded { metrics, artifacts } => {
                let mut tx = pool.begin_write().await?;
                let n = sqlx::query(&format!(
                    "UPDATE jobs SET status = 'succeeded', progress = 1, error = NULL, finished_at = $3, updated_at = $3, {UNLEASE} {FENCE}"
                ))
                .bind(&id_s)
                .bind(&token_s)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n == 1 {
                    sqlx::query("INSERT INTO job_metrics (job_id, metrics) VALUES ($1, $2)")
                        .bind(&id_s)
                        .bind(metrics.to_string())
                        .execute(&mut *tx)
                        .await?;
                    for a in artifacts {
                        sqlx::query(
                            "INSERT INTO artifacts (id, job_id, kind, file_name, content_type, size_bytes, sha256, blob_key, created_at, tenant_id, expires_at)
                             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, tenant_id, $9 + artifact_ttl_ms FROM jobs WHERE id = $2",
                        )
                        .bind(a.id.to_string())
                        .bind(&id_s)
                        .bind(&a.kind)
                        .bind(&a.file_name)
                        .bind(&a.content_type)
                        .bind(a.size_bytes as i64)
                        .bind(&a.sha256)
                        .bind(&a.blob_key)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                }
                n
            }
            Finish::Failed { error } => sqlx::query(&format!(
                "UPDATE jobs SET status = 'failed', error = $3, finished_at = $4, updated_at = $4, {UNLEASE} {FENCE}"
            ))
            .bind(&id_s)
            .bind(&token_s)
            .bind(error.to_string())
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected(),
            Finish::Retry { error, delay_ms } => sqlx::query(&format!(
                "UPDATE jobs SET status = 'queued', error = $3, run_after = $4, updated_at = $5, progress = 0, {UNLEASE} {FENCE}"
            ))
            .bind(&id_s)
            .bind(&token_s)
            .bind(error.to_string())
            .bind(now + delay_ms)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected(),
            Finish::Cancelled => sqlx::query(&format!(
                "UPDATE jobs SET status = 'cancelled', finished_at = $3, updated_at = $3, {UNLEASE} {FENCE}"
            ))
            .bind(&id_s)
            .bind(&token_s)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected(),
            Finish::Deferred { error, delay_ms } => sqlx::query(&format!(
                "UPDATE jobs SET status = 'queued', attempts = attempts - 1, error = $3, run_after = $4, updated_at = $5, progress = 0, {UNLEASE} {FENCE}"
            ))
            .bind(&id_s)
            .bind(&token_s)
            .bind(error.to_string())
            .bind(now + delay_ms)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected(),
            Finish::Released => sqlx::query(&format!(
                "UPDATE jobs SET status = 'queued', attempts = attempts - 1, run_after = $3, updated_at = $3, progress = 0, {UNLEASE} {FENCE}"
            ))
            .bind(&id_s)
            .bind(&token_s)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected(),
        });
        Ok(updated == 1)
    }
}
