//! The jobs dashboard in headless Chromium: the page lists the jobs with the figures the API
//! gives, and a comparison of two jobs draws one point each. A screenshot is kept at
//! `target/dashboard-screenshot.png`.

use serde_json::json;

use crate::helpers::{Backend, TestApp};
use crate::models::mlp;
use crate::report_browser::in_chromium;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_what_the_api_says() {
    let app = TestApp::spawn(Backend::Sqlite, |_| {}).await.unwrap();
    let model = app.upload_ok(mlp(), "lenet-ish").await;
    let pruned = app
        .submit(
            &model,
            json!([{ "op": "prune", "sparsity": 0.8, "store": "sparse" }]),
        )
        .await;
    let quantized = app
        .submit(&model, json!([{ "op": "quantize", "scheme": "int8" }]))
        .await;
    app.run_jobs().await;

    // The page and its script are served without a key; the address's root leads there.
    let page = app.http.get(app.url("/ui")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    let root = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(app.url("/"))
        .send()
        .await
        .unwrap();
    assert!(root.status().is_redirection());
    assert_eq!(root.headers()["location"], "/ui");

    let url = app.url(&format!("/ui?compare={pruned},{quantized}"));
    let Some(dom) = in_chromium(&url, "dashboard-screenshot.png", "1500,1100").await else {
        app.finish().await;
        return;
    };
    assert!(dom.contains("data-loaded=\"true\""), "{dom:.3000}");
    for id in [&pruned, &quantized] {
        let job = app.job(id).await;
        let after = &job["metrics"]["summary"]["file_bytes_after"];
        let row = dom
            .split("<tr data-job=\"")
            .find(|r| r.starts_with(id.as_str()))
            .unwrap_or_else(|| panic!("no row for job {id}: {dom:.3000}"));
        let row = row.split("</tr>").next().unwrap();
        assert!(row.contains("succeeded"), "{row}");
        assert!(
            row.contains(&format!("<td class=\"num bytes-after\">{after}</td>")),
            "the row shows {after} bytes after: {row}"
        );
        assert!(row.contains("lenet-ish"), "{row}");
    }
    let scatter = dom
        .split("<svg")
        .nth(1)
        .expect("the comparison draws a chart");
    assert_eq!(scatter.matches("<circle").count(), 2, "{scatter}");
    app.finish().await;
}
