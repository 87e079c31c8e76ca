//! Streaming a stored file: Content-Length, a strong ETag (its SHA-256), and single byte ranges.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio_util::io::ReaderStream;

use super::error::ApiError;
use super::AppState;
use crate::domain::Code;

/// A byte range [start, end] (inclusive) within a file of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    Whole,
    Part(u64, u64),
    Unsatisfiable,
}

/// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n`. Several ranges, or anything else, are
/// answered with the whole file, as RFC 9110 allows.
pub fn parse_range(value: Option<&str>, len: u64) -> RangeRequest {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.is_empty(), b.is_empty()) {
        (true, false) => match b.parse::<u64>() {
            Ok(0) => return RangeRequest::Unsatisfiable,
            Ok(n) => Some((len.saturating_sub(n), len.saturating_sub(1))),
            Err(_) => None,
        },
        (false, true) => a.parse::<u64>().ok().map(|s| (s, len.saturating_sub(1))),
        (false, false) => match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(s), Ok(e)) if s <= e => Some((s, e.min(len.saturating_sub(1)))),
            _ => None,
        },
        (true, true) => None,
    };
    match parsed {
        None => RangeRequest::Whole,
        Some((start, _)) if start >= len => RangeRequest::Unsatisfiable,
        Some((start, end)) => RangeRequest::Part(start, end),
    }
}

/// The strong ETag of a stored file: its SHA-256, quoted.
fn etag(sha256: &str) -> String {
    format!("\"{sha256}\"")
}

/// A file download: from object storage by redirect where the server is set to (see
/// [`presigned`]), otherwise streamed by [`serve_blob`].
pub async fn serve_download(
    app: &AppState,
    key: &str,
    sha256: &str,
    file_name: &str,
    content_type: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(location) = presigned(app, key, headers).await? {
        let mut out = HeaderMap::new();
        out.insert(
            header::LOCATION,
            HeaderValue::from_str(&location).map_err(ApiError::internal)?,
        );
        out.insert(
            header::ETAG,
            HeaderValue::from_str(&etag(sha256)).map_err(ApiError::internal)?,
        );
        out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return Ok((StatusCode::TEMPORARY_REDIRECT, out).into_response());
    }
    serve_blob(app, key, sha256, file_name, content_type, headers).await
}

pub async fn serve_blob(
    app: &AppState,
    key: &str,
    sha256: &str,
    file_name: &str,
    content_type: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let etag = etag(sha256);
    let matches_etag = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let len = app.blobs.size(key).await?;
    let mut out = HeaderMap::new();
    out.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).map_err(ApiError::internal)?,
    );
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if matches_etag {
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }
    // A range applies only to the representation the client already has.
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim() == etag);
    let range = if if_range_ok {
        parse_range(
            headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
            len,
        )
    } else {
        RangeRequest::Whole
    };
    let (status, start, count) = match range {
        RangeRequest::Whole => (StatusCode::OK, 0, len),
        RangeRequest::Part(s, e) => {
            out.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {s}-{e}/{len}"))
                    .map_err(ApiError::internal)?,
            );
            (StatusCode::PARTIAL_CONTENT, s, e - s + 1)
        }
        RangeRequest::Unsatisfiable => {
            let mut err = ApiError::new(
                Code::RangeNotSatisfiable,
                format!("the file is {len} bytes long"),
            )
            .into_response();
            err.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).map_err(ApiError::internal)?,
            );
            return Ok(err);
        }
    };
    let reader = app.blobs.read(key, start, count).await?;
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).map_err(ApiError::internal)?,
    );
    out.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\""))
            .map_err(ApiError::internal)?,
    );
    Ok((
        status,
        out,
        Body::from_stream(ReaderStream::with_capacity(reader, 256 << 10)),
    )
        .into_response())
}

/// Where the client may fetch the whole file straight from object storage, when the server is
/// set to send it there. Ranged and conditional requests are answered here: the store's ETags
/// are not our SHA-256s, so it could not honour `If-Range` or `If-None-Match` with ours.
async fn presigned(
    app: &AppState,
    key: &str,
    headers: &HeaderMap,
) -> Result<Option<String>, ApiError> {
    let Some(seconds) = app.config.presigned_download_seconds else {
        return Ok(None);
    };
    let conditional = [
        header::RANGE,
        header::IF_RANGE,
        header::IF_NONE_MATCH,
        header::IF_MATCH,
    ]
    .iter()
    .any(|h| headers.contains_key(h));
    if conditional {
        return Ok(None);
    }
    let expires = std::time::Duration::from_secs(seconds.clamp(1, 7 * 86_400));
    Ok(app.blobs.presigned_get(key, expires).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        use RangeRequest::*;
        assert_eq!(parse_range(None, 10), Whole);
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Part(0, 3));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Part(5, 9));
        assert_eq!(parse_range(Some("bytes=-4"), 10), Part(6, 9));
        assert_eq!(parse_range(Some("bytes=-40"), 10), Part(0, 9));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Part(8, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=4-2"), 10), Whole);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Whole);
        assert_eq!(parse_range(Some("items=0-1"), 10), Whole);
    }
}
