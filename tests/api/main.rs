//! Integration tests: the real server over HTTP, on SQLite and (with TEST_DATABASE_URL set)
//! PostgreSQL. Each test gets its own database and data directory.

#[path = "../common/blobs.rs"]
mod blobs;
#[path = "../common/cluster.rs"]
mod cluster;
mod helpers;
mod models;
#[path = "../common/python_reference.rs"]
mod python_reference;

mod calibration;
mod client;
mod concurrency;
mod dashboard;
mod export;
mod faults;
mod flow;
mod hessian_methods;
mod hostile;
mod imatrix;
mod isolation;
mod job_logs;
mod jobs;
mod lifecycle;
mod llama_export;
mod object_storage;
mod openapi;
mod operability;
mod operations;
mod pruning;
mod quantize;
mod races;
mod real_models;
mod recovery;
mod report_browser;
mod roles;
mod security;
mod tenants;
mod training;
mod transformers;
mod uploads;
