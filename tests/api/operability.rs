//! Operating the service: request ids (what a user quotes in a bug report is what the
//! server's answer and log carry), the access log, and metrics a scraper can read from
//! start-up, and traces that follow a job from its request to its steps.

use std::io::Read;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{
    free_port, server_command, stop_server, wait_ready, Backend, Limits, TestApp,
};
use crate::models::mlp;

fn request_id(res: &reqwest::Response) -> String {
    res.headers()
        .get("x-request-id")
        .expect("every answer has x-request-id")
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_names_its_request() {
    let app = TestApp::spawn(Backend::Sqlite, |_| {}).await.unwrap();

    // Generated when the client sends none, and new for each request.
    let a = app.http.get(app.url("/healthz")).send().await.unwrap();
    let b = app.http.get(app.url("/v1/models")).send().await.unwrap();
    assert!(a.status().is_success() && b.status().is_success());
    let (a, b) = (request_id(&a), request_id(&b));
    assert!(a.len() >= 16, "{a}");
    assert_ne!(a, b);

    // The client's own id is kept, and a problem body names it.
    let res = app
        .http
        .get(app.url("/v1/models/no-such-model"))
        .header("x-request-id", "ci-run-42.step:7")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(problem_names_its_request(res).await, "ci-run-42.step:7");

    // Unknown routes and refused bodies are answered the same way.
    let res = app
        .http
        .get(app.url("/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    problem_names_its_request(res).await;
    let res = app
        .http
        .post(app.url("/v1/jobs"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    problem_names_its_request(res).await;

    // An id that is not short and plain is replaced rather than echoed into headers and logs.
    let res = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", "x\tset-cookie=1")
        .send()
        .await
        .unwrap();
    let id = request_id(&res);
    assert!(!id.contains("set-cookie") && id.len() >= 16, "{id}");
    app.finish().await;
}

/// Asserts that the problem body of `res` names the request id its header gives; that id.
async fn problem_names_its_request(res: reqwest::Response) -> String {
    let id = request_id(&res);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["request_id"], id.as_str(), "{problem}");
    id
}

/// The server as an operator runs it (JSON logs on stdout): each request leaves one access
/// line with its route, status, duration, tenant and request id, and the log lines of a job
/// carry the id of the request that submitted it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_and_job_log_lines_carry_the_request_id() {
    let (app, server, base, log) = start_server(&[("COMPRESSD_WORKERS", "1")]).await;
    let http = reqwest::Client::new();
    let res = http
        .get(format!("{base}/v1/models/no-such-model"))
        .header("x-request-id", "access-log-check-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let job = run_job(
        &base,
        json!([{"op": "prune", "method": "magnitude", "sparsity": 0.5}]),
        "job-submit-check-2",
    )
    .await;
    stop_server(server).await;
    app.finish().await;
    let out = log.join().unwrap();
    let lines: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let with_id = |id: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["span"]["request_id"] == id)
            .collect()
    };

    let access: Vec<&Value> = with_id("access-log-check-1")
        .into_iter()
        .filter(|l| l["target"] == "compressd::access")
        .collect();
    assert_eq!(access.len(), 1, "{out}");
    let line = access[0];
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["fields"]["status"], 404, "{line}");
    assert_eq!(line["fields"]["tenant"], "local", "{line}");
    assert!(
        line["fields"]["duration_ms"].as_f64().unwrap() >= 0.0,
        "{line}"
    );
    assert_eq!(line["span"]["method"], "GET", "{line}");
    assert_eq!(line["span"]["path"], "/v1/models/{id}", "{line}");

    // The submission's own line, then the worker's lines for the job it made.
    let job_lines = with_id("job-submit-check-2");
    assert!(
        job_lines
            .iter()
            .any(|l| l["target"] == "compressd::access" && l["fields"]["status"] == 202),
        "{out}"
    );
    assert!(
        job_lines
            .iter()
            .any(|l| l["span"]["name"] == "job" && l["span"]["job_id"] == job["id"]),
        "no job log line carries the request id: {out}"
    );
}

/// The server binary as its own process, on a new SQLite database, once it answers: the test
/// app that holds the database, the process, its base URL, and its JSON log (stdout, read as
/// it comes; whole once the process ends).
async fn start_server(
    env: &[(&str, &str)],
) -> (TestApp, Child, String, std::thread::JoinHandle<String>) {
    let app = TestApp::spawn(Backend::Sqlite, |_| {}).await.unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut env = env.to_vec();
    env.extend([("COMPRESSD_LOG_FORMAT", "json")]);
    let mut server = server_command(&app, &format!("127.0.0.1:{port}"), Limits::None, &env)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start compressd");
    let mut stdout = server.stdout.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).unwrap();
        out
    });
    wait_ready(&app.http, &base).await;
    (app, server, base, log)
}

/// A fresh process already lists its metrics with their HELP text (a dashboard or alert on
/// a metric must not wait for its first event), and a job adds the per-operation figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_described_from_start_up() {
    let (app, server, base, _log) = start_server(&[("COMPRESSD_WORKERS", "2")]).await;
    let http = reqwest::Client::new();
    let metrics = || async {
        http.get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let text = metrics().await;
    for (name, sample) in [
        ("compressd_jobs", "compressd_jobs{status=\"queued\"} 0"),
        ("compressd_workers", "compressd_workers 2"),
        ("compressd_workers_busy", "compressd_workers_busy 0"),
        (
            "compressd_upload_bytes_total",
            "compressd_upload_bytes_total 0",
        ),
        ("compressd_cache_hits_total", "compressd_cache_hits_total 0"),
        (
            "compressd_rate_limited_total",
            "compressd_rate_limited_total 0",
        ),
        (
            "compressd_webhooks_total",
            "compressd_webhooks_total{outcome=\"failed\"} 0",
        ),
    ] {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}:\n{text}"
        );
        assert!(text.contains(sample), "no {sample}:\n{text}");
    }

    run_job(
        &base,
        json!([{"op": "quantize", "scheme": "int8"}]),
        "metrics-check-1",
    )
    .await;
    let text = metrics().await;
    for needle in [
        "# HELP compressd_job_queue_wait_seconds ",
        "compressd_job_queue_wait_seconds_count{op=\"quantize\"} 1",
        "compressd_job_duration_seconds_count{outcome=\"succeeded\",op=\"quantize\"} 1",
        &format!(
            "compressd_job_input_bytes_total{{op=\"quantize\"}} {}",
            mlp().len()
        ),
        "compressd_workers_busy 0",
    ] {
        assert!(text.contains(needle), "no {needle}:\n{text}");
    }
    stop_server(server).await;
    app.finish().await;
}

/// Uploads the small MLP to the server at `base`, runs `pipeline` on it as request
/// `request_id`, and returns the succeeded job.
async fn run_job(base: &str, pipeline: Value, request_id: &str) -> Value {
    run_job_sent_with(base, pipeline, ("x-request-id", request_id)).await
}

/// [`run_job`] with `header` on the submission.
async fn run_job_sent_with(base: &str, pipeline: Value, header: (&str, &str)) -> Value {
    let http = reqwest::Client::new();
    let model: Value = http
        .post(format!("{base}/v1/models?name=mlp"))
        .header("content-type", "application/octet-stream")
        .body(mlp())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job: Value = http
        .post(format!("{base}/v1/jobs"))
        .header(header.0, header.1)
        .json(&json!({"model_id": model["id"], "pipeline": pipeline}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!("{base}/v1/jobs/{}", job["id"].as_str().expect("job id"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
        if job["status"] == "succeeded" {
            return job;
        }
        assert!(job["status"] != "failed", "{job}");
        assert!(Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A stand-in for an OpenTelemetry collector: the OTLP/JSON trace batches sent to it.
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let router = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post({
            let got = got.clone();
            move |body: axum::body::Bytes| async move {
                let batch = serde_json::from_slice(&body).unwrap_or(Value::Null);
                got.lock().unwrap().push(batch);
                ([("content-type", "application/json")], "{}")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{addr}"), got)
}

/// Every span received: (service name, span).
fn received_spans(batches: &[Value]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for batch in batches {
        for rs in batch["resourceSpans"].as_array().into_iter().flatten() {
            let service = rs["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .map(|a| a["value"]["stringValue"].as_str().unwrap_or("").to_owned())
                .unwrap_or_default();
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    out.push((service.clone(), span.clone()));
                }
            }
        }
    }
    out
}

fn attribute<'a>(span: &'a Value, key: &str) -> &'a Value {
    span["attributes"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["key"] == key))
        .map_or(&Value::Null, |a| &a["value"])
}

/// With a collector configured, one trace runs from the client's call through the worker's
/// attempt to each step in the job process (three processes' spans, linked parent to child).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_follow_a_job_from_request_to_step() {
    let (collector, got) = otlp_receiver().await;
    let (app, server, base, _log) = start_server(&[
        ("COMPRESSD_WORKERS", "1"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{client_span}-01");
    let pipeline = json!([
        {"op": "prune", "method": "magnitude", "sparsity": 0.5},
        {"op": "quantize", "scheme": "int8"}
    ]);
    let job = run_job_sent_with(&base, pipeline, ("traceparent", &traceparent)).await;
    let job_id = job["id"].as_str().unwrap().to_owned();

    let deadline = Instant::now() + Duration::from_secs(60);
    let spans = loop {
        let spans: Vec<(String, Value)> = received_spans(&got.lock().unwrap())
            .into_iter()
            .filter(|(_, s)| s["traceId"] == trace_id)
            .collect();
        let named = |name: &str| spans.iter().filter(|(_, s)| s["name"] == name).count();
        // The attempt's span ends last: after the job process, once its outputs are recorded.
        if named("step") == 2 && named("job") == 2 {
            break spans;
        }
        assert!(Instant::now() < deadline, "spans so far: {spans:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop_server(server).await;
    app.finish().await;

    assert!(
        spans.iter().all(|(service, _)| service == "compressd"),
        "{spans:#?}"
    );
    let child_of = |parent: &Value, name: &str| -> Vec<Value> {
        spans
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s["name"] == name && s["parentSpanId"] == *parent)
            .cloned()
            .collect()
    };
    let request = child_of(&json!(client_span), "http");
    assert_eq!(
        request.len(),
        1,
        "the submission continues the client's trace: {spans:#?}"
    );
    assert_eq!(attribute(&request[0], "path")["stringValue"], "/v1/jobs");
    let attempt = child_of(&request[0]["spanId"], "job");
    assert_eq!(attempt.len(), 1, "the worker's attempt: {spans:#?}");
    assert_eq!(
        attribute(&attempt[0], "job_id")["stringValue"],
        job_id.as_str()
    );
    let process = child_of(&attempt[0]["spanId"], "job");
    assert_eq!(process.len(), 1, "the job process: {spans:#?}");
    let mut steps = child_of(&process[0]["spanId"], "step");
    // OTLP/JSON writes 64-bit integers as strings or numbers, depending on the encoder.
    let start = |s: &Value| {
        let t = &s["startTimeUnixNano"];
        t.as_u64()
            .or_else(|| t.as_str().and_then(|t| t.parse().ok()))
            .unwrap_or_default()
    };
    steps.sort_by_key(start);
    let ops: Vec<&Value> = steps
        .iter()
        .map(|s| &attribute(s, "op")["stringValue"])
        .collect();
    assert_eq!(ops, [&json!("prune"), &json!("quantize")], "{steps:#?}");
}
