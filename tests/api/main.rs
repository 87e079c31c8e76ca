//! Integration tests: the real server over HTTP, on SQLite and (with TEST_DATABASE_URL set)
//! PostgreSQL. Each test gets its own database and data directory.

#[path = "../common/blobs.rs"]
mod blobs;
mod helpers;
mod models;

mod concurrency;
mod export;
mod faults;
mod flow;
mod hostile;
mod jobs;
mod lifecycle;
mod openapi;
mod pruning;
mod quantize;
mod recovery;
mod report_browser;
mod security;
mod tenants;
mod training;
mod uploads;
