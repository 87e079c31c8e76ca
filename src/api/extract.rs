//! Extractors whose rejections are problem+json too.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use uuid::Uuid;

use super::error::ApiError;
use crate::domain::Code;

#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                Code::UnsupportedMediaType,
                "send the body as JSON with Content-Type: application/json",
            ),
            JsonRejection::JsonSyntaxError(e) => ApiError::new(
                Code::InvalidJson,
                format!("the body is not valid JSON: {}", e.body_text()),
            ),
            JsonRejection::JsonDataError(e) => ApiError::new(Code::InvalidRequest, e.body_text()),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(Code::UploadTooLarge, other.body_text())
            }
            other => ApiError::new(Code::UnreadableBody, other.body_text()),
        }
    }
}

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(Code::InvalidQuery, r.body_text())
    }
}

/// The longest time to live a request may ask for: ten years.
pub const MAX_TTL_SECONDS: u64 = 10 * 365 * 86_400;

/// A time to live in seconds (1 to ten years) as milliseconds.
pub fn ttl_ms(field: &str, seconds: Option<u64>) -> Result<Option<i64>, ApiError> {
    match seconds {
        Some(s) if !(1..=MAX_TTL_SECONDS).contains(&s) => Err(ApiError::new(
            Code::InvalidTtl,
            format!("{field} must be 1 to {MAX_TTL_SECONDS} seconds (ten years)"),
        )),
        Some(s) => Ok(Some(s as i64 * 1000)),
        None => Ok(None),
    }
}

/// Parses an id from the path; anything that is not a UUID cannot name a resource.
pub fn parse_id(what: &str, raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found(what, raw))
}
