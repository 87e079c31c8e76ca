//! Requests that race each other over the same rows and files: whichever wins, every answer
//! is true afterwards (a stored model has its file, a quota holds, a queued job has its model,
//! a cache hit has its artifacts, one upload makes one model).

use futures::future::join_all;
use serde_json::{json, Value};

use crate::helpers::{Backend, TestApp};
use crate::models::mlp;
use crate::tenants::{client, spawn, tenant};

/// Uploading bytes X while another model with bytes X is deleted: the new model's file is
/// there, whichever finished first (the delete once removed the shared file after the new
/// row was written).
async fn an_upload_racing_a_delete_of_the_same_bytes_keeps_its_file(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let bytes = mlp();
    for round in 0..20 {
        let old = app.upload_ok(bytes.clone(), &format!("old{round}")).await;
        let delete = app
            .http
            .delete(app.url(&format!("/v1/models/{old}")))
            .send();
        let (deleted, uploaded) = tokio::join!(delete, app.upload(bytes.clone(), "new"));
        assert_eq!(deleted.unwrap().status(), 204);
        assert_eq!(uploaded.status(), 201);
        let new: Value = uploaded.json().await.unwrap();
        let res = app
            .http
            .get(app.url(&format!("/v1/models/{}/file", new["id"].as_str().unwrap())))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            200,
            "round {round}: the new model lost its file"
        );
        assert_eq!(res.bytes().await.unwrap().as_ref(), bytes.as_slice());
    }
    app.finish().await;
}

/// 30 parts sent at once against a 1 MB quota: what is stored never passes the quota (each
/// part used to pass the check before any was recorded).
async fn parallel_parts_cannot_overshoot_the_quota(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let t = tenant(&app, "small", json!({"max_stored_bytes": 1_000_000})).await;
    let upload: Value = t
        .http
        .post(app.url("/v1/uploads"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = upload["id"].as_str().unwrap();
    let puts = (1..=30u32).map(|part| {
        t.http
            .put(app.url(&format!("/v1/uploads/{id}/parts/{part}")))
            .body(vec![part as u8; 100_000])
            .send()
    });
    let statuses: Vec<u16> = join_all(puts)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    let stored = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 403),
        "{statuses:?}"
    );
    assert!(
        (1..=10).contains(&stored),
        "{stored} parts of 100 kB stored under a 1 MB quota"
    );
    let listed: Value = t
        .http
        .get(app.url(&format!("/v1/uploads/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed["received_bytes"].as_u64().unwrap() <= 1_000_000);
    app.finish().await;
}

/// A job submitted while its model is deleted: either the job is queued and the delete
/// refused, or the model is gone and the job refused; never a queued job without a model.
async fn a_job_racing_its_models_delete_is_never_orphaned(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    for round in 0..20 {
        let model = app.upload_ok(mlp(), &format!("m{round}")).await;
        let submit = app.post_job(
            json!({"model_id": model, "pipeline": [{"op":"prune","sparsity":0.5}], "cache": false}),
        );
        let delete = app
            .http
            .delete(app.url(&format!("/v1/models/{model}")))
            .send();
        let (submitted, deleted) = tokio::join!(submit, delete);
        let (submitted, deleted) = (
            submitted.status().as_u16(),
            deleted.unwrap().status().as_u16(),
        );
        assert!(
            matches!((submitted, deleted), (202, 409) | (422, 204)),
            "round {round}: job {submitted}, delete {deleted}"
        );
        app.run_jobs().await;
    }
    let jobs = app.get_json("/v1/jobs?limit=200").await;
    for job in jobs["data"].as_array().unwrap() {
        assert_eq!(job["status"], "succeeded", "{job:#}");
    }
    app.finish().await;
}

/// A cache hit racing the delete of the job it copies: a hit that succeeds has artifacts
/// that download.
async fn a_cache_hit_racing_its_sources_delete_has_its_artifacts(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let model = app.upload_ok(mlp(), "m").await;
    let pipeline = json!([{"op":"prune","sparsity":0.5}]);
    for round in 0..10 {
        let source = app.submit(&model, pipeline.clone()).await;
        app.run_jobs().await;
        let delete = app
            .http
            .delete(app.url(&format!("/v1/jobs/{source}")))
            .send();
        let submit = app.post_job(json!({"model_id": model, "pipeline": pipeline}));
        let (deleted, submitted) = tokio::join!(delete, submit);
        assert_eq!(deleted.unwrap().status(), 204);
        assert_eq!(submitted.status(), 202);
        let job: Value = submitted.json().await.unwrap();
        app.run_jobs().await;
        let job = app.job(job["id"].as_str().unwrap()).await;
        assert_eq!(job["status"], "succeeded", "round {round}: {job:#}");
        let artifacts = job["artifacts"].as_array().unwrap();
        assert!(!artifacts.is_empty(), "round {round}: {job:#}");
        for a in artifacts {
            let res = app
                .http
                .get(app.url(a["file_url"].as_str().unwrap()))
                .send()
                .await
                .unwrap();
            assert_eq!(
                res.status(),
                200,
                "round {round}, cache hit {}: {a:#}",
                job["cache_hit"]
            );
        }
        let res = app
            .http
            .delete(app.url(&format!("/v1/jobs/{}", job["id"].as_str().unwrap())))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
    }
    app.finish().await;
}

/// Six completions of one resumable upload at once make one model; the others are told
/// another request is completing it.
async fn parallel_completions_make_one_model(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let bytes = mlp();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    let upload: Value = app
        .http
        .post(app.url("/v1/uploads"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = upload["id"].as_str().unwrap();
    let res = app
        .http
        .put(app.url(&format!("/v1/uploads/{id}/parts/1")))
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let completions = (0..6).map(|_| {
        app.http
            .post(app.url(&format!("/v1/uploads/{id}/complete")))
            .json(&json!({"sha256": sha}))
            .send()
    });
    let statuses: Vec<u16> = join_all(completions)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [201, 404, 409].contains(s)),
        "{statuses:?}"
    );
    let models = app.get_json("/v1/models").await;
    assert_eq!(models["data"].as_array().unwrap().len(), 1);
    app.finish().await;
}

/// Tenants take turns: tenant B's one job runs right after tenant A's first, not behind all
/// of A's queue.
async fn tenants_take_turns_in_the_queue(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let a = tenant(&app, "alpha", json!({})).await;
    let b = tenant(&app, "beta", json!({})).await;
    let submit = |http: reqwest::Client, model: String| {
        let url = app.url("/v1/jobs");
        async move {
            let res = http
                .post(url)
                .json(&json!({"model_id": model, "pipeline": [{"op":"prune","sparsity":0.5}], "cache": false}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 202);
            res.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let model_a = upload_as(&app, &a.key).await;
    let model_b = upload_as(&app, &b.key).await;
    let mut a_jobs = Vec::new();
    for _ in 0..4 {
        a_jobs.push(submit(a.http.clone(), model_a.clone()).await);
    }
    let b_job = submit(b.http.clone(), model_b).await;
    let worker = app.worker();
    let mut order = Vec::new();
    for _ in 0..5 {
        match worker.run_next_job().await.unwrap() {
            compressd::worker::Outcome::Succeeded(id) => order.push(id.to_string()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(order[0], a_jobs[0], "the oldest job first");
    assert_eq!(order[1], b_job, "then the other tenant's: {order:?}");
    assert_eq!(order[2..], a_jobs[1..], "then the rest in order");
    app.finish().await;
}

/// Workers claiming at the same instant keep a tenant's running-jobs limit: of eight parallel
/// claims with room for one running job, one gets a job.
async fn parallel_claims_keep_the_running_limit(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let model = app.upload_ok(mlp(), "m").await;
    for s in [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8] {
        app.submit(&model, json!([{ "op": "prune", "sparsity": s }]))
            .await;
    }
    let store = app.app.as_ref().unwrap().store().clone();
    for round in 0..3 {
        let claims = join_all((0..8).map(|i| {
            let store = store.clone();
            async move {
                store
                    .claim_job(&format!("w{round}-{i}"), 60_000, 1)
                    .await
                    .unwrap()
            }
        }))
        .await;
        let claimed = claims.iter().filter(|c| c.is_some()).count();
        assert_eq!(claimed, usize::from(round == 0), "round {round}");
    }
    app.finish().await;
}

/// Parallel submits cannot pass the queue limit: of eight at once with room for two, two are
/// queued and the rest refused naming the limit.
async fn parallel_submits_keep_the_queue_limit(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let t = tenant(&app, "busy", json!({ "max_queued_jobs": 2 })).await;
    let model = upload_as(&app, &t.key).await;
    let answers = join_all((0..8).map(|i| {
        t.http
            .post(app.url("/v1/jobs"))
            .json(&json!({"model_id": model, "pipeline": [{"op": "prune", "sparsity": 0.1 * f64::from(i + 1)}]}))
            .send()
    }))
    .await;
    let mut statuses: Vec<u16> = answers
        .iter()
        .map(|r| r.as_ref().unwrap().status().as_u16())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [202, 202, 409, 409, 409, 409, 409, 409]);
    app.finish().await;
}

/// Uploads the small MLP with tenant `key`; the model's id.
async fn upload_as(app: &TestApp, key: &str) -> String {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(mlp()).file_name("m.safetensors"),
    );
    let res = client(key)
        .post(app.url("/v1/models"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

crate::on_each_backend!(
    parallel_submits_keep_the_queue_limit,
    parallel_claims_keep_the_running_limit,
    an_upload_racing_a_delete_of_the_same_bytes_keeps_its_file,
    parallel_parts_cannot_overshoot_the_quota,
    a_job_racing_its_models_delete_is_never_orphaned,
    a_cache_hit_racing_its_sources_delete_has_its_artifacts,
    parallel_completions_make_one_model,
    tenants_take_turns_in_the_queue,
);
