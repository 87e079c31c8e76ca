//! One attempt at one job: claim, run with a live lease, record the outcome (fenced).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::outputs::{store_outputs, JobOutputs};
use super::protocol::{InputModel, JobSpec};
use super::{Outcome, Worker};
use crate::compress::{Control, Interrupt};
use crate::domain::{Code, Pipeline, Problem};
use crate::store::{Finish, Lease, StoreError};
use tracing::Instrument;

/// How long a job whose attempt met broken storage waits before it is tried again.
const STORAGE_RETRY: Duration = Duration::from_secs(5);

/// Why an attempt did not produce a result.
pub(super) enum AttemptError {
    /// The job can never succeed as asked.
    Permanent(Problem),
    /// Something outside the job failed; another attempt may succeed.
    Transient(Problem),
    Interrupted(Interrupt),
}

pub(super) fn io_problem(e: &std::io::Error) -> Problem {
    Code::IoError.problem(format!("reading or writing files failed: {e}"))
}

fn store_problem(e: &StoreError) -> Problem {
    Code::StoreError.problem(e.to_string())
}

impl Worker {
    /// Claims and runs one job, if any is waiting. Tests call this directly to drive the
    /// queue one step at a time.
    pub async fn run_next_job(&self) -> Result<Outcome, StoreError> {
        let store = &self.inner.store;
        store
            .reap_expired(&|attempts| {
                Code::WorkerLost.problem(format!("the worker running this job stopped answering {attempts} times (process killed or machine lost); giving up"),
                )
                .to_json()
            })
            .await?;
        // A full, read-only or missing disk would fail every job it took; take none until the
        // disk is back (readiness reports the same).
        if let Err(e) = self.inner.storage.check().await {
            tracing::warn!(error = e, "file storage is unusable; not taking jobs");
            return Ok(Outcome::StorageUnavailable);
        }
        let lease_ms = self.inner.settings.lease.as_millis() as i64;
        let Some(lease) = store
            .claim_job(
                self.id(),
                lease_ms,
                self.inner.settings.max_running_per_tenant,
            )
            .await?
        else {
            return Ok(Outcome::Idle);
        };
        let span = tracing::info_span!(
            "job",
            job_id = %lease.job.id,
            model_id = %lease.job.model_id,
            attempt = lease.job.attempts,
            request_id = lease.job.request_id.as_deref().unwrap_or("")
        );
        crate::otlp::continue_trace(&span, lease.job.trace_parent.as_deref());
        self.run_claimed(lease).instrument(span).await
    }

    async fn run_claimed(&self, lease: Lease) -> Result<Outcome, StoreError> {
        let started = Instant::now();
        let (id, token) = (lease.job.id, lease.token);
        tracing::info!(worker = self.id(), "job claimed");
        let attempt = lease.job.attempts;
        self.job_log(
            id,
            attempt,
            format!(
                "attempt {attempt} of {} started on worker {}",
                lease.job.max_attempts,
                self.id()
            ),
        )
        .await;
        let op = first_op(&lease.job.pipeline);
        if let (1, Some(started_at)) = (lease.job.attempts, lease.job.started_at) {
            let waited = (started_at - lease.job.created_at)
                .num_milliseconds()
                .max(0);
            metrics::histogram!("compressd_job_queue_wait_seconds", "op" => op.clone())
                .record(waited as f64 / 1e3);
        }
        metrics::gauge!("compressd_workers_busy").increment(1.0);
        let control = Arc::new(Control::new(self.inner.settings.chunk_delay));
        self.inner
            .running
            .lock()
            .expect("lock")
            .insert(id, control.clone());
        let result = self.attempt(&lease, &control).await;
        self.inner.running.lock().expect("lock").remove(&id);
        metrics::gauge!("compressd_workers_busy").decrement(1.0);

        let (finish, outcome, stored) = match result {
            Ok(outputs) => {
                let stored = outputs
                    .artifacts
                    .iter()
                    .map(|a| a.blob_key.clone())
                    .collect();
                let finish = Finish::Succeeded {
                    metrics: outputs.metrics,
                    artifacts: outputs.artifacts,
                };
                (Some(finish), Outcome::Succeeded(id), stored)
            }
            Err(AttemptError::Interrupted(Interrupt::LeaseLost)) => {
                (None, Outcome::LeaseLost(id), vec![])
            }
            Err(AttemptError::Interrupted(Interrupt::Cancelled)) => {
                (Some(Finish::Cancelled), Outcome::Cancelled(id), vec![])
            }
            Err(AttemptError::Interrupted(Interrupt::Shutdown)) => {
                (Some(Finish::Released), Outcome::Released(id), vec![])
            }
            Err(AttemptError::Permanent(problem)) => {
                tracing::warn!(detail = %problem.detail, "job failed");
                (
                    Some(Finish::Failed {
                        error: problem.to_json(),
                    }),
                    Outcome::Failed(id),
                    vec![],
                )
            }
            Err(AttemptError::Transient(problem)) if self.storage_failed().await => {
                tracing::warn!(detail = %problem.detail, "file storage failed under the job; it waits without losing an attempt");
                let finish = Finish::Deferred {
                    error: problem.to_json(),
                    delay_ms: STORAGE_RETRY.as_millis() as i64,
                };
                (Some(finish), Outcome::Deferred(id), vec![])
            }
            Err(AttemptError::Transient(problem)) => {
                if lease.job.attempts >= lease.job.max_attempts {
                    let mut problem = problem;
                    problem.detail = format!(
                        "{} (gave up after {} attempts)",
                        problem.detail, lease.job.attempts
                    );
                    (
                        Some(Finish::Failed {
                            error: problem.to_json(),
                        }),
                        Outcome::Failed(id),
                        vec![],
                    )
                } else {
                    let delay = self.backoff(lease.job.attempts);
                    tracing::warn!(detail = %problem.detail, retry_in_ms = delay.as_millis() as u64, "attempt failed; will retry");
                    let finish = Finish::Retry {
                        error: problem.to_json(),
                        delay_ms: delay.as_millis() as i64,
                    };
                    (Some(finish), Outcome::Retrying(id), vec![])
                }
            }
        };
        let Some(finish) = finish else {
            tracing::warn!("lease lost; discarding this attempt");
            return Ok(Outcome::LeaseLost(id));
        };
        let said = said(&finish, attempt, started.elapsed());
        let recorded = self.record(id, token, finish, &stored).await;
        if !matches!(recorded, Ok(true)) {
            for key in stored {
                let _ = self.inner.blobs.delete(&key).await;
            }
            recorded?;
            tracing::warn!("lease lost before the result was recorded; discarded");
            return Ok(Outcome::LeaseLost(id));
        }
        let label = match outcome {
            Outcome::Succeeded(_) => "succeeded",
            Outcome::Failed(_) => "failed",
            Outcome::Retrying(_) => "retrying",
            Outcome::Cancelled(_) => "cancelled",
            Outcome::Released(_) => "released",
            Outcome::Deferred(_) => "deferred",
            Outcome::StorageUnavailable => "storage_unavailable",
            Outcome::Idle | Outcome::LeaseLost(_) => "lease_lost",
        };
        metrics::histogram!("compressd_job_duration_seconds", "outcome" => label, "op" => op)
            .record(started.elapsed().as_secs_f64());
        tracing::info!(
            outcome = label,
            seconds = started.elapsed().as_secs_f64(),
            "attempt finished"
        );
        self.job_log(id, attempt, said).await;
        Ok(outcome)
    }

    /// One line of the worker's in the job's own log; a log that cannot be written does not
    /// stop the job.
    pub(super) async fn job_log(&self, id: uuid::Uuid, attempt: u32, line: String) {
        if let Err(e) = self.inner.store.append_job_log(id, attempt, &[line]).await {
            tracing::warn!(error = %e, "could not write the job's log");
        }
    }

    /// Whether this process's own storage is what failed (checked afresh).
    async fn storage_failed(&self) -> bool {
        self.inner.storage.invalidate();
        self.inner.storage.check().await.is_err()
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let base = self.inner.settings.retry_base;
        let factor = 1u32 << attempts.saturating_sub(1).min(16);
        (base * factor).min(Duration::from_secs(60))
    }

    async fn attempt(
        &self,
        lease: &Lease,
        control: &Arc<Control>,
    ) -> Result<JobOutputs, AttemptError> {
        let store = &self.inner.store;
        let job = &lease.job;
        let pipeline: Pipeline = serde_json::from_value(job.pipeline.clone()).map_err(|e| {
            AttemptError::Permanent(
                Code::InvalidPipeline.problem(format!("stored pipeline no longer parses: {e}")),
            )
        })?;
        let model = store
            .get_model(&job.tenant_id, job.model_id)
            .await
            .map_err(|e| AttemptError::Transient(store_problem(&e)))?
            .ok_or_else(|| {
                AttemptError::Permanent(Code::ModelNotFound.problem(format!(
                    "model {} was deleted before the job ran",
                    job.model_id
                )))
            })?;
        let workdir =
            self.inner
                .settings
                .scratch_dir
                .join(format!("{}-{}", job.id, lease.token.simple()));
        tokio::fs::create_dir_all(&workdir)
            .await
            .map_err(|e| AttemptError::Transient(io_problem(&e)))?;
        let dataset = match job.dataset_id {
            Some(id) => Some(
                store
                    .get_dataset(&job.tenant_id, id)
                    .await
                    .map_err(|e| AttemptError::Transient(store_problem(&e)))?
                    .ok_or_else(|| {
                        AttemptError::Permanent(
                            Code::DatasetNotFound
                                .problem(format!("dataset {id} was deleted before the job ran")),
                        )
                    })?,
            ),
            None => None,
        };
        // Read back with the same checks the API ran; the job process parses it again.
        let architecture = model.architecture.clone();
        let result = async {
            let input = self
                .inner
                .inputs
                .fetch(self.inner.blobs.as_ref(), &model.blob_key, &workdir)
                .await
                .map_err(|e| AttemptError::Transient(io_problem(&e)))?;
            let data = match &dataset {
                Some(d) => Some((
                    self.inner
                        .inputs
                        .fetch(self.inner.blobs.as_ref(), &d.blob_key, &workdir)
                        .await
                        .map_err(|e| AttemptError::Transient(io_problem(&e)))?,
                    format!("evaluation split of dataset {} ('{}')", d.id, d.name),
                )),
                None => None,
            };
            let mut model_files = Vec::with_capacity(model.files.len());
            let mut held = Vec::with_capacity(model.files.len());
            for f in &model.files {
                let copy = self
                    .inner
                    .inputs
                    .fetch(self.inner.blobs.as_ref(), &f.blob_key, &workdir)
                    .await
                    .map_err(|e| AttemptError::Transient(io_problem(&e)))?;
                model_files.push((f.path.clone(), copy.path().to_owned()));
                held.push(copy);
            }
            let settings = &self.inner.settings;
            metrics::counter!("compressd_job_input_bytes_total", "op" => first_op(&job.pipeline))
                .increment(model.size_bytes);
            let spec = JobSpec {
                job_id: job.id,
                attempt: job.attempts,
                model: InputModel {
                    id: model.id,
                    name: model.name.clone(),
                    sha256: model.sha256.clone(),
                    size_bytes: model.size_bytes,
                    config: model.config.clone(),
                },
                model_file: input.path().to_owned(),
                model_format: model.format.clone(),
                model_files,
                dataset_summary: dataset.as_ref().map(|d| d.summary.clone()),
                dataset: data
                    .as_ref()
                    .map(|(f, label)| (f.path().to_owned(), label.clone())),
                architecture,
                pipeline: pipeline.to_json(),
                workdir: workdir.clone(),
                memory_budget: settings.memory_budget,
                chunk_delay_ms: settings.chunk_delay.as_millis() as u64,
                progress_interval_ms: settings.progress_interval.as_millis() as u64,
                log_format: settings.log_format.clone(),
                request_id: job.request_id.clone(),
                trace_parent: crate::otlp::current_traceparent(),
            };
            let prepared = self.run_job_process(lease, control, spec).await?;
            drop(held);
            store_outputs(&self.inner.blobs, lease, prepared)
                .await
                .map_err(|e| AttemptError::Transient(io_problem(&e)))
        }
        .await;
        let _ = tokio::fs::remove_dir_all(&workdir).await;
        result
    }

    /// Records the attempt's end, retrying while the store is briefly away (a database restart
    /// should not cost a finished job its result). A retry that finds the fence gone checks
    /// whether an earlier try committed after all.
    async fn record(
        &self,
        id: uuid::Uuid,
        token: uuid::Uuid,
        finish: Finish,
        stored: &[String],
    ) -> Result<bool, StoreError> {
        let store = &self.inner.store;
        let deadline = Instant::now() + self.inner.settings.lease;
        let mut recorded = store.finish_job(id, token, finish.clone()).await;
        let mut delay = std::time::Duration::from_millis(100);
        while let Err(e) = &recorded {
            if Instant::now() + delay >= deadline {
                break;
            }
            tracing::warn!(error = %e, "could not record the attempt's end; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_secs(2));
            recorded = store.finish_job(id, token, finish.clone()).await;
            if matches!(recorded, Ok(false)) {
                let committed = match (store.job_by_id(id).await, stored.first()) {
                    (Ok(Some(job)), Some(key))
                        if job.status == crate::domain::JobStatus::Succeeded =>
                    {
                        store
                            .artifacts_of_job(id)
                            .await
                            .is_ok_and(|a| a.iter().any(|a| &a.blob_key == key))
                    }
                    _ => false,
                };
                recorded = Ok(committed);
            }
        }
        recorded
    }
}

/// The op of a pipeline's first step: the label of the per-operation metrics.
fn first_op(pipeline: &serde_json::Value) -> String {
    pipeline
        .get(0)
        .and_then(|step| step.get("op"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or("none")
        .to_owned()
}

/// What the job's log says about how an attempt ended.
fn said(finish: &Finish, attempt: u32, took: Duration) -> String {
    let detail =
        |error: &serde_json::Value| error["detail"].as_str().unwrap_or("no detail").to_owned();
    match finish {
        Finish::Succeeded { .. } => format!(
            "attempt {attempt} succeeded in {:.1} s",
            took.as_secs_f64()
        ),
        Finish::Failed { error } => format!("attempt {attempt} failed: {}", detail(error)),
        Finish::Retry { error, delay_ms } => format!(
            "attempt {attempt} failed: {}; retrying in {:.1} s",
            detail(error),
            *delay_ms as f64 / 1e3
        ),
        Finish::Deferred { error, delay_ms } => format!(
            "file storage failed under attempt {attempt} ({}); the job waits {:.0} s, the attempt not counted",
            detail(error),
            *delay_ms as f64 / 1e3
        ),
        Finish::Cancelled => format!("attempt {attempt} stopped: the job was cancelled"),
        Finish::Released => format!(
            "attempt {attempt} released at shutdown; the job goes back to the queue, the attempt not counted"
        ),
    }
}
