//! Separate roles: API replicas that run no jobs, worker replicas that offer no API, sharing
//! only the database and the blobs.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{
    create_key, free_port, get_text, spawn_server, stop_server, wait_ready, Backend, Limits,
    TestApp,
};
use crate::models::mlp;

async fn api_and_worker_roles_scale_apart(backend: Backend) {
    // Asked for two workers, an `api` process still runs none.
    let Some(app) = TestApp::spawn(backend, |c| {
        c.role = "api".into();
        c.workers = Some(2);
    })
    .await
    else {
        return;
    };
    let model = app.upload_ok(mlp(), "mlp").await;
    let job = app
        .submit(&model, json!([{ "op": "prune", "sparsity": 0.5 }]))
        .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(app.job(&job).await["status"], "queued");

    let bind = format!("127.0.0.1:{}", free_port());
    let worker = spawn_server(
        &app,
        &bind,
        Limits::None,
        &[("COMPRESSD_ROLE", "worker"), ("COMPRESSD_WORKERS", "1")],
    );
    let worker_base = format!("http://{bind}");
    wait_ready(&app.http, &worker_base).await;
    let done = app
        .wait_for(&job, "succeeded", Duration::from_secs(60))
        .await;
    assert_eq!(done["attempts"], 1);

    // The worker's address is for probes and the scraper only.
    let res = app
        .http
        .get(format!("{worker_base}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let metrics = get_text(&app.http, &format!("{worker_base}/metrics")).await;
    assert!(metrics.contains("compressd_workers 1"), "{metrics}");
    stop_server(worker).await;
    app.finish().await;
}

/// A key spread over two replicas gets its rate once, not once per replica: the requests of
/// both count against one budget in the database.
async fn a_key_has_one_rate_across_replicas(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let key = create_key(&app, "spread", 30);
    let bind = format!("127.0.0.1:{}", free_port());
    let other = spawn_server(&app, &bind, Limits::None, &[("COMPRESSD_WORKERS", "0")]);
    let other_base = format!("http://{bind}");
    wait_ready(&app.http, &other_base).await;

    // 30 a minute allows 3 at once (one more every 2 s): 2 here and 1 there, then the next is
    // refused on either.
    let get = |base: &str| {
        app.http
            .get(format!("{base}/v1/models"))
            .bearer_auth(&key)
            .send()
    };
    let mut remaining = Vec::new();
    for base in [&app.base, &app.base, &other_base] {
        let res = get(base).await.unwrap();
        assert_eq!(res.status(), 200);
        remaining.push(
            res.headers()["ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let refused = get(&app.base).await.unwrap();
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(get(&other_base).await.unwrap().status(), 429);
    stop_server(other).await;
    app.finish().await;
}

crate::on_each_backend!(
    api_and_worker_roles_scale_apart,
    a_key_has_one_rate_across_replicas,
);
