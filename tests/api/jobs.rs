//! Submitting, listing and cancelling jobs.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{Backend, TestApp};
use crate::models::{f32_tensor, mlp, safetensors, values};

async fn bad_jobs_are_refused_before_queueing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let model = app.upload_ok(mlp(), "m").await;
    let cases = [
        (
            json!({"model_id": model, "pipeline": []}),
            422,
            "pipeline is empty",
        ),
        (
            json!({"model_id": model, "pipeline": [{"op":"quantise"}]}),
            422,
            "unknown op 'quantise'",
        ),
        (
            json!({"model_id": model, "pipeline": [{"method":"magnitude"}]}),
            422,
            "missing \\\"op\\\"",
        ),
        (
            json!({"model_id": model, "pipeline": [{"op":"prune","method":"magnitude","sparsity":1.5}]}),
            422,
            "between 0 and 1",
        ),
        (
            json!({"model_id": model, "pipeline": [{"op":"prune","method":"magnitude","threshold":"big"}]}),
            422,
            "invalid type",
        ),
        (
            json!({"model_id": model, "pipeline": [{"op":"prune","method":"magnitude","sparsity":0.5,"include":["nothing.*"]}]}),
            422,
            "selects no tensor",
        ),
        (
            json!({"model_id": model, "pipeline": [{"op":"prune","method":"magnitude","sparsity":0.5,"include":["fc1.*"]}], "extra": 1}),
            422,
            "unknown field",
        ),
        (
            json!({"model_id": "0190a0a0-0000-7000-8000-000000000000", "pipeline": [{"op":"prune","method":"magnitude","sparsity":0.5}]}),
            422,
            "no model with id",
        ),
        (
            json!({"model_id": "not-a-uuid", "pipeline": []}),
            422,
            "UUID",
        ),
    ];
    for (body, status, needle) in cases {
        let res = app.post_job(body.clone()).await;
        assert_eq!(res.status().as_u16(), status, "{body}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let text = res.text().await.unwrap();
        assert!(text.contains(needle), "{body}: {text}");
    }
    let res = app
        .http
        .post(app.url("/v1/jobs"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = app
        .http
        .post(app.url("/v1/jobs"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    assert_eq!(
        app.get_json("/v1/jobs").await["data"],
        json!([]),
        "nothing was queued"
    );
    app.finish().await;
}

async fn idempotency_key_makes_retries_safe(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let model = app.upload_ok(mlp(), "m").await;
    let body = json!({"model_id": model, "pipeline": [{"op":"prune","method":"magnitude","sparsity":0.5}]});
    let send = |body: Value| {
        app.http
            .post(app.url("/v1/jobs"))
            .header("idempotency-key", "retry-me-42")
            .json(&body)
            .send()
    };
    let first = send(body.clone()).await.unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let again = send(body.clone()).await.unwrap();
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);

    let other = json!({"model_id": model, "pipeline": [{"op":"prune","method":"magnitude","sparsity":0.6}]});
    let res = send(other).await.unwrap();
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("idempotency-key-reused"));

    // Concurrent retries still make one job.
    let model2 = app.upload_ok(mlp(), "m2").await;
    let body2 = json!({"model_id": model2, "pipeline": [{"op":"prune","method":"magnitude","sparsity":0.5}]});
    let tries = (0..8).map(|_| {
        app.http
            .post(app.url("/v1/jobs"))
            .header("idempotency-key", "burst")
            .json(&body2)
            .send()
    });
    let ids: Vec<String> = futures::future::join_all(tries)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect::<Vec<_>>()
        .into_iter()
        .map(|r| {
            assert_eq!(r.status(), 202);
            r.headers()["location"].to_str().unwrap().to_owned()
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    assert_eq!(
        app.get_json("/v1/jobs").await["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    app.finish().await;
}

async fn cancel_queued_and_finished(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let model = app.upload_ok(mlp(), "m").await;
    let job = app
        .submit(
            &model,
            json!([{"op":"prune","method":"magnitude","sparsity":0.5}]),
        )
        .await;
    let res = app
        .http
        .post(app.url(&format!("/v1/jobs/{job}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let cancelled: Value = res.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["finished_at"].is_string());
    assert!(
        app.run_jobs().await.is_empty(),
        "a cancelled job never runs"
    );

    let res = app
        .http
        .post(app.url(&format!("/v1/jobs/{job}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    let res = app
        .http
        .post(app.url("/v1/jobs/0190a0a0-0000-7000-8000-000000000000/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = app
        .http
        .get(app.url("/v1/jobs/nonsense"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    // Status filter.
    let done = app
        .submit(
            &model,
            json!([{"op":"prune","method":"magnitude","sparsity":0.1}]),
        )
        .await;
    app.run_jobs().await;
    let list = app.get_json("/v1/jobs?status=succeeded").await;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![done.as_str()]);
    let kinds: Vec<&str> = list["data"][0]["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    for kind in ["model", "report", "report_html", "chart"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert!(list["data"][0].get("metrics").is_none());
    let list = app.get_json("/v1/jobs?status=cancelled").await;
    assert_eq!(list["data"][0]["id"], job.as_str());
    let res = app
        .http
        .get(app.url("/v1/jobs?status=bogus"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);

    // Filters by op and by submission time.
    let quantized = app
        .submit(&model, json!([{"op":"quantize","scheme":"int8"}]))
        .await;
    let ids_of = |list: Value| -> Vec<String> {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids_of(app.get_json("/v1/jobs?op=quantize").await),
        [quantized.as_str()]
    );
    assert_eq!(
        ids_of(app.get_json("/v1/jobs?op=prune").await),
        [done.as_str(), job.as_str()]
    );
    let at = app.job(&done).await["created_at"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        ids_of(app.get_json(&format!("/v1/jobs?created_after={at}")).await),
        [quantized.as_str(), done.as_str()]
    );
    assert_eq!(
        ids_of(app.get_json(&format!("/v1/jobs?created_before={at}")).await),
        [job.as_str()]
    );
    assert_eq!(
        ids_of(
            app.get_json(&format!("/v1/jobs?op=prune&created_after={at}"))
                .await
        ),
        [done.as_str()]
    );
    for bad in ["op=bogus", "created_after=yesterday"] {
        let res = app
            .http
            .get(app.url(&format!("/v1/jobs?{bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{bad}");
    }
    app.finish().await;
}

/// A running job stops at its next checkpoint, leaves no artifact and no scratch files.
async fn cancel_running(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |c| {
        c.workers = Some(1);
        c.test_chunk_delay_ms = 100;
        c.lease_ms = 600;
    })
    .await
    else {
        return;
    };
    // Twenty tensors: sixty chunks to pass through, each slowed by the test hook.
    let tensors: Vec<_> = (0..20)
        .map(|i| {
            f32_tensor(
                Box::leak(format!("l{i}.weight").into_boxed_str()),
                &[256, 256],
                &values(65536, i),
            )
        })
        .collect();
    let big = safetensors(&tensors, None);
    let model = app.upload_ok(big, "big").await;
    let job = app
        .submit(
            &model,
            json!([{"op":"prune","method":"magnitude","sparsity":0.5,"scope":"global"}]),
        )
        .await;
    app.wait_for(&job, "running", Duration::from_secs(10)).await;
    let res = app
        .http
        .post(app.url(&format!("/v1/jobs/{job}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["cancel_requested"], true);
    let job = app
        .wait_for(&job, "cancelled", Duration::from_secs(10))
        .await;
    assert_eq!(job["artifacts"], json!([]));
    let scratch: Vec<_> = std::fs::read_dir(app.config.data_dir.join("scratch"))
        .unwrap()
        .collect();
    assert!(scratch.is_empty(), "scratch cleaned: {scratch:?}");
    assert!(!app.config.data_dir.join("blobs/artifacts").exists());
    app.finish().await;
}

/// A queued job says where it stands: its place in its tenant's queue, the jobs ahead of it,
/// and when it should start at the pace the service has kept.
async fn queued_jobs_say_where_they_stand(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let model = app.upload_ok(mlp(), "m").await;
    let pipeline = json!([{"op":"prune","method":"magnitude","sparsity":0.5}]);
    let mut jobs = Vec::new();
    for _ in 0..3 {
        jobs.push(app.submit(&model, pipeline.clone()).await);
    }
    for (i, id) in jobs.iter().enumerate() {
        let queue = &app.get_json(&format!("/v1/jobs/{id}")).await["queue"];
        assert_eq!(queue["position"], i + 1, "{queue}");
        assert_eq!(queue["jobs_ahead"], i, "{queue}");
        assert_eq!(queue["finished_last_15_minutes"], 0, "{queue}");
        assert!(
            queue["estimated_start_at"].is_null(),
            "no pace yet: {queue}"
        );
    }
    let listed = app.get_json("/v1/jobs?status=queued").await;
    assert!(listed["data"][0].get("queue").is_none(), "lists stay lean");

    // One job runs: the others move up, and the pace it set dates them.
    let worker = app.worker();
    worker.run_next_job().await.unwrap();
    let first = app.get_json(&format!("/v1/jobs/{}", jobs[0])).await;
    assert_eq!(first["status"], "succeeded");
    assert!(first.get("queue").is_none(), "{first}");
    // A results-cache answer runs nothing: it does not speed up the pace.
    let res = app
        .post_job(json!({"model_id": model, "pipeline": pipeline}))
        .await;
    assert_eq!(res.json::<Value>().await.unwrap()["cache_hit"], true);
    let second = app.get_json(&format!("/v1/jobs/{}", jobs[1])).await;
    let third = app.get_json(&format!("/v1/jobs/{}", jobs[2])).await;
    assert_eq!(second["queue"]["position"], 1);
    assert_eq!(third["queue"]["position"], 2);
    assert_eq!(third["queue"]["finished_last_15_minutes"], 1);
    let at = |job: &Value| {
        chrono::DateTime::parse_from_rfc3339(job["queue"]["estimated_start_at"].as_str().unwrap())
            .unwrap()
    };
    // One job finished in 15 minutes: one job ahead is 15 minutes away.
    let gap = (at(&third) - at(&second)).num_seconds();
    assert!((890..=910).contains(&gap), "{gap} s between the estimates");
    app.finish().await;
}

crate::on_each_backend!(
    queued_jobs_say_where_they_stand,
    bad_jobs_are_refused_before_queueing,
    idempotency_key_makes_retries_safe,
    cancel_queued_and_finished,
    cancel_running,
);
