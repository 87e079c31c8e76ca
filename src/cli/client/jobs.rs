//! `compressd jobs list|show|watch|cancel|delete`.

use futures::StreamExt;
use serde_json::{json, Value};

use super::args::JobsCommand;
use super::connection::{read_json, Connection, Failure};
use super::follow::follow;
use super::progress::human_bytes;

pub async fn jobs(command: JobsCommand) -> Result<(), Failure> {
    match command {
        JobsCommand::List {
            status,
            model,
            op,
            limit,
            server,
        } => {
            let conn = Connection::new(&server)?;
            let mut query = vec![("limit", limit.to_string())];
            query.extend(status.map(|s| ("status", s)));
            query.extend(model.map(|m| ("model_id", m)));
            query.extend(op.map(|o| ("op", o)));
            let url = conn.url("/v1/jobs");
            let res = conn
                .send("listing jobs", |http| Ok(http.get(&url).query(&query)))
                .await?;
            let page = read_json("listing jobs", res).await?;
            let mut table = format!(
                "{:<36}  {:<9}  {:>5}  {:<24}  created",
                "id", "status", "done", "pipeline"
            );
            for job in page["data"].as_array().into_iter().flatten() {
                table.push_str(&format!(
                    "\n{:<36}  {:<9}  {:>4.0}%  {:<24}  {}",
                    job["id"].as_str().unwrap_or_default(),
                    job["status"].as_str().unwrap_or_default(),
                    job["progress"].as_f64().unwrap_or(0.0) * 100.0,
                    ops(job),
                    job["created_at"].as_str().unwrap_or_default()
                ));
            }
            conn.print(&page, &table);
        }
        JobsCommand::Show { id, full, server } => {
            let conn = Connection::new(&server)?;
            let view = if full { "full" } else { "summary" };
            let job = conn
                .get_json("looking up the job", &format!("/v1/jobs/{id}?view={view}"))
                .await?;
            conn.print(&job, &summary(&job));
        }
        JobsCommand::Watch { id, server } => {
            let conn = Connection::new(&server)?;
            let job = follow(&conn, &id).await?;
            conn.print(&job, &summary(&job));
        }
        JobsCommand::Logs { id, follow, server } => {
            let conn = Connection::new(&server)?;
            print_log(&conn, &id, follow).await?;
        }
        JobsCommand::Cancel { id, server } => {
            let conn = Connection::new(&server)?;
            let url = conn.url(&format!("/v1/jobs/{id}/cancel"));
            let res = conn
                .send("cancelling the job", |http| Ok(http.post(&url)))
                .await?;
            let job = read_json("cancelling the job", res).await?;
            conn.say(&format!(
                "job {id}: cancel requested (status {})",
                job["status"].as_str().unwrap_or("unknown")
            ));
            conn.print(&job, "");
        }
        JobsCommand::Delete { id, server } => {
            let conn = Connection::new(&server)?;
            let url = conn.url(&format!("/v1/jobs/{id}"));
            conn.send("deleting the job", |http| Ok(http.delete(&url)))
                .await?;
            conn.say(&format!("job {id} deleted"));
            conn.print(&json!({ "id": id, "deleted": true }), "");
        }
    }
    Ok(())
}

/// Prints the job's log (JSON lines with --json), from where a dropped connection left off.
async fn print_log(conn: &Connection, id: &str, follow: bool) -> Result<(), Failure> {
    let url = conn.url(&format!("/v1/jobs/{id}/logs"));
    let mut after = 0i64;
    let mut pending = Vec::new();
    loop {
        let query = [
            ("format", "json".to_owned()),
            ("follow", follow.to_string()),
            ("after", after.to_string()),
        ];
        let res = conn
            .send("reading the job's log", |http| {
                Ok(http.get(&url).query(&query))
            })
            .await?;
        let mut body = res.bytes_stream();
        let mut complete = true;
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else {
                complete = false;
                break;
            };
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let Ok(entry) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                after = entry["seq"].as_i64().unwrap_or(after);
                if conn.json {
                    println!("{entry}");
                } else {
                    println!(
                        "{} [attempt {}] {}",
                        entry["at"].as_str().unwrap_or_default(),
                        entry["attempt"],
                        entry["line"].as_str().unwrap_or_default()
                    );
                }
            }
        }
        if complete {
            return Ok(());
        }
        pending.clear();
        conn.say("the log stream dropped; reconnecting");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// The pipeline as its ops joined by arrows.
fn ops(job: &Value) -> String {
    job["pipeline"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["op"].as_str())
        .collect::<Vec<_>>()
        .join("→")
}

/// A job in a few lines: status, pipeline, what it made, why it failed.
pub fn summary(job: &Value) -> String {
    let mut lines = vec![format!(
        "job {}  {}  attempt {}/{}",
        job["id"].as_str().unwrap_or_default(),
        job["status"].as_str().unwrap_or_default(),
        job["attempts"],
        job["max_attempts"]
    )];
    lines.push(format!("pipeline: {}", ops(job)));
    // A failed job's error is a problem document; its detail says what went wrong.
    if let Some(error) = job["error"]["detail"].as_str() {
        lines.push(format!("error: {error}"));
    }
    if let Some(queue) = job["queue"].as_object() {
        let start = queue["estimated_start_at"].as_str().map_or_else(
            || "no estimate yet".to_owned(),
            |at| format!("start about {at}"),
        );
        lines.push(format!(
            "queue: position {} of its tenant, {} jobs ahead in all; {start}",
            queue["position"], queue["jobs_ahead"]
        ));
    }
    if let Some(result) = job["result"].as_object() {
        lines.push(format!(
            "result: {} ({}, sha256 {})  {}",
            result["file_name"].as_str().unwrap_or_default(),
            human_bytes(result["size_bytes"].as_u64().unwrap_or(0)),
            result["sha256"].as_str().unwrap_or_default(),
            result["file_url"].as_str().unwrap_or_default()
        ));
    }
    let artifacts: Vec<&str> = job["artifacts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["kind"].as_str())
        .collect();
    if !artifacts.is_empty() {
        lines.push(format!("artifacts: {}", artifacts.join(", ")));
    }
    lines.join("\n")
}
