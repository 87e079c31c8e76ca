//! The webhook queue: each job that names a `webhook_url` owes one delivery once it is
//! terminal. A claim moves `webhook_next_at` forward by a lease, so a sender that dies
//! mid-delivery leaves it to be retried (receivers deduplicate on the delivery id).

use uuid::Uuid;

use super::job_record::{JobRecord, JobRow};
use super::{on_pool, Db, Result, Store};

const DUE: &str = "webhook_status = 'pending' AND status IN ('succeeded', 'failed', 'cancelled') AND webhook_next_at <= $2";

/// How a delivery attempt went.
pub enum Delivery {
    Delivered,
    /// Try again at `retry_at` (Unix ms), or give up when None.
    Failed {
        error: String,
        retry_at: Option<i64>,
    },
}

impl Store {
    /// Claims the next due delivery for `lease_ms`, of a tenant with fewer than `per_tenant`
    /// deliveries in flight; the returned job carries its attempt count.
    pub async fn claim_webhook(&self, lease_ms: i64, per_tenant: i64) -> Result<Option<JobRecord>> {
        let now = self.clock_ms().await?;
        let lock = match self.db {
            Db::Sqlite(_) => "",
            Db::Postgres(_) => "FOR UPDATE SKIP LOCKED",
        };
        let sql = format!(
            "UPDATE jobs SET webhook_next_at = $1, webhook_claimed_until = $1, webhook_attempts = webhook_attempts + 1
             WHERE id = (SELECT id FROM jobs WHERE {DUE}
                 AND (SELECT COUNT(*) FROM jobs s WHERE s.tenant_id = jobs.tenant_id AND s.webhook_status = 'pending'
                      AND s.webhook_claimed_until > $2) < $3
                 ORDER BY webhook_next_at LIMIT 1 {lock}) AND {DUE}
             RETURNING *"
        );
        let row: Option<JobRow> = on_pool!(&self.db, pool => sqlx::query_as(&sql)
            .bind(now + lease_ms)
            .bind(now)
            .bind(per_tenant)
            .fetch_optional(pool)
            .await)?;
        row.map(TryInto::try_into).transpose()
    }

    pub async fn record_webhook(&self, job: Uuid, outcome: Delivery) -> Result<()> {
        let (status, error, next) = match outcome {
            Delivery::Delivered => ("delivered", None, None),
            Delivery::Failed {
                error,
                retry_at: Some(at),
            } => ("pending", Some(error), Some(at)),
            Delivery::Failed {
                error,
                retry_at: None,
            } => ("failed", Some(error), None),
        };
        on_pool!(&self.db, pool => sqlx::query(
            "UPDATE jobs SET webhook_status = $2, webhook_error = $3, webhook_next_at = COALESCE($4, webhook_next_at), webhook_claimed_until = NULL WHERE id = $1",
        )
        .bind(job.to_string())
        .bind(status)
        .bind(error)
        .bind(next)
        .execute(pool)
        .await
        .map(drop))?;
        Ok(())
    }
}
