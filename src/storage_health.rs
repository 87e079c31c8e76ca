//! Whether this process can write where it keeps files: a small file written, made durable
//! and removed in each folder. A full, read-only or missing disk makes the worker stop taking
//! jobs (rather than spend their attempts failing) and readiness answer 503 until it is back.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A result is reused this long, so that idle workers polling the queue do not write a file
/// on every poll.
const FRESH: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct StorageHealth {
    dirs: Vec<PathBuf>,
    last: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl StorageHealth {
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        StorageHealth {
            dirs,
            last: Mutex::new(None),
        }
    }

    /// `Err` with what failed, when a folder cannot be written.
    pub async fn check(&self) -> Result<(), String> {
        if let Some((at, result)) = self.last.lock().expect("health lock").as_ref() {
            if at.elapsed() < FRESH {
                return result.clone();
            }
        }
        let dirs = self.dirs.clone();
        let result = tokio::task::spawn_blocking(move || probe(&dirs))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        *self.last.lock().expect("health lock") = Some((Instant::now(), result.clone()));
        result
    }

    /// Forgets the last result: the next check probes again.
    pub fn invalidate(&self) {
        *self.last.lock().expect("health lock") = None;
    }
}

fn probe(dirs: &[PathBuf]) -> Result<(), String> {
    for dir in dirs {
        let path = dir.join(format!(".probe-{}", uuid::Uuid::new_v4().simple()));
        let written = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::File::create(&path))
            .and_then(|mut f| f.write_all(b"ok").and_then(|()| f.sync_data()));
        let _ = std::fs::remove_file(&path);
        written.map_err(|e| format!("{} cannot be written: {e}", dir.display()))?;
    }
    Ok(())
}
