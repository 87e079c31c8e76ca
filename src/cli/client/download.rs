//! `compressd download` and `compressd report`: an artifact to a file, resumed with Range from
//! `PATH.part` after an interruption, checked against its SHA-256 before it takes its name.

use std::io::Write;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use serde_json::Value;

use super::args::{DownloadArgs, ReportArgs};
use super::connection::{Connection, Failure};
use super::progress;
use crate::worker::prepare::hash_file;

pub async fn download(args: DownloadArgs) -> Result<(), Failure> {
    let conn = Connection::new(&args.server)?;
    let artifact = find_artifact(&conn, &args.id, args.kind.as_deref()).await?;
    let output = match args.output {
        Some(path) => path,
        None => PathBuf::from(
            Path::new(artifact["file_name"].as_str().unwrap_or("artifact"))
                .file_name()
                .unwrap_or_else(|| "artifact".as_ref()),
        ),
    };
    fetch(&conn, &artifact, &output).await?;
    conn.print(&artifact, &output.display().to_string());
    Ok(())
}

/// The artifact `id` names: a job's result (or its artifact of `kind`), or an artifact itself.
async fn find_artifact(conn: &Connection, id: &str, kind: Option<&str>) -> Result<Value, Failure> {
    let job = match conn
        .get_json("looking up the job", &format!("/v1/jobs/{id}"))
        .await
    {
        Ok(job) => job,
        Err(Failure::Input(_)) if kind.is_none() => {
            return conn
                .get_json("looking up the artifact", &format!("/v1/artifacts/{id}"))
                .await
                .map_err(|_| Failure::Input(format!("no job or artifact with id {id}")));
        }
        Err(e) => return Err(e),
    };
    pick(&job, kind)
}

/// The job's result, or its first artifact of `kind`.
pub fn pick(job: &Value, kind: Option<&str>) -> Result<Value, Failure> {
    let status = job["status"].as_str().unwrap_or("unknown");
    let found = match kind {
        None => Some(job["result"].clone()).filter(|r| r.is_object()),
        Some(kind) => job["artifacts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["kind"].as_str() == Some(kind))
            .cloned(),
    };
    found.ok_or_else(|| {
        let kinds: Vec<&str> = job["artifacts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["kind"].as_str())
            .collect();
        Failure::Input(format!(
            "job {} is {status} and has no {} artifact (it has: {})",
            job["id"].as_str().unwrap_or_default(),
            kind.unwrap_or("result"),
            if kinds.is_empty() {
                "none".to_owned()
            } else {
                kinds.join(", ")
            }
        ))
    })
}

/// Downloads `artifact` to `output`, resuming `output.part` when it is there.
pub async fn fetch(conn: &Connection, artifact: &Value, output: &Path) -> Result<(), Failure> {
    let size = artifact["size_bytes"].as_u64().unwrap_or(0);
    let sha256 = artifact["sha256"].as_str().unwrap_or_default().to_owned();
    let url = conn.url(artifact["file_url"].as_str().unwrap_or_default());
    let mut partial = output.as_os_str().to_owned();
    partial.push(".part");
    let partial = PathBuf::from(partial);
    let local = |e: std::io::Error| Failure::local(&partial.display().to_string(), e);
    let bar = progress::bytes(conn, size, "downloading");
    let mut restarts = 0;
    loop {
        let have = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        let have = if have > size { 0 } else { have };
        if have == size && size > 0 {
            break;
        }
        bar.set_position(have);
        let res = conn
            .send("downloading", |http| {
                let mut request = http.get(&url);
                if have > 0 {
                    request = request
                        .header("range", format!("bytes={have}-"))
                        .header("if-range", format!("\"{sha256}\""));
                }
                Ok(request)
            })
            .await?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&partial)
            .map_err(local)?;
        if res.status() != reqwest::StatusCode::PARTIAL_CONTENT {
            // The whole file came back (no Range support, or the file changed).
            file.set_len(0).map_err(local)?;
            bar.set_position(0);
        }
        let mut body = res.bytes_stream();
        let mut broke = false;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    file.write_all(&chunk).map_err(local)?;
                    bar.inc(chunk.len() as u64);
                }
                Err(e) => {
                    conn.say(&format!("the download broke off ({e}); resuming"));
                    broke = true;
                    break;
                }
            }
        }
        file.sync_all().map_err(local)?;
        if !broke {
            break;
        }
        restarts += 1;
        if restarts > 5 {
            return Err(Failure::Unavailable(
                "the download broke off six times; run the command again to resume".into(),
            ));
        }
    }
    bar.finish_and_clear();
    let path = partial.clone();
    let actual = tokio::task::spawn_blocking(move || hash_file(&path).map(|(sha, _)| sha))
        .await
        .map_err(|e| Failure::Unavailable(e.to_string()))?
        .map_err(local)?;
    if actual != sha256 {
        let _ = std::fs::remove_file(&partial);
        return Err(Failure::Unavailable(format!(
            "the download's SHA-256 is {actual}, the server's record says {sha256}; the partial file was removed, run the command again"
        )));
    }
    std::fs::rename(&partial, output)
        .map_err(|e| Failure::local(&output.display().to_string(), e))?;
    conn.say(&format!(
        "{} ({}, sha256 {sha256})",
        output.display(),
        progress::human_bytes(size)
    ));
    Ok(())
}

pub async fn report(args: ReportArgs) -> Result<(), Failure> {
    let conn = Connection::new(&args.server)?;
    let url = conn.url(&format!("/v1/jobs/{}/report", args.id));
    let res = conn
        .send("fetching the report", |http| Ok(http.get(&url)))
        .await?;
    let html = res
        .bytes()
        .await
        .map_err(|e| Failure::Unavailable(format!("fetching the report: {e}")))?;
    let output = args
        .output
        .unwrap_or_else(|| PathBuf::from(format!("report-{}.html", args.id)));
    std::fs::write(&output, &html).map_err(|e| Failure::local(&output.display().to_string(), e))?;
    if args.open {
        let opener = if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        };
        if let Err(e) = std::process::Command::new(opener).arg(&output).spawn() {
            conn.say(&format!(
                "could not run {opener} ({e}); the report is at {}",
                output.display()
            ));
        }
    }
    conn.print(
        &serde_json::json!({ "job_id": args.id, "path": output }),
        &output.display().to_string(),
    );
    Ok(())
}
