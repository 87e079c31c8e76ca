//! `GET /v1/jobs/{id}/events`: server-sent events for a job's status and progress. The stream
//! follows the store, so it sees jobs run by any worker in any process.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::json;

use super::auth::Caller;
use super::error::ApiError;
use super::jobs::{find_job, job_view, MetricsView};
use super::AppState;
use crate::domain::JobStatus;
use crate::store::JobRecord;

/// How often a stream reads its job where nothing announces changes (SQLite).
const POLL: Duration = Duration::from_millis(200);
/// The read behind change announcements (PostgreSQL), for one that was lost.
const FALLBACK: Duration = Duration::from_secs(2);

/// One server-sent event: `event` names it, `data` is its JSON text.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SseEvent {
    /// status, progress or done.
    event: String,
    /// JSON: for status `{id, status, progress, attempts, error}`, for progress
    /// `{id, progress, detail}`, for done the whole job.
    data: String,
}

/// Live job events: `status` (on every status change, first with the current state),
/// `progress` (fraction done, and while a model trains `detail`: step, op, round, epoch,
/// latest accuracy) and finally `done` with the whole job; then the stream ends. Each event
/// has an `id`; a client that reconnects with `Last-Event-ID` gets only what changed since.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/events",
    tag = "jobs",
    params(
        ("id" = String, Path, description = "Job id"),
        ("Last-Event-ID" = Option<String>, Header, description = "The `id` of the last event received, when reconnecting"),
    ),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = SseEvent),
        (status = 404, description = "No such job"),
    )
)]
pub async fn job_events(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let job = find_job(&app, &caller, &id).await?;
    let seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_seen);
    let changes = app.job_changes.as_ref().map(|c| c.subscribe());
    let pace = app
        .config
        .events_poll_ms
        .map_or(if changes.is_some() { FALLBACK } else { POLL }, |ms| {
            Duration::from_millis(ms.max(10))
        });
    let state = Follow {
        changes,
        pace,
        app,
        job_id: job.id,
        last: seen,
        last_detail: None,
        pending: std::collections::VecDeque::new(),
        finished: false,
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(event) = s.pending.pop_front() {
                return Some((Ok(event), s));
            }
            if s.finished || s.app.shutdown.is_cancelled() {
                return None;
            }
            if s.last.is_some() {
                let (job_id, changes) = (s.job_id, &mut s.changes);
                let announced = async move {
                    match changes.as_mut() {
                        Some(rx) => crate::store::job_changed(rx, job_id).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = announced => {}
                    _ = tokio::time::sleep(s.pace) => {}
                    _ = s.app.shutdown.cancelled() => return None,
                }
            }
            s.poll().await;
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The state a client has seen, which is also the id of the event that showed it:
/// `attempts:status:progress`.
type Seen = (JobStatus, f64, u32);

fn parse_seen(id: &str) -> Option<Seen> {
    let mut fields = id.splitn(3, ':');
    let attempts = fields.next()?.parse().ok()?;
    let status = JobStatus::parse(fields.next()?).ok()?;
    let progress: f64 = fields.next()?.parse().ok()?;
    progress.is_finite().then_some((status, progress, attempts))
}

fn seen_id(seen: &Seen) -> String {
    format!("{}:{}:{}", seen.2, seen.0.as_str(), seen.1)
}

struct Follow {
    app: AppState,
    changes: Option<tokio::sync::broadcast::Receiver<uuid::Uuid>>,
    pace: Duration,
    job_id: uuid::Uuid,
    last: Option<Seen>,
    last_detail: Option<serde_json::Value>,
    pending: std::collections::VecDeque<Event>,
    finished: bool,
}

impl Follow {
    async fn poll(&mut self) {
        let job = match self.app.store.job_by_id(self.job_id).await {
            Ok(Some(job)) => job,
            Ok(None) => {
                self.finished = true;
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "event stream could not read the job");
                return;
            }
        };
        let now = (job.status, job.progress, job.attempts);
        let before = self.last.replace(now);
        let detail_changed = self.last_detail != job.progress_detail;
        self.last_detail.clone_from(&job.progress_detail);
        let id = seen_id(&now);
        if before.map(|b| (b.0, b.2)) != Some((now.0, now.2)) {
            self.pending
                .push_back(event("status", &summary(&job)).id(id.clone()));
        } else if before.map(|b| b.1) != Some(now.1) || detail_changed {
            self.pending.push_back(
                event(
                    "progress",
                    &json!({ "id": job.id, "progress": job.progress, "detail": job.progress_detail }),
                )
                .id(id.clone()),
            );
        }
        if job.status.is_terminal() {
            self.finished = true;
            if let Ok(view) = job_view(&self.app, job, MetricsView::Summary).await {
                self.pending.push_back(event("done", &view).id(id));
            }
        }
    }
}

fn summary(job: &JobRecord) -> serde_json::Value {
    json!({
        "id": job.id,
        "status": job.status,
        "progress": job.progress,
        "attempts": job.attempts,
        "error": job.error,
    })
}

fn event(name: &str, data: &impl serde::Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event(name))
}
