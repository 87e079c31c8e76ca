//! Job changes as the database announces them: on PostgreSQL a trigger on `jobs` notifies the
//! channel `compressd_jobs` with the job's id, and one listener per process passes the ids on
//! to whoever follows a job, so an event stream on any API replica wakes as soon as any worker
//! moves the job. SQLite has no such channel; its followers poll.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Db, Store};

const CHANNEL: &str = "compressd_jobs";

/// The ids of jobs that changed, for every follower in this process.
#[derive(Clone, Debug)]
pub struct JobChanges {
    tx: broadcast::Sender<Uuid>,
}

impl JobChanges {
    pub fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        self.tx.subscribe()
    }
}

/// Waits until `job` is announced as changed. Returns at once when announcements were missed
/// (the follower lagged), so that the caller looks; never returns once the listener is gone,
/// leaving the caller's fallback poll to it.
pub async fn changed(rx: &mut broadcast::Receiver<Uuid>, job: Uuid) {
    loop {
        match rx.recv().await {
            Ok(id) if id == job => return,
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

impl Store {
    /// Starts listening for job changes, until `shutdown`; None where the store announces
    /// none (SQLite).
    pub fn job_changes(&self, shutdown: CancellationToken) -> Option<JobChanges> {
        let Db::Postgres(pool) = &self.db else {
            return None;
        };
        let (tx, _) = broadcast::channel(1024);
        tokio::spawn(listen(pool.clone(), tx.clone(), shutdown));
        Some(JobChanges { tx })
    }
}

async fn listen(pool: PgPool, tx: broadcast::Sender<Uuid>, shutdown: CancellationToken) {
    loop {
        let mut listener = match subscribe(&pool).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for job changes; event streams poll meanwhile");
                if pause(&shutdown).await {
                    return;
                }
                continue;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                note = listener.recv() => match note {
                    Ok(note) => {
                        if let Ok(id) = Uuid::parse_str(note.payload()) {
                            // No follower is listening: nothing to wake.
                            let _ = tx.send(id);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "lost the job-change channel; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}

async fn subscribe(pool: &PgPool) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// A second's pause before trying again; true when the process is shutting down instead.
async fn pause(shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(Duration::from_secs(1)) => false,
    }
}
