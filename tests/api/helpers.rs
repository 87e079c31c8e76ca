//! A real compressd on a random port, against a database of its own, spoken to over HTTP.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use compressd::config::Config;
use compressd::startup::Application;
use compressd::worker::{Outcome, Worker};
use reqwest::multipart;
use serde_json::{json, Value};
use sqlx::Connection;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh database for one test: a new SQLite file, or a new PostgreSQL database.
pub struct TestDb {
    pub url: String,
    pg_admin: Option<(String, String)>,
}

impl TestDb {
    /// None when the backend is PostgreSQL and TEST_DATABASE_URL is unset.
    pub async fn create(backend: Backend, dir: &std::path::Path) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => Some(TestDb {
                url: format!("sqlite://{}", dir.join("compressd.db").display()),
                pg_admin: None,
            }),
            Backend::Postgres => {
                let admin = std::env::var("TEST_DATABASE_URL").ok()?;
                let name = format!("compressd_test_{}", Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .expect("connect to TEST_DATABASE_URL");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create database");
                let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
                Some(TestDb {
                    url: format!("{base}/{name}"),
                    pg_admin: Some((admin.clone(), name)),
                })
            }
        }
    }

    pub async fn drop_database(&self) {
        if let Some((admin, name)) = &self.pg_admin {
            if let Ok(mut conn) = sqlx::PgConnection::connect(admin).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub app: Option<Application>,
    pub config: Config,
    pub db: std::sync::Arc<TestDb>,
    /// Holds the data directory and SQLite file until the test ends.
    _dir: std::sync::Arc<tempfile::TempDir>,
}

pub fn test_config(db_url: &str, data_dir: PathBuf) -> Config {
    let mut config = Config::defaults();
    config.bind = "127.0.0.1:0".into();
    config.database_url = db_url.into();
    config.data_dir = data_dir;
    config.workers = Some(0);
    config.poll_ms = 50;
    config.retry_base_ms = 50;
    config.shutdown_grace_seconds = 5;
    // Jobs run in processes of the server binary (this test binary cannot run them).
    config.job_runner = Some(PathBuf::from(env!("CARGO_BIN_EXE_compressd")));
    config
}

impl TestApp {
    /// Starts an app with no background workers (tests drive the queue with `run_next_job`)
    /// unless `tweak` says otherwise. None when the backend is not available.
    pub async fn spawn(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<TestApp> {
        if std::env::var("TEST_LOG").is_ok() {
            compressd::telemetry::init_logging("text");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let Some(db) = TestDb::create(backend, dir.path()).await else {
            eprintln!("postgres backend skipped: TEST_DATABASE_URL is not set");
            return None;
        };
        let mut config = test_config(&db.url, dir.path().join("data"));
        tweak(&mut config);
        let mut app = Self::start(config, std::sync::Arc::new(db), std::sync::Arc::new(dir)).await;
        app.http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Some(app)
    }

    async fn start(
        config: Config,
        db: std::sync::Arc<TestDb>,
        dir: std::sync::Arc<tempfile::TempDir>,
    ) -> TestApp {
        let app = Application::build(config.clone())
            .await
            .expect("app starts");
        TestApp {
            base: format!("http://{}", app.address()),
            http: reqwest::Client::new(),
            app: Some(app),
            config,
            db,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn worker(&self) -> Worker {
        self.app.as_ref().expect("running").worker()
    }

    pub async fn stop(&mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await.expect("clean stop");
        }
    }

    pub async fn finish(mut self) {
        self.stop().await;
        if std::sync::Arc::strong_count(&self.db) == 1 {
            self.db.drop_database().await;
        }
    }

    pub async fn upload(&self, bytes: Vec<u8>, name: &str) -> reqwest::Response {
        let part = multipart::Part::bytes(bytes).file_name(format!("{name}.safetensors"));
        let form = multipart::Form::new()
            .text("name", name.to_owned())
            .part("file", part);
        self.http
            .post(self.url("/v1/models"))
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    /// Uploads and returns the model id, asserting success.
    pub async fn upload_ok(&self, bytes: Vec<u8>, name: &str) -> String {
        let res = self.upload(bytes, name).await;
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
        res.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn post_job(&self, body: Value) -> reqwest::Response {
        self.http
            .post(self.url("/v1/jobs"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn submit(&self, model_id: &str, pipeline: Value) -> String {
        let res = self
            .post_job(json!({"model_id": model_id, "pipeline": pipeline}))
            .await;
        assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
        res.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Submits a job on a model and dataset (as returned by their uploads).
    pub async fn submit_with_dataset(
        &self,
        model: &Value,
        dataset: &Value,
        pipeline: Value,
    ) -> String {
        let res = self
            .post_job(
                json!({"model_id": model["id"], "dataset_id": dataset["id"], "pipeline": pipeline}),
            )
            .await;
        assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
        res.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let res = self.http.get(self.url(path)).send().await.unwrap();
        assert!(res.status().is_success(), "GET {path}: {}", res.status());
        res.json().await.unwrap()
    }

    pub async fn job(&self, id: &str) -> Value {
        self.get_json(&format!("/v1/jobs/{id}?view=full")).await
    }

    pub async fn download(&self, path: &str) -> Vec<u8> {
        let res = self.http.get(self.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "GET {path}");
        res.bytes().await.unwrap().to_vec()
    }

    /// Runs queued jobs on this test's worker until none is left.
    pub async fn run_jobs(&self) -> Vec<Outcome> {
        let worker = self.worker();
        let mut outcomes = Vec::new();
        loop {
            match worker.run_next_job().await.expect("store reachable") {
                Outcome::Idle | Outcome::StorageUnavailable => return outcomes,
                o => outcomes.push(o),
            }
        }
    }

    /// The worker that holds or last held the job (`host/pid/id`): the operator's knowledge,
    /// read from the store (tenants are not told).
    pub async fn worker_of(&self, job: &str) -> String {
        let id = Uuid::parse_str(job).unwrap();
        let store = self.app.as_ref().expect("running").store();
        let job = store.job_by_id(id).await.unwrap().expect("a job");
        job.worker.unwrap_or_default()
    }

    /// Polls until the job reaches `status`.
    pub async fn wait_for(&self, id: &str, status: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let job = self.job(id).await;
            if job["status"] == status {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} did not become {status}: {job:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The model artifact of a finished job, downloaded and parsed.
    pub async fn model_artifact(&self, job: &Value) -> Vec<u8> {
        let artifact = job["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["kind"] == "model")
            .expect("a model artifact");
        self.download(artifact["file_url"].as_str().unwrap()).await
    }
}

/// The server binary as its own process, on this test's database and data directory, under
/// `limits`: what a service manager would set, e.g. `Limits::file_blocks(n)` caps the size of
/// any file it writes (512-byte blocks), as a full disk would, with SIGXFSZ ignored so that
/// it is an error; `Limits::memory_kib(n)` caps its address space.
pub fn spawn_server(app: &TestApp, bind: &str, limits: Limits, extra: &[(&str, &str)]) -> Child {
    server_command(app, bind, limits, extra)
        .spawn()
        .expect("start compressd")
}

/// The command [`spawn_server`] runs, for a test that wants its output (the server logs to
/// stdout; stdout and stderr go nowhere unless TEST_LOG is set or the caller redirects them).
pub fn server_command(
    app: &TestApp,
    bind: &str,
    limits: Limits,
    extra: &[(&str, &str)],
) -> Command {
    let limit = match limits {
        Limits::None => String::new(),
        Limits::FileBlocks(b) => format!("ulimit -f {b}; "),
        Limits::MemoryKib(k) => format!("ulimit -v {k}; "),
    };
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "trap '' XFSZ; {limit}exec {}",
            env!("CARGO_BIN_EXE_compressd")
        ))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &app.config.database_url)
        .env("COMPRESSD_DATA_DIR", &app.config.data_dir)
        .env("COMPRESSD_BIND", bind)
        .env("COMPRESSD_POLL_MS", "50")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    if std::env::var("TEST_LOG").is_err() {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    }
    cmd
}

/// The body of a GET of `url`, as text (a server's /metrics, a report page).
pub async fn get_text(http: &reqwest::Client, url: &str) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}

/// Waits until the server at `base` answers /readyz with success.
pub async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http.get(format!("{base}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM to a server process, then waits for it to exit.
pub async fn stop_server(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
}

/// A key for `tenant` (made if new) with its own rate, through `compressd keys create` on the
/// app's database, as an operator makes one.
pub fn create_key(app: &TestApp, tenant: &str, rate_per_minute: u32) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_compressd"))
        .args(["keys", "create", "--tenant", tenant])
        .args(["--rate-limit-per-minute", &rate_per_minute.to_string()])
        .args(["--database-url", &app.config.database_url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A port nobody listens on at the moment, for a server started as its own process.
pub use crate::cluster::free_port;

#[derive(Debug, Clone, Copy)]
pub enum Limits {
    None,
    FileBlocks(u32),
    MemoryKib(u64),
}

/// Every path below `dir`, directories included (empty when `dir` does not exist).
pub fn paths_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(paths_under(&path));
        }
        out.push(path);
    }
    out
}

/// Every file below `dir`.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    paths_under(dir)
        .into_iter()
        .filter(|p| p.is_file())
        .collect()
}

/// Runs `$test(Backend)` once per backend, as `sqlite::$test` and `postgres::$test`.
#[macro_export]
macro_rules! on_each_backend {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}
