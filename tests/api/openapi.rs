//! openapi.yaml is what the server serves: regenerate it with `cargo run -- openapi > openapi.yaml`.

use serde_json::Value;

use crate::helpers::{Backend, TestApp};

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
