//! A job's log: the lines its processes wrote and what the workers said about its attempts,
//! numbered in the order they were recorded. Capped per job, so a chatty job cannot fill the
//! database; the last line then says that the rest was dropped.

use uuid::Uuid;

use super::{on_pool, BeginWrite, Result, Store};

/// Lines kept per job; the one after them says the rest was dropped.
pub const MAX_LINES: i64 = 20_000;
/// Longer lines are cut (on a character boundary) to this many bytes.
const MAX_LINE_BYTES: usize = 4096;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LogLine {
    pub seq: i64,
    pub attempt: i64,
    pub at: i64,
    pub line: String,
}

impl Store {
    /// Appends `lines` of `attempt` to job `id`'s log.
    pub async fn append_job_log(&self, id: Uuid, attempt: u32, lines: &[String]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let now = self.clock_ms().await?;
        on_pool!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let (last,): (i64,) =
                sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM job_logs WHERE job_id = $1")
                    .bind(id.to_string())
                    .fetch_one(&mut *tx)
                    .await?;
            let mut seq = last;
            for line in lines {
                if seq > MAX_LINES {
                    break;
                }
                seq += 1;
                let text = if seq > MAX_LINES {
                    format!("(the log reached {MAX_LINES} lines; later lines are dropped)")
                } else {
                    cut(line).to_owned()
                };
                sqlx::query("INSERT INTO job_logs (job_id, seq, attempt, at, line) VALUES ($1, $2, $3, $4, $5)")
                    .bind(id.to_string())
                    .bind(seq)
                    .bind(i64::from(attempt))
                    .bind(now)
                    .bind(text)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Up to `limit` lines of job `id`'s log after line `after`, in order.
    pub async fn job_log(&self, id: Uuid, after: i64, limit: i64) -> Result<Vec<LogLine>> {
        let rows = on_pool!(&self.db, pool => sqlx::query_as::<_, LogLine>(
            "SELECT seq, attempt, at, line FROM job_logs WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(id.to_string())
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await)?;
        Ok(rows)
    }
}

fn cut(line: &str) -> &str {
    if line.len() <= MAX_LINE_BYTES {
        return line;
    }
    let mut end = MAX_LINE_BYTES;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}
