//! Each job attempt runs in a process of its own with a heap limit: a job that needs more
//! memory than it may have, or whose process dies, fails with the cause and is not retried
//! into the same end, while the server keeps answering and the next job runs.

use std::time::Duration;

use serde_json::{json, Value};

use crate::blobs::blobs;
use crate::helpers::{spawn_server, Backend, Limits, TestApp};
use crate::models::{f32_tensor, safetensors, T};
use crate::training::{dataset_bytes, upload_architecture, upload_dataset, MLP};

/// One hidden layer 16 384 wide: a batch of 4 096 samples makes a 256 MiB activation.
const WIDE: &str = r#"{"input_shape":[8],"layers":[
  {"type":"linear","in_features":8,"out_features":16384},{"type":"relu"},
  {"type":"linear","in_features":16384,"out_features":4}]}"#;

fn samples(n: usize) -> Vec<u8> {
    let (x, y) = blobs(n, 5);
    let labels = |name: &'static str, y: Vec<u8>| T {
        name,
        dtype: safetensors::tensor::Dtype::U8,
        shape: vec![y.len()],
        data: y,
    };
    safetensors(
        &[
            f32_tensor("train_inputs", &[n, 8], &x),
            labels("train_labels", y.clone()),
            f32_tensor("test_inputs", &[n, 8], &x),
            labels("test_labels", y),
        ],
        None,
    )
}

async fn created(res: reqwest::Response) -> Value {
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{body:#}");
    body
}

/// The job process's heap stops at 128 MiB; evaluating in batches of 4 096 asks for 256 MiB
/// at once. The allocation fails in the job process, which aborts; the job fails saying it
/// was over its memory budget, after one attempt, and a small job runs right after.
async fn a_job_over_its_memory_budget_fails_alone(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |c| c.job_memory_bytes = Some(128 << 20)).await else {
        return;
    };
    let data = created(upload_dataset(&app, samples(4096)).await).await;
    let wide = created(upload_architecture(&app, WIDE, None).await).await;
    let job = app
        .submit_with_dataset(
            &wide,
            &data,
            json!([{"op":"evaluate","batch_size":4096,"runs":1}]),
        )
        .await;
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    app.run_jobs().await;
    let failed = app.job(&job).await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert_eq!(
        failed["attempts"], 1,
        "not retried into the same end: {failed:#}"
    );
    let error = &failed["error"];
    assert_eq!(
        error["type"], "urn:compressd:problem:over-memory-budget",
        "{error:#}"
    );
    let detail = error["detail"].as_str().unwrap();
    assert!(detail.contains("128.0 MiB"), "{detail}");
    assert!(detail.contains("memory allocation of"), "{detail}");

    let small_data = created(upload_dataset(&app, dataset_bytes()).await).await;
    let small = created(upload_architecture(&app, MLP, None).await).await;
    let job = app
        .submit_with_dataset(&small, &small_data, json!([{"op":"evaluate","runs":1}]))
        .await;
    app.run_jobs().await;
    assert_eq!(app.job(&job).await["status"], "succeeded");
    app.finish().await;
}

/// A dataset larger than the budget is refused before it is read, saying what needed how
/// much.
async fn a_dataset_larger_than_the_budget_is_refused_before_it_is_read(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |c| c.job_memory_bytes = Some(1 << 20)).await else {
        return;
    };
    let data = created(upload_dataset(&app, samples(20_000)).await).await;
    let model = created(upload_architecture(&app, MLP, None).await).await;
    let job = app
        .submit_with_dataset(&model, &data, json!([{"op":"evaluate","runs":1}]))
        .await;
    app.run_jobs().await;
    let failed = app.job(&job).await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    let detail = failed["error"]["detail"].as_str().unwrap();
    assert!(detail.starts_with("the dataset needs"), "{detail}");
    assert!(detail.contains("memory budget of 1.0 MiB"), "{detail}");
    app.finish().await;
}

/// The job's process is killed from outside (as the kernel's out-of-memory killer would):
/// the job fails with the cause instead of being claimed again and again.
async fn a_killed_job_process_fails_its_job_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |c| c.test_chunk_delay_ms = 200).await else {
        return;
    };
    let model = app.upload_ok(crate::models::layered(64), "slow").await;
    let job = app
        .submit(&model, json!([{"op":"prune","sparsity":0.5}]))
        .await;
    let worker = app.worker();
    let running = tokio::spawn(async move { worker.run_next_job().await });
    let pid = job_process_of(&job).await;
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    running.await.unwrap().unwrap();
    let failed = app.job(&job).await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert_eq!(failed["attempts"], 1);
    assert_eq!(failed["error"]["type"], "urn:compressd:problem:job-crashed");
    let detail = failed["error"]["detail"].as_str().unwrap();
    assert!(detail.contains("SIGKILL"), "{detail}");
    assert!(app.run_jobs().await.is_empty(), "nothing left to retry");
    app.finish().await;
}

/// The pid of the `compressd run-job` process whose spec lies in the job's directory.
async fn job_process_of(job: &str) -> u32 {
    for _ in 0..200 {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains("run-job") && cmdline.contains(job) {
                return pid;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no job process for {job}");
}

/// The server under an address-space cap of 1.5 GiB (as a container limit would set),
/// fired at with every memory bomb known: 256 MiB of generated weights, a forged sparse shape
/// of 2^40 values, a classifier with 16 384 classes, an activation larger than the job's
/// budget, a header of 100 000 tensors. It answers /healthz within a second throughout, and
/// lives on.
async fn a_memory_capped_server_survives_every_bomb(backend: Backend) {
    let Some(app) = TestApp::spawn(backend, |_| {}).await else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = spawn_server(
        &app,
        &format!("127.0.0.1:{port}"),
        Limits::MemoryKib(1536 << 10),
        &[
            ("COMPRESSD_WORKERS", "2"),
            ("COMPRESSD_JOB_MEMORY_BYTES", "134217728"),
            ("MALLOC_ARENA_MAX", "2"),
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (http, base, stop) = (http.clone(), base.clone(), stop.clone());
        tokio::spawn(async move {
            let mut slow = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let asked = std::time::Instant::now();
                let ok = tokio::time::timeout(
                    Duration::from_secs(1),
                    http.get(format!("{base}/healthz")).send(),
                )
                .await
                .is_ok_and(|r| r.is_ok_and(|r| r.status() == 200));
                if !ok {
                    slow.push(asked);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            slow
        })
    };
    let form = |parts: Vec<(&'static str, reqwest::multipart::Part)>| {
        parts
            .into_iter()
            .fold(reqwest::multipart::Form::new(), |f, (n, p)| f.part(n, p))
    };
    let text = |t: &str| reqwest::multipart::Part::text(t.to_owned());
    let file = |b: Vec<u8>| reqwest::multipart::Part::bytes(b).file_name("f.safetensors");
    let post = |path: &str, body: reqwest::multipart::Form| {
        http.post(format!("{base}{path}")).multipart(body).send()
    };
    let job = |model: &Value, data: Option<&Value>, pipeline: Value| {
        http.post(format!("{base}/v1/jobs"))
            .json(&json!({"model_id": model["id"], "dataset_id": data.map(|d| d["id"].clone()), "pipeline": pipeline}))
            .send()
    };
    // 256 MiB of generated weights, written a piece at a time.
    let arch = r#"{"input_shape":[8192],"layers":[{"type":"linear","in_features":8192,"out_features":8192}]}"#;
    let res = post("/v1/models", form(vec![("architecture", text(arch))]))
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    // A forged sparse shape.
    let forged = safetensors(
        &[
            f32_tensor("w", &[8, 8], &crate::models::values(64, 1)),
            raw("x.mask", &[1], vec![1]),
            T {
                name: "x.values",
                dtype: safetensors::tensor::Dtype::F32,
                shape: vec![1],
                data: 1f32.to_le_bytes().to_vec(),
            },
            T {
                name: "x.shape",
                dtype: safetensors::tensor::Dtype::I64,
                shape: vec![1],
                data: (1i64 << 40).to_le_bytes().to_vec(),
            },
        ],
        None,
    );
    let forged: Value = post("/v1/models", form(vec![("file", file(forged))]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut jobs = vec![job(&forged, None, json!([{"op":"prune","sparsity":0.5}]))
        .await
        .unwrap()];
    // 16 384 classes.
    let classes =
        r#"{"input_shape":[8],"layers":[{"type":"linear","in_features":8,"out_features":16384}]}"#;
    let classifier: Value = post("/v1/models", form(vec![("architecture", text(classes))]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (x, _) = blobs(64, 3);
    let y: Vec<u8> = (0..64u16)
        .flat_map(|i| (i * 256 + 255).to_le_bytes())
        .collect();
    let label = |name: &'static str| T {
        name,
        dtype: safetensors::tensor::Dtype::U16,
        shape: vec![64],
        data: y.clone(),
    };
    let many = safetensors(
        &[
            f32_tensor("train_inputs", &[64, 8], &x),
            label("train_labels"),
            f32_tensor("test_inputs", &[64, 8], &x),
            label("test_labels"),
        ],
        None,
    );
    let many: Value = post("/v1/datasets", form(vec![("file", file(many))]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    jobs.push(
        job(
            &classifier,
            Some(&many),
            json!([{"op":"evaluate","runs":1}]),
        )
        .await
        .unwrap(),
    );
    // An activation larger than the job's budget.
    let wide: Value = post("/v1/models", form(vec![("architecture", text(WIDE))]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let data: Value = post("/v1/datasets", form(vec![("file", file(samples(4096)))]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    jobs.push(
        job(
            &wide,
            Some(&data),
            json!([{"op":"evaluate","batch_size":4096,"runs":1}]),
        )
        .await
        .unwrap(),
    );
    // A header of 100 000 tensors.
    let tensors: Vec<T> = (0..100_000)
        .map(|i| f32_tensor(Box::leak(format!("t{i}").into_boxed_str()), &[1], &[1.0]))
        .collect();
    let res = post(
        "/v1/models",
        form(vec![("file", file(safetensors(&tensors, None)))]),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 422);
    let mut ended = Vec::new();
    for res in jobs {
        assert_eq!(res.status(), 202);
        let id = res.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let j: Value = http
                .get(format!("{base}/v1/jobs/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if j["status"] == "succeeded" || j["status"] == "failed" {
                ended.push(j);
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{j:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(
        ended[1]["status"], "succeeded",
        "16 384 classes: {:#}",
        ended[1]
    );
    assert_eq!(
        ended[2]["error"]["type"],
        "urn:compressd:problem:over-memory-budget"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let slow = poller.await.unwrap();
    assert!(
        slow.is_empty(),
        "/healthz did not answer within 1 s {} times",
        slow.len()
    );
    assert!(server.try_wait().unwrap().is_none(), "the server lives on");
    let _ = server.kill();
    let _ = server.wait();
    app.finish().await;
}

fn raw(name: &'static str, shape: &[usize], data: Vec<u8>) -> T {
    T {
        name,
        dtype: safetensors::tensor::Dtype::U8,
        shape: shape.to_vec(),
        data,
    }
}

crate::on_each_backend!(
    a_memory_capped_server_survives_every_bomb,
    a_job_over_its_memory_budget_fails_alone,
    a_dataset_larger_than_the_budget_is_refused_before_it_is_read,
    a_killed_job_process_fails_its_job_once,
);
