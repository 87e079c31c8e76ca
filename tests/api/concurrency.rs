//! Requests that arrive together: writes to the same rows from many connections at once must
//! each get their answer, never a 500 ("database is locked" on SQLite used to be one).

use futures::future::join_all;
use serde_json::{json, Value};

use crate::helpers::{files_under, Backend, TestApp};
use crate::models::mlp;

/// 16 parts of one resumable upload, each sent 5 times, all at once.
async fn parallel_parts_of_one_upload_all_land(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let res = app
        .http
        .post(app.url("/v1/uploads"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let upload: Value = res.json().await.unwrap();
    let id = upload["id"].as_str().unwrap();
    let puts = (0..80u32).map(|i| {
        let part = i % 16 + 1;
        app.http
            .put(app.url(&format!("/v1/uploads/{id}/parts/{part}")))
            .body(vec![part as u8; 4096])
            .send()
    });
    let statuses: Vec<u16> = join_all(puts)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let listed = app.get_json(&format!("/v1/uploads/{id}")).await;
    assert_eq!(listed["parts"].as_array().unwrap().len(), 16);
    assert_eq!(listed["received_bytes"], 16 * 4096);
    app.finish().await;
}

/// 20 models with the same bytes (one stored file), deleted all at once: every delete
/// succeeds, and the shared file goes with the last row.
async fn parallel_deletes_of_models_sharing_a_file(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(app.upload_ok(mlp(), &format!("m{i}")).await);
    }
    let deletes = ids
        .iter()
        .map(|id| app.http.delete(app.url(&format!("/v1/models/{id}"))).send());
    let statuses: Vec<u16> = join_all(deletes)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    assert!(statuses.iter().all(|s| *s == 204), "{statuses:?}");
    let blobs = files_under(&app.config.data_dir.join("blobs/tenants"));
    assert!(blobs.is_empty(), "{blobs:?}");
    app.finish().await;
}

crate::on_each_backend!(
    parallel_parts_of_one_upload_all_land,
    parallel_deletes_of_models_sharing_a_file,
);
