//! A fixed set of worker loops, and how they stop: finish what runs within the grace period,
//! then hand the rest back to the queue.

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Outcome, Worker};
use crate::compress::Interrupt;

pub struct WorkerPool {
    worker: Worker,
    stop: CancellationToken,
    loops: JoinSet<()>,
}

impl WorkerPool {
    pub fn start(worker: Worker, count: usize, poll: Duration) -> Self {
        let stop = CancellationToken::new();
        let mut loops = JoinSet::new();
        for _ in 0..count {
            let (worker, stop) = (worker.clone(), stop.clone());
            loops.spawn(async move { work_loop(worker, stop, poll).await });
        }
        WorkerPool {
            worker,
            stop,
            loops,
        }
    }

    /// Stops claiming; waits up to `grace` for running jobs, then releases them.
    pub async fn shutdown(mut self, grace: Duration) {
        self.stop.cancel();
        let drain = async { while self.loops.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!(
                running = self.worker.running_jobs(),
                "grace period over; releasing running jobs back to the queue"
            );
            self.worker.interrupt_all(Interrupt::Shutdown);
            while self.loops.join_next().await.is_some() {}
        }
    }
}

async fn work_loop(worker: Worker, stop: CancellationToken, poll: Duration) {
    while !stop.is_cancelled() {
        let idle = match worker.run_next_job().await {
            Ok(Outcome::Idle | Outcome::StorageUnavailable) => true,
            Ok(_) => false,
            Err(e) => {
                tracing::error!(error = %e, "worker could not reach the store");
                true
            }
        };
        if idle {
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = stop.cancelled() => {}
            }
        }
    }
}
