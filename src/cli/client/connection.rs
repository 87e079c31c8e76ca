//! One server as the client sees it: where it is, the key, and requests that are retried the
//! way a CI job needs (connection failures, 5xx and 429, honouring Retry-After) until a time
//! budget runs out. Failures come back sorted by what the user can do about them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use super::args::Server;

/// Why a command did not succeed; each has its own exit code (documented in docs/cli.md).
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The job ended failed or cancelled.
    #[error("{0}")]
    Job(String),
    /// Something the user must change: a flag, a local file, or a request the server refused.
    #[error("{0}")]
    Input(String),
    /// The server could not be reached, or kept failing, for the whole retry budget; or a
    /// download did not match its checksum.
    #[error("{0}")]
    Unavailable(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Job(_) => 1,
            Failure::Input(_) => 2,
            Failure::Unavailable(_) => 3,
        }
    }

    pub fn local(what: &str, e: impl std::fmt::Display) -> Failure {
        Failure::Input(format!("{what}: {e}"))
    }
}

/// The user's client settings file (`$XDG_CONFIG_HOME/compressd/client.json`, else
/// `~/.config/compressd/client.json`): `{"url": …, "api_key": …}`, both optional.
#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    url: Option<String>,
    api_key: Option<String>,
}

fn config_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("compressd").join("client.json"))
}

pub struct Connection {
    pub http: reqwest::Client,
    pub base: String,
    key: Option<String>,
    pub json: bool,
    budget: Duration,
}

impl Connection {
    pub fn new(server: &Server) -> Result<Connection, Failure> {
        let file = match config_file().filter(|p| p.exists()) {
            Some(path) => std::fs::read(&path)
                .map_err(|e| Failure::local(&path.display().to_string(), e))
                .and_then(|bytes| {
                    serde_json::from_slice::<ConfigFile>(&bytes).map_err(|e| {
                        Failure::Input(format!(
                            "{} is not a client config ({{\"url\": …, \"api_key\": …}}): {e}",
                            path.display()
                        ))
                    })
                })?,
            None => ConfigFile::default(),
        };
        let base = server
            .url
            .clone()
            .or(file.url)
            .unwrap_or_else(|| "http://127.0.0.1:8080".into());
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Failure::Input(format!(
                "--url '{base}' is not an http:// or https:// address"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("compressd-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::Unavailable(format!("starting the HTTP client: {e}")))?;
        Ok(Connection {
            http,
            base,
            key: server.api_key.clone().or(file.api_key),
            json: server.json,
            budget: Duration::from_secs(server.retry_seconds),
        })
    }

    /// `path` as a full URL; paths the server hands out (`file_url`, `part_url`) are already
    /// relative to the base.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// Sends the request `make` builds (again on each retry) and returns a successful answer.
    /// `what` names the request in messages.
    pub async fn send(
        &self,
        what: &str,
        make: impl Fn(&reqwest::Client) -> Result<RequestBuilder, Failure>,
    ) -> Result<Response, Failure> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(500);
        loop {
            let mut request = make(&self.http)?;
            if let Some(key) = &self.key {
                request = request.bearer_auth(key);
            }
            let (wait, why) = match request.send().await {
                Ok(res) if res.status().is_success() => return Ok(res),
                Ok(res) if retried(res.status()) => {
                    let wait = retry_after(&res).unwrap_or(backoff);
                    (wait, format!("{what}: {}", describe(res).await))
                }
                Ok(res) => return Err(Failure::Input(format!("{what}: {}", describe(res).await))),
                Err(e) if e.is_builder() => {
                    return Err(Failure::Input(format!("{what}: {}", chain(&e))))
                }
                Err(e) => (
                    backoff,
                    format!("{what}: could not reach {}: {}", self.base, chain(&e)),
                ),
            };
            if started.elapsed() + wait > self.budget {
                return Err(Failure::Unavailable(why));
            }
            eprintln!("{why}; retrying in {:.1} s", wait.as_secs_f64());
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// GET of a JSON document.
    pub async fn get_json(&self, what: &str, path: &str) -> Result<Value, Failure> {
        let url = self.url(path);
        let res = self.send(what, |http| Ok(http.get(&url))).await?;
        read_json(what, res).await
    }

    /// The JSON document on stdout with --json; otherwise `plain` on stdout (ids and the like,
    /// so that `$(compressd …)` captures them).
    pub fn print(&self, document: &Value, plain: &str) {
        if self.json {
            println!("{document}");
        } else if !plain.is_empty() {
            println!("{plain}");
        }
    }

    /// Human chatter: stderr, never with --json.
    pub fn say(&self, line: &str) {
        if !self.json {
            eprintln!("{line}");
        }
    }
}

pub async fn read_json(what: &str, res: Response) -> Result<Value, Failure> {
    res.json()
        .await
        .map_err(|e| Failure::Unavailable(format!("{what}: the answer was not JSON: {e}")))
}

fn retried(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
}

fn retry_after(res: &Response) -> Option<Duration> {
    let seconds: f64 = res
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs_f64(seconds.clamp(0.0, 300.0)))
}

/// The status and, for a problem+json answer, what the server said and the request id to
/// quote.
async fn describe(res: Response) -> String {
    let status = res.status();
    let header_id = res
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = res.json().await.unwrap_or(Value::Null);
    let detail = body
        .get("detail")
        .or_else(|| body.get("title"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_owned());
    let id = body
        .get("request_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or(header_id);
    match id {
        Some(id) => format!("{} {detail} (request id {id})", status.as_u16()),
        None => format!("{} {detail}", status.as_u16()),
    }
}

/// An error with its causes, which is where reqwest says what actually went wrong.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
