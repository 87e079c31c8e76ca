//! Load: concurrent clients drive uploads, job submissions and status polls against a local
//! compressd over HTTP, and the bench prints requests per second, p50/p99 latency and errors
//! per kind of request.
//!
//! `cargo bench --bench load`. A server is started in-process on SQLite in a temporary
//! directory (`LOAD_DATABASE_URL=postgres://…` uses that database instead; `LOAD_URL=http://…`
//! drives a server that is already running, `LOAD_KEY` its API key). `LOAD_CLIENTS` (default
//! 32) clients run for `LOAD_SECONDS` (default 20); each request is an upload (5 %), a job
//! submission (15 %) or a poll of a job it submitted (80 %). The in-process server runs
//! `LOAD_WORKERS` workers (default 1), so jobs really run while the API is loaded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use compressd::config::Config;
use compressd::startup::Application;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::Mutex;

#[derive(Default)]
struct Kind {
    latencies: Vec<Duration>,
    errors: u64,
}

#[derive(Default)]
struct Tally {
    upload: Kind,
    submit: Kind,
    poll: Kind,
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small valid model: two f32 weights with a seed-dependent value, so uploads differ.
fn model(seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let shapes = [("fc1.weight", [64usize, 32]), ("fc2.weight", [16, 64])];
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape) in shapes {
        let begin = data.len();
        for _ in 0..shape[0] * shape[1] {
            data.extend_from_slice(&rng.random_range(-1.0f32..1.0).to_le_bytes());
        }
        header.insert(
            name.into(),
            json!({"dtype": "F32", "shape": shape, "data_offsets": [begin, data.len()]}),
        );
    }
    let header = serde_json::to_vec(&header).unwrap();
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend(header);
    file.extend(data);
    file
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let clients: usize = env("LOAD_CLIENTS", 32);
    let seconds: u64 = env("LOAD_SECONDS", 20);
    let dir = tempfile::tempdir()?;
    let (base, app) = match std::env::var("LOAD_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let mut config = Config::defaults();
            config.bind = "127.0.0.1:0".into();
            config.data_dir = dir.path().join("data");
            config.database_url = std::env::var("LOAD_DATABASE_URL")
                .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("load.db").display()));
            config.workers = Some(env("LOAD_WORKERS", 1));
            config.max_queued_jobs = u32::MAX;
            config.sweep_ms = 3_600_000;
            config.job_runner = Some(env!("CARGO_BIN_EXE_compressd").into());
            let app = Application::build(config).await?;
            (format!("http://{}", app.address()), Some(app))
        }
    };
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(key) = std::env::var("LOAD_KEY") {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {key}").parse()?,
        );
    }
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(clients)
        .timeout(Duration::from_secs(30))
        .build()?;
    // One model to start from, so that every client can submit at once.
    let first: Value = http
        .post(format!("{base}/v1/models?name=seed"))
        .header("content-type", "application/octet-stream")
        .body(model(0))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let seed_model = first["id"].as_str().unwrap_or_default().to_owned();
    println!(
        "load: {clients} clients for {seconds} s against {base} ({})",
        if app.is_some() {
            "in-process server"
        } else {
            "external server"
        }
    );
    let tally = Arc::new(Mutex::new(Tally::default()));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, base, tally, seed_model) = (
            http.clone(),
            base.clone(),
            tally.clone(),
            seed_model.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(c as u64 + 1);
            let mut models = vec![seed_model];
            let mut jobs: Vec<String> = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let roll: f64 = rng.random();
                let t = Instant::now();
                if roll < 0.05 {
                    let res = http
                        .post(format!("{base}/v1/models?name=c{c}-{n}"))
                        .header("content-type", "application/octet-stream")
                        .body(model(c as u64 * 1_000_000 + n))
                        .send()
                        .await;
                    let ok = match res {
                        Ok(r) if r.status() == 201 => r.json::<Value>().await.ok().and_then(|v| v["id"].as_str().map(str::to_owned)),
                        _ => None,
                    };
                    let mut tally = tally.lock().await;
                    tally.upload.latencies.push(t.elapsed());
                    match ok {
                        Some(id) => models.push(id),
                        None => tally.upload.errors += 1,
                    }
                } else if roll < 0.20 || jobs.is_empty() {
                    let model = &models[rng.random_range(0..models.len())];
                    let sparsity = (rng.random_range(10..90) as f64) / 100.0;
                    let res = http
                        .post(format!("{base}/v1/jobs"))
                        .json(&json!({"model_id": model, "pipeline": [{"op": "prune", "sparsity": sparsity}]}))
                        .send()
                        .await;
                    let ok = match res {
                        Ok(r) if r.status() == 202 => r.json::<Value>().await.ok().and_then(|v| v["id"].as_str().map(str::to_owned)),
                        _ => None,
                    };
                    let mut tally = tally.lock().await;
                    tally.submit.latencies.push(t.elapsed());
                    match ok {
                        Some(id) => jobs.push(id),
                        None => tally.submit.errors += 1,
                    }
                } else {
                    let job = &jobs[rng.random_range(0..jobs.len())];
                    let res = http.get(format!("{base}/v1/jobs/{job}")).send().await;
                    let ok = matches!(&res, Ok(r) if r.status() == 200);
                    if let Ok(r) = res {
                        let _ = r.bytes().await;
                    }
                    let mut tally = tally.lock().await;
                    tally.poll.latencies.push(t.elapsed());
                    if !ok {
                        tally.poll.errors += 1;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let tally = std::mem::take(&mut *tally.lock().await);
    println!(
        "{:<8} {:>9} {:>9} {:>10} {:>10} {:>7}",
        "request", "count", "req/s", "p50 ms", "p99 ms", "errors"
    );
    let mut total = (0usize, 0u64);
    for (name, mut kind) in [
        ("upload", tally.upload),
        ("submit", tally.submit),
        ("poll", tally.poll),
    ] {
        kind.latencies.sort();
        let pct = |p: f64| {
            kind.latencies
                .get(((kind.latencies.len() as f64 - 1.0) * p).round() as usize)
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        println!(
            "{name:<8} {:>9} {:>9.1} {:>10.2} {:>10.2} {:>7}",
            kind.latencies.len(),
            kind.latencies.len() as f64 / elapsed,
            pct(0.5),
            pct(0.99),
            kind.errors
        );
        total.0 += kind.latencies.len();
        total.1 += kind.errors;
    }
    println!(
        "{:<8} {:>9} {:>9.1} {:>10} {:>10} {:>7}",
        "all",
        total.0,
        total.0 as f64 / elapsed,
        "",
        "",
        total.1
    );
    if let Some(app) = app {
        app.stop().await?;
    }
    Ok(())
}
