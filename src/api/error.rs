//! One error type for the HTTP edge; every error leaves as `application/problem+json`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{Code, Problem};
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub detail: String,
    /// Logged, never shown: the cause of a 5xx.
    source: Option<anyhow::Error>,
    retry_after: Option<u64>,
    limit: Option<&'static str>,
}

impl ApiError {
    /// An error of kind `code` (its status and title come from the code table).
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        ApiError {
            code,
            detail: detail.into(),
            source: None,
            retry_after: None,
            limit: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(Code::NotFound, format!("no {what} with id '{id}'"))
    }

    pub fn too_large(limit: u64) -> Self {
        Self::new(
            Code::UploadTooLarge,
            format!("the upload exceeds the limit of {limit} bytes (COMPRESSD_MAX_UPLOAD_BYTES)"),
        )
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, detail).retry_after(5)
    }

    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        ApiError {
            source: Some(source.into()),
            ..Self::new(
                Code::Internal,
                "the server failed to handle this request; the cause is in its log",
            )
        }
    }

    /// A rate limit (429, with Retry-After) or a quota: names the limit.
    pub fn over_limit(code: Code, limit: &'static str, detail: impl Into<String>) -> Self {
        let mut e = Self::new(code, detail);
        e.limit = Some(limit);
        e
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    pub fn problem(&self) -> Problem {
        let mut p = self.code.problem(self.detail.clone());
        p.limit = self.limit.map(str::to_owned);
        p
    }
}

/// An error answer: the problem, and the request it answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemAnswer {
    #[serde(flatten)]
    pub problem: Problem,
    /// The request's `x-request-id`, which the server's log lines for it carry too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Database(sqlx::Error::PoolTimedOut) => {
                ApiError::unavailable("the database is not answering; try again shortly")
            }
            other => ApiError::internal(other),
        }
    }
}

/// A full or read-only disk is the server's condition, not a bug: 507 or 503 with a retry
/// hint, so clients back off instead of reporting an internal error.
impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        let (code, detail, retry) = match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => (
                Code::StorageFull,
                "the server's storage is full; nothing was kept. Retry later, or ask the operator for room",
                60,
            ),
            Some(libc::EROFS) => (
                Code::IoError,
                "the server's storage is read-only at the moment; nothing was kept. Retry shortly",
                10,
            ),
            _ => return ApiError::internal(e),
        };
        ApiError {
            source: Some(e.into()),
            ..ApiError::new(code, detail)
        }
        .retry_after(retry)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(source) = &self.source {
            tracing::error!(error = ?source, "request failed");
        }
        let answer = ProblemAnswer {
            problem: self.problem(),
            request_id: super::request_id::current(),
        };
        let body = serde_json::to_vec(&answer).expect("problem serialises");
        let mut res = (self.status(), body).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status() == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"compressd\""),
            );
        }
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}
