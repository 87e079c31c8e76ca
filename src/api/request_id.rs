//! Request ids: every answer carries `x-request-id` (the client's own when it sent a usable
//! one, otherwise a new one), the request's log lines carry it in their span, and problem
//! bodies name it, so that a user's bug report and the server's log point at the same lines.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the request being answered, as a request extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request whose handler is running on this task, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Ids are echoed into headers and logs: only short, plain ones are taken from clients.
fn usable(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

pub async fn assign(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| usable(id))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    req.extensions_mut().insert(RequestId(id.clone()));
    let value = HeaderValue::from_str(&id).expect("request ids are plain ASCII");
    let mut res = CURRENT.scope(id, next.run(req)).await;
    res.headers_mut().insert(HEADER, value);
    res
}

#[cfg(test)]
mod tests {
    use super::usable;

    #[test]
    fn only_short_plain_ids_are_taken_from_clients() {
        assert!(usable("3f9c2a1e-build-42:step.7_x"));
        assert!(!usable(""));
        assert!(!usable("a b"));
        assert!(!usable("id\r\nset-cookie: x"));
        assert!(!usable(&"a".repeat(129)));
    }
}
