//! Soak: a cluster on one machine, treated badly. Two API processes and three worker processes,
//! each with a data directory of its own, share a private PostgreSQL cluster and an S3 bucket
//! (moto's server) and nothing else. Jobs on models of mixed sizes go in through both APIs
//! while a random worker is killed (SIGKILL) and restarted every few seconds, and PostgreSQL is
//! restarted once. Afterwards it checks what the service promises: every job succeeded, each
//! with exactly one set of artifacts; no object in the bucket that no row names (once the
//! orphan pass has run); no scratch folder left; and it prints the APIs' error rate and
//! latency while all this went on.
//!
//! `cargo bench --bench soak` (`SOAK_JOBS`, default 200; `SOAK_KILL_EVERY_MS`, default 3000).
//! Needs PostgreSQL's server programs and `moto_server` (`pip install 'moto[server]'`).

#[path = "../tests/common/cluster.rs"]
mod cluster;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use cluster::{free_port, Bucket, PrivatePg};

const PREFIX: &str = "soak";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // Failing after the processes, the database and the bucket are gone (they go on drop).
    if !runtime.block_on(soak()) {
        std::process::exit(1);
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One compressd process of the cluster, restartable on the same data directory and port.
struct Replica {
    role: &'static str,
    bind: String,
    dir: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Replica {
    fn start(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_compressd"))
            .arg("serve")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("COMPRESSD_ROLE", self.role)
            .env("COMPRESSD_BIND", &self.bind)
            .env("COMPRESSD_DATA_DIR", &self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start compressd");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

/// A safetensors file of two f32 matrices, about `bytes` long, values from `seed`.
fn model(bytes: usize, seed: u64) -> Vec<u8> {
    let cols = 256;
    let rows = (bytes / 4 / cols / 2).max(1);
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let data: Vec<Vec<u8>> = (0..2)
        .map(|_| {
            (0..rows * cols)
                .flat_map(|_| next().to_le_bytes())
                .collect()
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .enumerate()
        .map(|(i, d)| {
            (
                format!("layer{i}.weight"),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![rows, cols], d)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, &None).unwrap()
}

/// Latency and errors of the requests the driver made, by kind.
#[derive(Default)]
struct Calls {
    by_kind: BTreeMap<&'static str, (Vec<f64>, u64)>,
}

impl Calls {
    fn record(&mut self, kind: &'static str, seconds: f64, ok: bool) {
        let entry = self.by_kind.entry(kind).or_default();
        entry.0.push(seconds);
        if !ok {
            entry.1 += 1;
        }
    }
}

async fn soak() -> bool {
    let jobs = env_number("SOAK_JOBS", 200) as usize;
    let kill_every = Duration::from_millis(env_number("SOAK_KILL_EVERY_MS", 3000));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let Some(pg) = PrivatePg::start() else {
        eprintln!("soak: no PostgreSQL server programs");
        return false;
    };
    let Some(bucket) = Bucket::start(&http).await else {
        eprintln!("soak: no moto_server");
        return false;
    };
    let root = tempfile::tempdir().unwrap();
    let mut env: Vec<(String, String)> = bucket
        .env(PREFIX, "unused")
        .into_iter()
        .filter(|(k, _)| *k != "COMPRESSD_DATA_DIR")
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    for (k, v) in [
        ("DATABASE_URL", pg.url()),
        ("COMPRESSD_WORKERS", "1".into()),
        ("COMPRESSD_LEASE_MS", "3000".into()),
        ("COMPRESSD_POLL_MS", "50".into()),
        ("COMPRESSD_MAX_ATTEMPTS", "20".into()),
        ("COMPRESSD_RETRY_BASE_MS", "200".into()),
        ("COMPRESSD_SWEEP_MS", "1000".into()),
        ("COMPRESSD_ORPHAN_SWEEP_MS", "2000".into()),
        ("COMPRESSD_ORPHAN_SETTLE_MS", "5000".into()),
        ("COMPRESSD_LOG_FORMAT", "json".into()),
        ("RUST_LOG", "info".into()),
    ] {
        env.push((k.to_owned(), v));
    }
    let replica = |role: &'static str, name: &str| {
        let dir = root.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        Replica {
            role,
            bind: format!("127.0.0.1:{}", free_port()),
            dir,
            env: env.clone(),
            child: None,
        }
    };
    let mut apis = [replica("api", "api-0"), replica("api", "api-1")];
    let workers = Arc::new(Mutex::new(vec![
        replica("worker", "worker-0"),
        replica("worker", "worker-1"),
        replica("worker", "worker-2"),
    ]));
    // One API first, so that the migrations have run when the others start.
    apis[0].start();
    let bases: Vec<String> = apis.iter().map(|a| format!("http://{}", a.bind)).collect();
    wait_ready(&http, &bases[0]).await;
    apis[1].start();
    for w in workers.lock().unwrap().iter_mut() {
        w.start();
    }
    wait_ready(&http, &bases[1]).await;

    let sizes = [64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20];
    let mut models = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let res = http
            .post(format!("{}/v1/models?name=soak-{i}", bases[i % 2]))
            .header("content-type", "application/octet-stream")
            .body(model(*size, i as u64))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "upload");
        models.push(res.json::<Value>().await.unwrap()["id"].clone());
    }
    let pipelines = [
        json!([{"op": "prune", "method": "magnitude", "sparsity": 0.5}]),
        json!([{"op": "quantize", "scheme": "int8"}]),
        json!([{"op": "prune", "sparsity": 0.7, "scope": "global"}, {"op": "quantize", "scheme": "int8"}]),
    ];

    let calls = Arc::new(Mutex::new(Calls::default()));
    let started = Instant::now();
    let stop = tokio_util::sync::CancellationToken::new();

    // The killer: a random worker, SIGKILL, restarted a moment later on the same disk.
    let kills = Arc::new(Mutex::new(0u32));
    let killer = tokio::spawn({
        let (workers, stop, kills) = (workers.clone(), stop.clone(), kills.clone());
        async move {
            let mut n = 0usize;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(kill_every) => {}
                    _ = stop.cancelled() => return,
                }
                n = n.wrapping_mul(7).wrapping_add(3);
                let i = n % 3;
                workers.lock().unwrap()[i].kill();
                *kills.lock().unwrap() += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
                workers.lock().unwrap()[i].start();
            }
        }
    });

    // The poller: what a dashboard does, timed, through both APIs.
    let poller = tokio::spawn({
        let (http, bases, calls, stop) = (http.clone(), bases.clone(), calls.clone(), stop.clone());
        async move {
            let mut i = 0;
            while !stop.is_cancelled() {
                let t = Instant::now();
                let ok = http
                    .get(format!("{}/v1/jobs?limit=20", bases[i % 2]))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                calls
                    .lock()
                    .unwrap()
                    .record("list jobs", t.elapsed().as_secs_f64(), ok);
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });

    // Submissions, each with its own Idempotency-Key, retried until answered: a retry after a
    // lost answer must not make a second job.
    let mut ids = Vec::with_capacity(jobs);
    let mut pg_restarted = false;
    for n in 0..jobs {
        if !pg_restarted && n == jobs / 3 {
            println!("restarting PostgreSQL at job {n}");
            pg.ctl(&["restart"]);
            pg_restarted = true;
        }
        let body = json!({
            "model_id": models[n % models.len()],
            "pipeline": pipelines[n % pipelines.len()],
            "cache": false,
        });
        let key = format!("soak-{n}");
        let id = loop {
            let t = Instant::now();
            let res = http
                .post(format!("{}/v1/jobs", bases[n % 2]))
                .header("idempotency-key", &key)
                .json(&body)
                .send()
                .await;
            let ok = res.as_ref().is_ok_and(|r| r.status() == 202);
            calls
                .lock()
                .unwrap()
                .record("submit", t.elapsed().as_secs_f64(), ok);
            if ok {
                break res.unwrap().json::<Value>().await.unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        ids.push(id);
    }
    println!(
        "{jobs} jobs submitted in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Every job reaches an end.
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut finished: BTreeMap<String, Value> = BTreeMap::new();
    while finished.len() < ids.len() {
        assert!(
            Instant::now() < deadline,
            "jobs still open after 30 minutes"
        );
        for id in &ids {
            if finished.contains_key(id) {
                continue;
            }
            let t = Instant::now();
            let res = http
                .get(format!("{}/v1/jobs/{id}", bases[finished.len() % 2]))
                .send()
                .await;
            let ok = res.as_ref().is_ok_and(|r| r.status().is_success());
            calls
                .lock()
                .unwrap()
                .record("get job", t.elapsed().as_secs_f64(), ok);
            if let Ok(res) = res {
                if let Ok(job) = res.json::<Value>().await {
                    if ["succeeded", "failed", "cancelled"]
                        .contains(&job["status"].as_str().unwrap_or(""))
                    {
                        finished.insert(id.clone(), job);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.cancel();
    let _ = killer.await;
    let _ = poller.await;
    // Restarted workers sweep what their killed predecessors left; give the orphan pass time.
    for w in workers.lock().unwrap().iter_mut() {
        if w.child.is_none() {
            w.start();
        }
    }
    tokio::time::sleep(Duration::from_secs(15)).await;

    let mut report = Report::default();
    for job in finished.values() {
        report.count(job);
    }
    let succeeded: Vec<&str> = finished
        .iter()
        .filter(|(_, j)| j["status"] == "succeeded")
        .map(|(id, _)| id.as_str())
        .collect();
    let not_once = jobs_not_recorded_once(&pg.url(), &succeeded).await;
    report.bad_results += not_once.len();
    let unnamed = unnamed_objects(&http, &bucket, &pg.url()).await;
    let scratch: Vec<PathBuf> = workers
        .lock()
        .unwrap()
        .iter()
        .flat_map(|w| entries(&w.dir.join("scratch")))
        .collect();

    println!("\nsoak: {jobs} jobs, 2 API + 3 worker processes, one PostgreSQL (restarted once), one bucket");
    println!(
        "wall time {elapsed:.1} s; workers killed {} times",
        kills.lock().unwrap()
    );
    println!(
        "jobs: {} succeeded, {} failed, {} cancelled; attempts per succeeded job: {:?}",
        report.succeeded, report.failed, report.cancelled, report.attempts
    );
    println!(
        "succeeded jobs without exactly one attempt's artifacts (or without a result): {}",
        report.bad_results
    );
    println!(
        "objects no row names after the orphan pass: {}",
        unnamed.len()
    );
    println!("scratch folders left: {}", scratch.len());
    println!("\n| request | count | errors | p50 ms | p99 ms | max ms |\n| --- | ---: | ---: | ---: | ---: | ---: |");
    for (kind, (mut times, errors)) in std::mem::take(&mut calls.lock().unwrap().by_kind) {
        times.sort_by(f64::total_cmp);
        let q = |p: f64| times[((times.len() - 1) as f64 * p) as usize] * 1e3;
        println!(
            "| {kind} | {} | {errors} | {:.1} | {:.1} | {:.1} |",
            times.len(),
            q(0.5),
            q(0.99),
            q(1.0)
        );
    }
    for w in workers.lock().unwrap().iter_mut() {
        w.terminate();
    }
    for a in apis.iter_mut() {
        a.terminate();
    }
    let failed = report.failed + report.cancelled + report.bad_results;
    if failed > 0 || !unnamed.is_empty() || !scratch.is_empty() {
        for id in not_once.iter().take(10) {
            println!("not recorded once: {id}");
        }
        for key in unnamed.iter().take(10) {
            println!("unnamed object: {key}");
        }
        for dir in scratch.iter().take(10) {
            println!("scratch left: {}", dir.display());
        }
        println!("logs under {}", root.keep().display());
        return false;
    }
    true
}

#[derive(Default)]
struct Report {
    succeeded: usize,
    failed: usize,
    cancelled: usize,
    bad_results: usize,
    attempts: BTreeMap<u64, usize>,
}

impl Report {
    fn count(&mut self, job: &Value) {
        match job["status"].as_str() {
            Some("succeeded") => self.succeeded += 1,
            Some("failed") => {
                self.failed += 1;
                println!("failed: {} {}", job["id"], job["error"]["detail"]);
            }
            _ => self.cancelled += 1,
        }
        *self
            .attempts
            .entry(job["attempts"].as_u64().unwrap_or(0))
            .or_default() += 1;
        if job["status"] == "succeeded" && job["result"].is_null() {
            self.bad_results += 1;
        }
    }
}

/// Succeeded jobs whose recorded artifacts are not exactly one attempt's: none at all, files
/// from two attempts (`artifacts/<job>/<lease token>/…`), or a file recorded twice.
async fn jobs_not_recorded_once(db: &str, succeeded: &[&str]) -> Vec<String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(db).await.unwrap();
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT job_id, COUNT(*), COUNT(DISTINCT file_name), COUNT(DISTINCT split_part(blob_key, '/', 3))
         FROM artifacts GROUP BY job_id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let once: HashSet<String> = rows
        .into_iter()
        .filter(|(_, n, names, attempts)| n == names && *attempts == 1)
        .map(|(job, ..)| job)
        .collect();
    succeeded
        .iter()
        .filter(|id| !once.contains(**id))
        .map(|id| id.to_string())
        .collect()
}

/// Keys in the bucket that no row of the database names.
async fn unnamed_objects(http: &reqwest::Client, bucket: &Bucket, db: &str) -> Vec<String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(db).await.unwrap();
    let named: Vec<(String,)> = sqlx::query_as(
        "SELECT blob_key FROM models UNION SELECT blob_key FROM datasets
         UNION SELECT blob_key FROM artifacts UNION SELECT blob_key FROM upload_parts
         UNION SELECT blob_key FROM blob_reservations UNION SELECT blob_key FROM model_files",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let named: HashSet<String> = named.into_iter().map(|(k,)| k).collect();
    bucket
        .keys(http, PREFIX)
        .await
        .into_iter()
        .filter(|k| !named.contains(k.trim_start_matches(&format!("{PREFIX}/"))))
        .collect()
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect()
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "{base} did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
