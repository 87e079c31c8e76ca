//! openapi.yaml is what the server serves: regenerate it with `cargo run -- openapi > openapi.yaml`.

use serde_json::Value;

use crate::helpers::{create_key, Backend, TestApp};

#[tokio::test]
async fn openapi_yaml_matches_the_served_document() {
    let app = TestApp::spawn(Backend::Sqlite, |_| {}).await.unwrap();
    let served: Value = app.get_json("/openapi.json").await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("openapi.yaml at the top level");
    let file: Value = serde_norway::from_str(&text).expect("openapi.yaml parses");
    assert!(
        served == file,
        "openapi.yaml differs from what the server serves; run `cargo run -- openapi > openapi.yaml` and review the diff"
    );
    for route in [
        "/v1/models",
        "/v1/models/{id}",
        "/v1/models/{id}/file",
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/cancel",
        "/v1/jobs/{id}/events",
        "/v1/artifacts/{id}",
        "/v1/artifacts/{id}/file",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            served["paths"].get(route).is_some(),
            "{route} is documented"
        );
    }
    app.finish().await;
}

/// The headers the document promises are the ones the answers carry: a keyed request's answer
/// has each header its response documents, and a 429 has Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_headers_are_sent() {
    let app = TestApp::spawn(Backend::Sqlite, |_| {}).await.unwrap();
    let doc: Value = app.get_json("/openapi.json").await;
    let key = create_key(&app, "docs", 10);
    let get = || app.http.get(app.url("/v1/models")).bearer_auth(&key).send();
    let check = |res: &reqwest::Response, status: &str| {
        let documented = doc["paths"]["/v1/models"]["get"]["responses"][status]["headers"]
            .as_object()
            .unwrap_or_else(|| panic!("GET /v1/models {status} documents its headers"));
        assert!(documented.contains_key("x-request-id"));
        for name in documented.keys() {
            assert!(
                res.headers().contains_key(name.as_str()),
                "{status} lacks the documented {name}"
            );
        }
    };
    let ok = get().await.unwrap();
    assert_eq!(ok.status(), 200);
    check(&ok, "200");
    let limited = get().await.unwrap();
    assert_eq!(limited.status(), 429);
    check(&limited, "429");
    assert!(
        doc["paths"]["/v1/models"]["get"]["responses"]["429"]["headers"]
            .get("Retry-After")
            .is_some()
    );
    app.finish().await;
}
