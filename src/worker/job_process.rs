//! The job process: `compressd run-job <spec>`, started by a worker for one attempt. It runs
//! the pipeline under a heap limit, so that a job that asks for more memory than it may have,
//! or crashes, takes down only itself; the worker that started it records what happened.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::prepare::prepare;
use super::protocol::{FromJob, JobResult, JobSpec, ToJob};
use crate::compress::nn::{load_dataset, ModelState};
use crate::compress::{run_pipeline, CompressError, Control, Interrupt};
use crate::domain::{Architecture, Pipeline};

/// Runs the attempt the spec at `spec_path` describes; the exit status is 0 whenever a
/// result was written (whatever it says).
pub fn main(spec_path: &Path) -> std::process::ExitCode {
    let spec: JobSpec = match std::fs::read(spec_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!(
                "compressd run-job: cannot read the job spec {}: {e}",
                spec_path.display()
            );
            return std::process::ExitCode::from(2);
        }
    };
    let traces = crate::telemetry::init_logging_to_stderr(&spec.log_format);
    if let Err(e) = limit_heap(spec.memory_budget.saturating_add(runtime_reserve())) {
        tracing::warn!(error = %e, "could not set the job's memory limit; running without it");
    }
    crate::compress::budget::set(spec.memory_budget);
    let control = Arc::new(Control::new(Duration::from_millis(spec.chunk_delay_ms)));
    listen_to_worker(control.clone());
    let done = Arc::new(AtomicBool::new(false));
    let reporter = report_progress(
        control.clone(),
        done.clone(),
        Duration::from_millis(spec.progress_interval_ms.max(10)),
    );
    let span = tracing::info_span!(
        "job",
        job_id = %spec.job_id,
        attempt = spec.attempt,
        request_id = spec.request_id.as_deref().unwrap_or("")
    );
    crate::otlp::continue_trace(&span, spec.trace_parent.as_deref());
    let result = span.in_scope(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&spec, &control)))
            .unwrap_or_else(|panic| JobResult::Panicked {
                detail: panic_message(&panic),
            })
    });
    drop(span);
    // Sends the job's spans before the worker sees the process end.
    drop(traces);
    done.store(true, Ordering::SeqCst);
    let _ = reporter.join();
    match write_result(&spec, &result) {
        Ok(()) => {
            say(&FromJob::Finished);
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("compressd run-job: cannot write the result: {e}");
            std::process::ExitCode::from(3)
        }
    }
}

fn run(spec: &JobSpec, control: &Control) -> JobResult {
    let outcome = (|| {
        let pipeline: Pipeline = serde_json::from_value(spec.pipeline.clone()).map_err(|e| {
            CompressError::InvalidRequest(format!("the stored pipeline no longer parses: {e}"))
        })?;
        let arch = spec
            .architecture
            .clone()
            .map(serde_json::from_value::<Architecture>)
            .transpose()
            .map_err(|e| {
                CompressError::InvalidModel(format!(
                    "the model's stored architecture no longer parses: {e}"
                ))
            })?;
        let data = match (&spec.dataset, &arch) {
            (Some((path, _)), Some(arch)) => Some(load_dataset(path, arch)?),
            _ => None,
        };
        let model_file = match spec.model_format.as_str() {
            // Jobs read a GGUF model as dense weights under Hugging Face names.
            "gguf" => {
                let dense = spec.workdir.join("gguf-dense.safetensors");
                crate::compress::transformer::gguf_import::to_safetensors(
                    &spec.model_file,
                    &dense,
                )?;
                dense
            }
            _ => spec.model_file.clone(),
        };
        let mut state = ModelState {
            arch,
            data,
            data_label: spec.dataset.clone().map(|(_, l)| l).unwrap_or_default(),
            transformer: super::transformer_job::build(spec, &model_file)?,
        };
        let run = run_pipeline(
            &model_file,
            &spec.workdir,
            &pipeline,
            &spec.model.name,
            &mut state,
            control,
        )?;
        Ok(prepare(spec, &pipeline.to_json(), run)?)
    })();
    match outcome {
        Ok(prepared) => JobResult::Succeeded(prepared),
        Err(CompressError::InvalidModel(detail)) => JobResult::InvalidModel { detail },
        Err(CompressError::InvalidRequest(detail)) => JobResult::NotApplicable { detail },
        Err(CompressError::Io(e)) => JobResult::Io {
            detail: e.to_string(),
        },
        Err(CompressError::Interrupted(Interrupt::Cancelled)) => JobResult::Cancelled,
        Err(CompressError::Interrupted(_)) => JobResult::Shutdown,
    }
}

/// What the process needs beside the job's own data: thread stacks (one per core), the
/// allocator's arenas, the binary's own tables.
fn runtime_reserve() -> u64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    (64 << 20) + cores * (4 << 20)
}

/// Caps the process's heap (brk and private writable mappings; not the model files it maps
/// read-only), so that an allocation past the budget fails instead of exhausting the machine.
fn limit_heap(bytes: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: setrlimit reads the struct we pass and nothing else.
    if unsafe { libc::setrlimit(libc::RLIMIT_DATA, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reads the worker's requests; when the worker goes away (its end of stdin closes), there
/// is no one left to record a result, so the process ends at once.
fn listen_to_worker(control: Arc<Control>) {
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<ToJob>(&line) {
                Ok(ToJob::Cancel) => control.interrupt(Interrupt::Cancelled),
                Ok(ToJob::Shutdown) => control.interrupt(Interrupt::Shutdown),
                Err(e) => tracing::warn!(error = %e, "unreadable request from the worker"),
            }
        }
        std::process::exit(4);
    });
}

fn report_progress(
    control: Arc<Control>,
    done: Arc<AtomicBool>,
    every: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut last = (-1.0, None);
        while !done.load(Ordering::SeqCst) {
            let now = (
                (control.progress() * 1000.0).round() / 1000.0,
                control.detail(),
            );
            if now != last {
                say(&FromJob::Progress {
                    progress: now.0,
                    detail: now.1.clone().map(Box::new),
                });
                last = now;
            }
            std::thread::sleep(every);
        }
    })
}

fn say(message: &FromJob) {
    let line = serde_json::to_string(message).expect("protocol messages serialise");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Written to a temporary name and renamed: the worker never reads half a result.
fn write_result(spec: &JobSpec, result: &JobResult) -> std::io::Result<()> {
    let path = spec.result_path();
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(result)?)?;
    std::fs::rename(&tmp, &path)
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
