//! `GET /v1/jobs/{id}/report`: the job's report page, to open in a browser.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;

use super::auth::Caller;
use super::download::serve_blob;
use super::error::ApiError;
use super::jobs::find_job;
use super::AppState;
use crate::domain::Code;

/// The report of a finished job: one self-contained HTML page (summary table, inline SVG
/// charts; no scripts, no external assets). The same charts are `chart` artifacts (SVG).
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/report",
    tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "The report page", content_type = "text/html", body = String),
        (status = 404, description = "No such job, or it has no report (yet)"),
    )
)]
pub async fn job_report(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let job = find_job(&app, &caller, &id).await?;
    let page = app
        .store
        .artifacts_of_job(job.id)
        .await?
        .into_iter()
        .find(|a| a.kind == "report_html")
        .ok_or_else(|| {
            ApiError::new(
                Code::ReportNotReady,
                format!(
                    "job {} is {}; its report exists once it has succeeded",
                    job.id,
                    job.status.as_str()
                ),
            )
        })?;
    let mut res = serve_blob(
        &app,
        &page.blob_key,
        &page.sha256,
        &page.file_name,
        &page.content_type,
        &headers,
    )
    .await?;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("inline"),
    );
    // The page needs nothing but its own markup and inline styles.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src data:"),
    );
    Ok(res)
}
