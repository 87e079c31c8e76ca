//! What a cluster test or soak run starts for itself: a PostgreSQL cluster of its own (so that
//! restarting it disturbs nothing else) and an S3-compatible bucket (moto's server, PyPI
//! `moto[server]`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nobody listens on at the moment.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A PostgreSQL cluster of this test's own, so that restarting it disturbs no other test.
pub struct PrivatePg {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

fn as_postgres(program: &Path) -> Command {
    // PostgreSQL refuses to run as root; CI runs as root.
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PrivatePg {
    /// None (the test is skipped, and says so) when PostgreSQL's programs are not installed.
    pub fn start() -> Option<PrivatePg> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("initdb").exists());
        let Some(bin) = bin else {
            eprintln!("skipped: PostgreSQL server programs not found under /usr/lib/postgresql");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("compressd-pg")
            .tempdir_in("/tmp")
            .unwrap();
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path())
            .status();
        let data = dir.path().join("data");
        let ok = as_postgres(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "initdb");
        let pg = PrivatePg {
            bin,
            data,
            port: free_port(),
            _dir: dir,
        };
        pg.ctl(&["start"]);
        Some(pg)
    }

    pub fn ctl(&self, action: &[&str]) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.data.parent().unwrap().display()
        );
        let ok = as_postgres(&self.bin.join("pg_ctl"))
            .args(action)
            .args(["-w", "-m", "fast", "-o", &opts, "-l"])
            .arg(self.data.parent().unwrap().join("log"))
            .arg("-D")
            .arg(&self.data)
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "pg_ctl {action:?}");
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// moto's S3 server on a port of its own; killed on drop.
pub struct Bucket {
    server: Child,
    pub endpoint: String,
    pub name: &'static str,
}

impl Drop for Bucket {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

impl Bucket {
    pub async fn start(http: &reqwest::Client) -> Option<Bucket> {
        let port = free_port();
        let server = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(server) = server else {
            assert!(
                std::env::var("COMPRESSD_REQUIRE_S3").is_err(),
                "COMPRESSD_REQUIRE_S3 is set but moto_server could not be started"
            );
            eprintln!("object_storage: no moto_server (pip install 'moto[server]'); skipped");
            return None;
        };
        let bucket = Bucket {
            server,
            endpoint: format!("http://127.0.0.1:{port}"),
            name: "compressd-test",
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let made = http
                .put(format!("{}/{}", bucket.endpoint, bucket.name))
                .send()
                .await;
            if made.is_ok_and(|r| r.status().is_success()) {
                return Some(bucket);
            }
            assert!(Instant::now() < deadline, "moto_server did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The keys in the bucket under `prefix`.
    pub async fn keys(&self, http: &reqwest::Client, prefix: &str) -> Vec<String> {
        let field = |text: &str, tag: &str| -> Vec<String> {
            text.split(&format!("<{tag}>"))
                .skip(1)
                .filter_map(|s| s.split(&format!("</{tag}>")).next())
                .map(str::to_owned)
                .collect()
        };
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = http
                .get(format!("{}/{}", self.endpoint, self.name))
                .query(&[("list-type", "2"), ("prefix", prefix)]);
            if let Some(t) = &token {
                req = req.query(&[("continuation-token", t)]);
            }
            let listing = req.send().await.unwrap().text().await.unwrap();
            keys.extend(field(&listing, "Key"));
            // A listing stops at 1000 keys; the rest come with the token it ends with.
            token = field(&listing, "NextContinuationToken").pop();
            if token.is_none() {
                return keys;
            }
        }
    }

    pub fn env<'a>(&'a self, prefix: &'a str, data_dir: &'a str) -> Vec<(&'a str, String)> {
        vec![
            ("COMPRESSD_BLOB_URL", format!("s3://{}/{prefix}", self.name)),
            ("COMPRESSD_DATA_DIR", data_dir.to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false".into()),
        ]
    }
}
