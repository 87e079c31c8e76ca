//! Progress as a person at a terminal wants it (bars with rate and ETA on stderr), and as a CI
//! log wants it (a few plain lines); nothing at all with --json.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

use super::connection::Connection;

/// Bars only where someone watches: stderr is a terminal and no --json.
pub fn bars_shown(conn: &Connection) -> bool {
    !conn.json && std::io::stderr().is_terminal()
}

/// A byte counter for an upload, download or hashing pass of `total` bytes.
pub fn bytes(conn: &Connection, total: u64, what: &str) -> ProgressBar {
    if !bars_shown(conn) {
        conn.say(&format!("{what}: {}", human_bytes(total)));
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// A job's progress, from 0 to 1000 (thousandths of the fraction the server reports).
pub fn job(conn: &Connection) -> ProgressBar {
    if !bars_shown(conn) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(1000);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {percent:>3}% {elapsed} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar
}

/// Bytes as a person reads them (the same words the server's messages use).
pub use crate::compress::budget::human as human_bytes;
