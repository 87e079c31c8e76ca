//! `GET /v1/jobs/{id}/logs`: the job's own log (what its processes wrote, and what the workers
//! said about each attempt), whole or followed while the job runs.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::Response;
use bytes::Bytes;
use chrono::{TimeZone, Utc};
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::ApiQuery;
use super::jobs::find_job;
use super::AppState;
use crate::domain::Code;
use crate::store::LogLine;

const POLL: Duration = Duration::from_millis(250);
const PAGE: i64 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Only lines after this `seq` (as the JSON lines number them).
    after: Option<i64>,
    /// Keep the answer open and send new lines as they are written, until the job ends.
    follow: Option<bool>,
    /// `text` (default): `time [attempt n] line`; `json`: one JSON object per line
    /// (`seq`, `attempt`, `at`, `line`).
    format: Option<String>,
}

/// The job's log: `text/plain` lines, or `application/x-ndjson` with `format=json`; with
/// `follow=true` the answer stays open until the job has ended and every line is sent.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/logs",
    tag = "jobs",
    params(("id" = String, Path, description = "Job id"), LogQuery),
    responses(
        (status = 200, description = "The log lines", content(
            (String = "text/plain"),
            (String = "application/x-ndjson"),
        )),
        (status = 404, description = "No such job"),
        (status = 400, description = "An unknown format or a negative `after`"),
    )
)]
pub async fn job_logs(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> Result<Response, ApiError> {
    let job = find_job(&app, &caller, &id).await?;
    let json = match query.format.as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => {
            return Err(ApiError::new(
                Code::InvalidQuery,
                format!("format '{other}' is not one of text, json"),
            ))
        }
    };
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::new(
            Code::InvalidQuery,
            "after is a line number (seq), 0 or more",
        ));
    }
    let state = Following {
        app,
        job_id: job.id,
        after,
        follow: query.follow.unwrap_or(false),
        json,
        done: false,
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        let chunk = s.next_chunk().await?;
        Some((Ok::<_, std::io::Error>(chunk), s))
    });
    let content_type = if json {
        "application/x-ndjson"
    } else {
        "text/plain; charset=utf-8"
    };
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(stream))
        .expect("a valid response"))
}

struct Following {
    app: AppState,
    job_id: uuid::Uuid,
    after: i64,
    follow: bool,
    json: bool,
    done: bool,
}

impl Following {
    /// The next lines, waiting for them while following; None at the end.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if self.done {
                return None;
            }
            // Read the status first: lines written before a job ended are then all found below.
            let ended = if self.follow {
                match self.app.store.job_by_id(self.job_id).await {
                    Ok(Some(job)) => job.status.is_terminal(),
                    _ => true,
                }
            } else {
                true
            };
            let lines = match self.app.store.job_log(self.job_id, self.after, PAGE).await {
                Ok(lines) => lines,
                Err(e) => {
                    tracing::warn!(error = %e, "reading a job's log failed");
                    return None;
                }
            };
            if let Some(last) = lines.last() {
                self.after = last.seq;
                return Some(self.render(&lines));
            }
            if ended || self.app.shutdown.is_cancelled() {
                self.done = true;
                return None;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = self.app.shutdown.cancelled() => return None,
            }
        }
    }

    fn render(&self, lines: &[LogLine]) -> Bytes {
        let mut out = String::new();
        for l in lines {
            if self.json {
                let at = Utc.timestamp_millis_opt(l.at).single();
                out.push_str(
                    &serde_json::json!({ "seq": l.seq, "attempt": l.attempt, "at": at, "line": l.line })
                        .to_string(),
                );
            } else {
                let at = Utc
                    .timestamp_millis_opt(l.at)
                    .single()
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
                    .unwrap_or_default();
                out.push_str(&format!("{at} [attempt {}] {}", l.attempt, l.line));
            }
            out.push('\n');
        }
        Bytes::from(out)
    }
}
