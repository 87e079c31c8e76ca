//! One error type for the HTTP edge; every error leaves as `application/problem+json`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::domain::Problem;
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub title: &'static str,
    pub detail: String,
    /// Logged, never shown: the cause of a 5xx.
    source: Option<anyhow::Error>,
    retry_after: Option<u64>,
    limit: Option<&'static str>,
    challenge: bool,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code,
            title,
            detail: detail.into(),
            source: None,
            retry_after: None,
            limit: None,
            challenge: false,
        }
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("no {what} with id '{id}'"),
        )
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, "Bad request", detail)
    }

    pub fn unprocessable(
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, title, detail)
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, "Conflict", detail)
    }

    pub fn too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "upload-too-large",
            "Upload too large",
            format!("the upload exceeds the limit of {limit} bytes (COMPRESSD_MAX_UPLOAD_BYTES)"),
        )
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail,
        );
        e.retry_after = Some(5);
        e
    }

    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        ApiError {
            source: Some(source.into()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
                "the server failed to handle this request; the cause is in its log",
            )
        }
    }

    /// 401: the caller must present a valid key.
    pub fn unauthorized(code: &'static str, detail: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, code, "Unauthorized", detail);
        e.challenge = true;
        e
    }

    /// 429 for a rate limit (with Retry-After), 403 or 409 for a quota: names the limit.
    pub fn over_limit(status: StatusCode, limit: &'static str, detail: impl Into<String>) -> Self {
        let title = if status == StatusCode::TOO_MANY_REQUESTS {
            "Too many requests"
        } else {
            "Quota exceeded"
        };
        let code = if status == StatusCode::TOO_MANY_REQUESTS {
            "rate-limited"
        } else {
            "quota-exceeded"
        };
        let mut e = Self::new(status, code, title, detail);
        e.limit = Some(limit);
        e
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    pub fn problem(&self) -> Problem {
        let mut p = Problem::new(
            self.code,
            self.title,
            self.status.as_u16(),
            self.detail.clone(),
        );
        p.limit = self.limit.map(str::to_owned);
        p
    }
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

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        ApiError::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(source) = &self.source {
            tracing::error!(error = ?source, "request failed");
        }
        let body = serde_json::to_vec(&self.problem()).expect("problem serialises");
        let mut res = (self.status, body).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.challenge {
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
