//! The results cache: a job whose model bytes, dataset bytes and canonical pipeline match a
//! finished job of the same tenant is answered with that job's artifacts at once.

use uuid::Uuid;

use super::job_record::{JobRecord, JobRow};
use super::jobs::CreateJob;
use super::{on_pool, unreferenced, BeginWrite, KeyLock, Result, Store};

impl Store {
    /// The newest succeeded job with this cache key whose artifacts are all still kept.
    pub async fn cache_source(&self, tenant: &str, cache_key: &str) -> Result<Option<JobRecord>> {
        let row: Option<JobRow> = on_pool!(&self.db, pool => sqlx::query_as(
            "SELECT * FROM jobs j WHERE j.tenant_id = $1 AND j.cache_key = $2 AND j.status = 'succeeded'
               AND EXISTS (SELECT 1 FROM artifacts a WHERE a.job_id = j.id)
               AND NOT EXISTS (SELECT 1 FROM artifacts a WHERE a.job_id = j.id AND a.expires_at IS NOT NULL)
             ORDER BY j.id DESC LIMIT 1",
        )
        .bind(tenant)
        .bind(cache_key)
        .fetch_optional(pool)
        .await)?;
        row.map(TryInto::try_into).transpose()
    }

    /// Records `job` as already succeeded with `source`'s metrics and (shared) artifact files,
    /// in one transaction; None (nothing recorded) when the source lost its artifacts
    /// meanwhile.
    pub async fn insert_cached_job(
        &self,
        job: &CreateJob,
        source: &JobRecord,
    ) -> Result<Option<JobRecord>> {
        let now = self.clock_ms().await?;
        let (id, source_id) = (job.id.to_string(), source.id.to_string());
        let row: JobRow = on_pool!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let row: JobRow = sqlx::query_as(
                "INSERT INTO jobs (id, model_id, pipeline, status, progress, max_attempts, request_hash, run_after, created_at, updated_at,
                                   started_at, finished_at, dataset_id, tenant_id, cache_key, cached_from, webhook_url,
                                   webhook_status, webhook_next_at, artifact_ttl_ms, request_id)
                 VALUES ($1, $2, $3, 'succeeded', 1, $4, $5, $6, $6, $6, $6, $6, $7, $8, $9, $10,
                         $11, CASE WHEN $11 IS NULL THEN NULL ELSE 'pending' END, $6, $12, $13)
                 RETURNING *",
            )
            .bind(&id)
            .bind(job.model_id.to_string())
            .bind(job.pipeline.to_string())
            .bind(job.max_attempts as i64)
            .bind(&job.request_hash)
            .bind(now)
            .bind(job.dataset_id.map(|d| d.to_string()))
            .bind(&job.tenant_id)
            .bind(&job.cache_key)
            .bind(&source_id)
            .bind(&job.webhook_url)
            .bind(job.artifact_ttl_ms)
            .bind(&job.request_id)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO job_metrics (job_id, metrics) SELECT $1, metrics FROM job_metrics WHERE job_id = $2")
                .bind(&id)
                .bind(&source_id)
                .execute(&mut *tx)
                .await?;
            let artifacts: Vec<(String, String)> = sqlx::query_as("SELECT id, blob_key FROM artifacts WHERE job_id = $1 ORDER BY id")
                .bind(&source_id)
                .fetch_all(&mut *tx)
                .await?;
            if artifacts.is_empty() {
                return Ok(None);
            }
            // A delete of the source job removes its rows and then, under these same locks
            // (taken in one order by everyone), the files no row names: copy only rows that
            // are still there once the locks are held.
            let mut keys: Vec<&String> = artifacts.iter().map(|(_, k)| k).collect();
            keys.sort();
            for key in keys {
                tx.lock_key(key).await?;
            }
            for (artifact, _) in &artifacts {
                let copied = sqlx::query(
                    "INSERT INTO artifacts (id, job_id, kind, file_name, content_type, size_bytes, sha256, blob_key, created_at, tenant_id, expires_at)
                     SELECT $1, $2, kind, file_name, content_type, size_bytes, sha256, blob_key, $3, tenant_id, $3 + $4
                     FROM artifacts WHERE id = $5",
                )
                .bind(Uuid::now_v7().to_string())
                .bind(&id)
                .bind(now)
                .bind(job.artifact_ttl_ms)
                .bind(artifact)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if copied == 0 {
                    return Ok(None);
                }
            }
            tx.commit().await?;
            row
        });
        row.try_into().map(Some)
    }

    /// Queued jobs of a tenant, for its queue limit.
    pub async fn queued_jobs(&self, tenant: &str) -> Result<i64> {
        let (n,): (i64,) = on_pool!(&self.db, pool => sqlx::query_as(
            "SELECT COUNT(*) FROM jobs WHERE tenant_id = $1 AND status = 'queued'",
        )
        .bind(tenant)
        .fetch_one(pool)
        .await)?;
        Ok(n)
    }

    /// Removes a finished job and its artifact rows; returns the blob keys no row references
    /// any more, or None if the tenant has no such job.
    pub async fn delete_job(&self, tenant: &str, id: Uuid) -> Result<Option<Vec<String>>> {
        let id = id.to_string();
        on_pool!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let found: Option<(String,)> = sqlx::query_as(
                "SELECT id FROM jobs WHERE id = $1 AND tenant_id = $2 AND status IN ('succeeded', 'failed', 'cancelled')",
            )
            .bind(&id)
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
            if found.is_none() {
                return Ok(None);
            }
            let keys: Vec<(String,)> = sqlx::query_as("DELETE FROM artifacts WHERE job_id = $1 RETURNING blob_key")
                .bind(&id)
                .fetch_all(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM job_metrics WHERE job_id = $1")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM jobs WHERE id = $1")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            let released = unreferenced!(tx, keys);
            tx.commit().await?;
            Ok(Some(released))
        })
    }
}
