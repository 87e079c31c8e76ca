//! The blocking half of an attempt: the pipeline runs on the blocking pool while the async
//! half renews the lease, publishes progress and passes on cancellation.

use std::sync::Arc;

use super::attempt::AttemptError;
use super::Worker;
use crate::compress::nn::{load_dataset, ModelState};
use crate::compress::{run_pipeline, CompressError, Control, Interrupt, PipelineRun};
use crate::domain::{Architecture, Code, Pipeline};
use crate::store::Lease;

impl Worker {
    /// Runs the pipeline on the blocking pool, renewing the lease and publishing progress
    /// meanwhile.
    pub(super) async fn run_blocking(
        &self,
        lease: &Lease,
        control: &Arc<Control>,
        input: RunInput,
    ) -> Result<PipelineRun, AttemptError> {
        let (id, token) = (lease.job.id, lease.token);
        let store = &self.inner.store;
        let settings = &self.inner.settings;
        let span = tracing::Span::current();
        let ctl = control.clone();
        let mut task = tokio::task::spawn_blocking(move || span.in_scope(|| input.run(&ctl)));
        let lease_ms = settings.lease.as_millis() as i64;
        let mut heartbeat = tokio::time::interval(settings.lease / 3);
        let mut progress = tokio::time::interval(settings.progress_interval);
        let mut reported = -1.0f64;
        let joined = loop {
            tokio::select! {
                joined = &mut task => break joined,
                _ = heartbeat.tick() => match store.heartbeat(id, token, lease_ms).await {
                    Ok(None) => control.interrupt(Interrupt::LeaseLost),
                    Ok(Some(true)) => control.interrupt(Interrupt::Cancelled),
                    Ok(Some(false)) => {}
                    // The lease runs on; if the store stays away it expires and the job moves on.
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                },
                _ = progress.tick() => {
                    let p = (control.progress() * 1000.0).round() / 1000.0;
                    let detail = control.detail();
                    if (p != reported || detail.is_some()) && store.set_progress(id, token, p, detail.as_ref()).await.unwrap_or(true) {
                        reported = p;
                    }
                }
            }
        };
        match joined {
            Ok(result) => result.map_err(AttemptError::from),
            Err(e) => {
                tracing::error!(error = %e, "pipeline panicked");
                Err(AttemptError::Permanent(Code::Internal.problem("the pipeline crashed on this model; this is a bug in compressd, please report it",
                )))
            }
        }
    }
}

/// Everything the blocking half of an attempt needs, owned so it can cross threads.
pub(super) struct RunInput {
    pub model: std::path::PathBuf,
    pub dataset: Option<(std::path::PathBuf, String)>,
    pub architecture: Option<Architecture>,
    pub workdir: std::path::PathBuf,
    pub pipeline: Pipeline,
    pub model_name: String,
}

impl RunInput {
    fn run(self, control: &Control) -> Result<PipelineRun, CompressError> {
        let data = match (&self.dataset, &self.architecture) {
            (Some((path, _)), Some(arch)) => Some(load_dataset(path, arch)?),
            _ => None,
        };
        let mut state = ModelState {
            arch: self.architecture,
            data,
            data_label: self.dataset.map(|(_, l)| l).unwrap_or_default(),
        };
        run_pipeline(
            &self.model,
            &self.workdir,
            &self.pipeline,
            &self.model_name,
            &mut state,
            control,
        )
    }
}
