//! The attempt's math runs in a process of its own (`compressd run-job`) with a heap limit,
//! so that an abort, a crash or an out-of-memory kill ends that process and not the server
//! with every other job in it. Meanwhile this side renews the lease, publishes progress and
//! passes on cancellation; afterwards it reads the result the process wrote, or, when the
//! process died without one, fails the job with the cause (quarantine: the same input would
//! die the same way on every retry).

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use super::attempt::{io_problem, AttemptError};
use super::protocol::{FromJob, JobResult, JobSpec, Prepared, ToJob};
use super::Worker;
use crate::compress::budget::human;
use crate::compress::{Control, Interrupt};
use crate::domain::Code;
use crate::store::Lease;

/// How long a job may take to reach a checkpoint after being asked to stop, before its
/// process is killed.
const CANCEL_WAIT: Duration = Duration::from_secs(30);
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);
/// The job process's last lines of output, kept to say why it died.
const TAIL_LINES: usize = 20;

impl Worker {
    pub(super) async fn run_job_process(
        &self,
        lease: &Lease,
        control: &Arc<Control>,
        spec: JobSpec,
    ) -> Result<Prepared, AttemptError> {
        let spec_path = JobSpec::path(&spec.workdir);
        let bytes = serde_json::to_vec(&spec)
            .map_err(|e| AttemptError::Transient(io_problem(&e.into())))?;
        tokio::fs::write(&spec_path, bytes)
            .await
            .map_err(|e| AttemptError::Transient(io_problem(&e)))?;
        let mut child = Command::new(&self.inner.settings.job_runner)
            .arg("run-job")
            .arg(&spec_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Printing a backtrace allocates; at the heap limit that deadlocks the process.
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            // A terminal's Ctrl-C goes to the server, which then stops its jobs in order.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                AttemptError::Transient(Code::IoError.problem(format!(
                    "could not start the job process {}: {e}",
                    self.inner.settings.job_runner.display()
                )))
            })?;
        let (watched, tail) = self.watch(lease, control, &mut child).await;
        let status = match watched {
            Watched::Exited(status) => status,
            Watched::Killed(why) => {
                let _ = child.kill().await;
                return Err(AttemptError::Interrupted(why));
            }
        };
        match tokio::fs::read(spec.result_path()).await {
            Ok(bytes) => match serde_json::from_slice::<JobResult>(&bytes) {
                Ok(result) => interpret(result),
                Err(e) => Err(died(
                    status,
                    &[format!("unreadable result: {e}")],
                    spec.memory_budget,
                )),
            },
            Err(_) => Err(died(status, &tail, spec.memory_budget)),
        }
    }

    /// Follows the job process until it exits or must be killed.
    async fn watch(
        &self,
        lease: &Lease,
        control: &Arc<Control>,
        child: &mut Child,
    ) -> (Watched, Vec<String>) {
        let (id, token) = (lease.job.id, lease.token);
        let store = &self.inner.store;
        let settings = &self.inner.settings;
        let mut stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut stderr = BufReader::new(child.stderr.take().expect("piped")).lines();
        let mut tail = VecDeque::new();
        let lease_ms = settings.lease.as_millis() as i64;
        let mut heartbeat = tokio::time::interval(settings.lease / 3);
        let mut publish = tokio::time::interval(settings.progress_interval);
        let mut poll = tokio::time::interval(Duration::from_millis(100));
        let (mut progress, mut detail, mut published) = (0.0f64, None, (-1.0f64, None));
        let mut asked: Option<(Interrupt, Instant)> = None;
        // The process's lines on their way to the job's log, written with each progress tick.
        let mut log = Vec::new();
        let (mut out_open, mut err_open) = (true, true);
        let status = loop {
            tokio::select! {
                status = child.wait(), if !out_open && !err_open => break Ok(status),
                line = stdout.next_line(), if out_open => match line {
                    Ok(Some(line)) => match serde_json::from_str::<FromJob>(&line) {
                        Ok(FromJob::Progress { progress: p, detail: d }) => {
                            progress = p;
                            if d.is_some() {
                                detail = d.map(|d| *d);
                            }
                        }
                        Ok(FromJob::Finished) => {}
                        Err(_) => {
                            log.push(line.clone());
                            keep(&mut tail, line);
                        }
                    },
                    _ => out_open = false,
                },
                line = stderr.next_line(), if err_open => match line {
                    Ok(Some(line)) => {
                        eprintln!("{line}");
                        log.push(line.clone());
                        keep(&mut tail, line);
                    }
                    _ => err_open = false,
                },
                _ = heartbeat.tick() => match store.heartbeat(id, token, lease_ms).await {
                    Ok(None) => control.interrupt(Interrupt::LeaseLost),
                    Ok(Some(true)) => control.interrupt(Interrupt::Cancelled),
                    Ok(Some(false)) => {}
                    // The lease runs on; if the store stays away it expires and the job moves on.
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                },
                _ = publish.tick() => {
                    self.flush_log(id, lease.job.attempts, &mut log).await;
                    let now = (progress, detail.clone());
                    if now != published && store.set_progress(id, token, now.0, now.1.as_ref()).await.unwrap_or(true) {
                        published = now;
                    }
                }
                _ = poll.tick() => {
                    match (control.interrupted(), asked) {
                        (Some(Interrupt::LeaseLost), _) => break Err(Interrupt::LeaseLost),
                        (Some(why), None) => {
                            let message = if why == Interrupt::Cancelled { ToJob::Cancel } else { ToJob::Shutdown };
                            send(&mut stdin, message).await;
                            asked = Some((why, Instant::now()));
                        }
                        (Some(_), Some((why, since))) => {
                            let wait = if why == Interrupt::Cancelled { CANCEL_WAIT } else { SHUTDOWN_WAIT };
                            if since.elapsed() > wait {
                                tracing::warn!(waited_s = wait.as_secs(), "the job did not reach a checkpoint in time; killing its process");
                                break Err(why);
                            }
                        }
                        (None, _) => {}
                    }
                }
            }
        };
        self.flush_log(id, lease.job.attempts, &mut log).await;
        let watched = match status {
            Ok(Ok(status)) => Watched::Exited(status),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "lost track of the job process");
                Watched::Killed(Interrupt::Shutdown)
            }
            Err(why) => Watched::Killed(why),
        };
        (watched, tail.into())
    }
}

impl Worker {
    async fn flush_log(&self, id: uuid::Uuid, attempt: u32, lines: &mut Vec<String>) {
        if lines.is_empty() {
            return;
        }
        if let Err(e) = self.inner.store.append_job_log(id, attempt, lines).await {
            tracing::warn!(error = %e, "could not write the job's log");
        }
        lines.clear();
    }
}

enum Watched {
    Exited(std::process::ExitStatus),
    Killed(Interrupt),
}

fn keep(tail: &mut VecDeque<String>, line: String) {
    if tail.len() == TAIL_LINES {
        tail.pop_front();
    }
    tail.push_back(line.chars().take(2000).collect());
}

async fn send(stdin: &mut Option<ChildStdin>, message: ToJob) {
    if let Some(pipe) = stdin {
        let mut line = serde_json::to_string(&message).expect("protocol messages serialise");
        line.push('\n');
        if pipe.write_all(line.as_bytes()).await.is_err() || pipe.flush().await.is_err() {
            *stdin = None;
        }
    }
}

fn interpret(result: JobResult) -> Result<Prepared, AttemptError> {
    match result {
        JobResult::Succeeded(prepared) => Ok(prepared),
        JobResult::InvalidModel { detail } => Err(AttemptError::Permanent(Code::InvalidModel.problem(detail))),
        JobResult::NotApplicable { detail } => {
            Err(AttemptError::Permanent(Code::PipelineNotApplicable.problem(detail)))
        }
        JobResult::Io { detail } => Err(AttemptError::Transient(
            Code::IoError.problem(format!("reading or writing files failed: {detail}")),
        )),
        JobResult::Cancelled => Err(AttemptError::Interrupted(Interrupt::Cancelled)),
        JobResult::Shutdown => Err(AttemptError::Interrupted(Interrupt::Shutdown)),
        JobResult::Panicked { detail } => Err(AttemptError::Permanent(Code::Internal.problem(format!(
            "the pipeline crashed on this model ({detail}); this is a bug in compressd, please report it"
        )))),
    }
}

/// The job process ended without a result: it was killed or aborted. Retrying would run the
/// same input into the same end, so the job fails with the cause.
fn died(status: std::process::ExitStatus, tail: &[String], budget: u64) -> AttemptError {
    use std::os::unix::process::ExitStatusExt;
    let how = match (status.signal(), status.code()) {
        (Some(9), _) => {
            "was killed (SIGKILL; most often the kernel's out-of-memory killer)".to_owned()
        }
        (Some(6), _) => "aborted (SIGABRT)".to_owned(),
        (Some(s), _) => format!("was killed by signal {s}"),
        (None, Some(c)) => format!("exited with status {c} without a result"),
        (None, None) => "ended without a result".to_owned(),
    };
    if let Some(line) = tail
        .iter()
        .rev()
        .find(|l| l.contains("memory allocation of"))
    {
        return AttemptError::Permanent(Code::OverMemoryBudget.problem(format!(
            "the job needed more memory than its budget of {} (COMPRESSD_JOB_MEMORY_BYTES) and its process {how}: {line}; use a smaller model, dataset or batch, or raise the budget",
            human(budget)
        )));
    }
    let last = tail
        .last()
        .map_or(String::new(), |l| format!("; its last words: {l}"));
    tracing::error!(how, "the job process died");
    AttemptError::Permanent(Code::JobCrashed.problem(format!(
        "the job's process {how}{last}; the job is not retried, since the same input would end the same way"
    )))
}
