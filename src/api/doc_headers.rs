//! The headers answers carry, written into the OpenAPI document once for every route (the
//! middleware adds them everywhere, so no route's annotation repeats them).

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::{Object, OpenApi, RefOr, Type};

fn header(kind: Type, description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Object::with_type(kind))
        .description(Some(description))
        .build()
}

/// `x-request-id` on every answer; `RateLimit-*` on the answers of tenant routes (present when
/// the request carried a key); `Retry-After` on 429s.
pub fn document_headers(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let keyed = path.starts_with("/v1/") && !path.starts_with("/v1/admin/");
        for op in super::operations(item) {
            for (status, response) in op.responses.responses.iter_mut() {
                let RefOr::T(response) = response else {
                    continue;
                };
                let headers = &mut response.headers;
                headers.insert(
                    "x-request-id".into(),
                    header(
                        Type::String,
                        "The request's id: the client's own x-request-id, or a new one. Quote it when reporting a problem.",
                    ),
                );
                if keyed {
                    for (name, description) in [
                        (
                            "RateLimit-Limit",
                            "Requests the key may make at once (its burst).",
                        ),
                        (
                            "RateLimit-Remaining",
                            "Requests the key may make at once from now on.",
                        ),
                        (
                            "RateLimit-Reset",
                            "Seconds until the whole burst is available again.",
                        ),
                    ] {
                        headers.insert(name.into(), header(Type::Integer, description));
                    }
                    headers.insert(
                        "RateLimit-Policy".into(),
                        header(
                            Type::String,
                            "The key's rate: `<per minute>;w=60;burst=<burst>`.",
                        ),
                    );
                }
                if status == "429" {
                    headers.insert(
                        "Retry-After".into(),
                        header(Type::Integer, "Seconds to wait before the next request."),
                    );
                }
            }
        }
    }
}
