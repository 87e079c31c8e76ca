//! Following a job to its end through the server's event stream. When the stream drops (a
//! server restart, a proxy's idle timeout) the client reconnects with `Last-Event-ID`, so the
//! server resumes from what was seen rather than replaying it.

use futures::StreamExt;
use indicatif::ProgressBar;
use serde_json::Value;

use super::connection::{Connection, Failure};
use super::progress;

/// Follows job `id` until it ends; the job as it ended, or `Failure::Job` if it failed or was
/// cancelled.
pub async fn follow(conn: &Connection, id: &str) -> Result<Value, Failure> {
    let url = conn.url(&format!("/v1/jobs/{id}/events"));
    let mut shown = Shown::new(conn);
    let mut last_id: Option<String> = None;
    let done = loop {
        let res = conn
            .send("following the job", |http| {
                let mut request = http.get(&url).header("accept", "text/event-stream");
                if let Some(last) = &last_id {
                    request = request.header("last-event-id", last);
                }
                Ok(request)
            })
            .await?;
        let mut parser = EventParser::default();
        let mut body = res.bytes_stream();
        let mut finished = None;
        'stream: while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { break };
            for event in parser.push(&chunk) {
                if let Some(event_id) = event.id {
                    last_id = Some(event_id);
                }
                let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                match event.name.as_str() {
                    "done" => {
                        finished = Some(data);
                        break 'stream;
                    }
                    "status" => shown.status(&data),
                    "progress" => shown.progress(&data),
                    _ => {}
                }
            }
        }
        if let Some(job) = finished {
            break job;
        }
        // The stream ended early: the job may have ended meanwhile, or be gone.
        let job = conn
            .get_json("looking up the job", &format!("/v1/jobs/{id}"))
            .await?;
        if matches!(
            job["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            break job;
        }
        conn.say("the event stream dropped; reconnecting");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    shown.bar.finish_and_clear();
    match done["status"].as_str() {
        Some("succeeded") => {
            conn.say(&format!("job {id} succeeded"));
            Ok(done)
        }
        status => Err(Failure::Job(format!(
            "job {id} {}: {}",
            status.unwrap_or("ended"),
            done["error"]["detail"]
                .as_str()
                .unwrap_or("no reason given")
        ))),
    }
}

/// What the user has been shown: a bar at a terminal, else a line per status and per tenth.
struct Shown<'a> {
    conn: &'a Connection,
    bar: ProgressBar,
    status: String,
    tenth: i64,
}

impl<'a> Shown<'a> {
    fn new(conn: &'a Connection) -> Shown<'a> {
        Shown {
            conn,
            bar: progress::job(conn),
            status: String::new(),
            tenth: -1,
        }
    }

    fn status(&mut self, data: &Value) {
        let status = data["status"].as_str().unwrap_or("unknown").to_owned();
        self.bar.set_prefix(status.clone());
        if status != self.status && !progress::bars_shown(self.conn) {
            let attempt = data["attempts"].as_u64().unwrap_or(0);
            self.conn.say(&format!("job {status} (attempt {attempt})"));
        }
        self.status = status;
        self.progress(data);
    }

    fn progress(&mut self, data: &Value) {
        let fraction = data["progress"].as_f64().unwrap_or(0.0).clamp(0.0, 1.0);
        self.bar.set_position((fraction * 1000.0) as u64);
        let detail = describe_detail(&data["detail"]);
        self.bar.set_message(detail.clone());
        let tenth = (fraction * 10.0) as i64;
        if tenth > self.tenth && !progress::bars_shown(self.conn) && self.status == "running" {
            self.tenth = tenth;
            self.conn
                .say(&format!("progress {:.0}% {detail}", fraction * 100.0));
        }
    }
}

/// The server's progress detail in a few words: step, epoch or block, accuracy.
fn describe_detail(detail: &Value) -> String {
    let mut words = Vec::new();
    if let Some(op) = detail["op"].as_str() {
        words.push(op.to_owned());
    }
    for (at, of, name) in [
        ("epoch", "epochs", "epoch"),
        ("round", "rounds", "round"),
        ("block", "blocks", "block"),
    ] {
        if let (Some(a), Some(o)) = (detail[at].as_u64(), detail[of].as_u64()) {
            words.push(format!("{name} {a}/{o}"));
        }
    }
    if let Some(trial) = detail["trial"].as_u64() {
        words.push(format!("trial {trial}"));
    }
    if let Some(accuracy) = detail["accuracy"].as_f64() {
        words.push(format!("accuracy {:.2}%", accuracy * 100.0));
    }
    words.join(" ")
}

#[derive(Debug, Default)]
struct Event {
    name: String,
    data: String,
    id: Option<String>,
}

/// Server-sent events from a byte stream (the `text/event-stream` format: `field: value` lines,
/// an empty line ends an event).
#[derive(Default)]
struct EventParser {
    line: Vec<u8>,
    event: Event,
}

impl EventParser {
    fn push(&mut self, chunk: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        for &b in chunk {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let line = String::from_utf8_lossy(&self.line)
                .trim_end_matches('\r')
                .to_owned();
            self.line.clear();
            if line.is_empty() {
                let event = std::mem::take(&mut self.event);
                if !event.name.is_empty() || !event.data.is_empty() {
                    out.push(event);
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.event.name = value.to_owned(),
                "data" => {
                    if !self.event.data.is_empty() {
                        self.event.data.push('\n');
                    }
                    self.event.data.push_str(value);
                }
                "id" => self.event.id = Some(value.to_owned()),
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::EventParser;

    #[test]
    fn events_split_across_chunks_are_whole() {
        let mut parser = EventParser::default();
        assert!(parser.push(b"event: status\r\nid: 1:runn").is_empty());
        let events = parser.push(b"ing:0\ndata: {\"a\":\ndata: 1}\n\n: keep-alive\n\n");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].name, "status");
        assert_eq!(events[0].id.as_deref(), Some("1:running:0"));
        assert_eq!(events[0].data, "{\"a\":\n1}");
    }
}
