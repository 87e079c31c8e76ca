//! Logs (text or JSON), traces (see `otlp`) and the Prometheus recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::otlp::Traces;

/// The server's logs on stdout, and its traces when a collector is configured. Keep the
/// answer until the process ends: dropping it sends the spans still batched.
pub fn init_logging(format: &str) -> Option<Traces> {
    init(format, false)
}

/// Logs of a job process: on stderr, which its worker passes on (stdout speaks to the worker).
pub fn init_logging_to_stderr(format: &str) -> Option<Traces> {
    init(format, true)
}

fn init(format: &str, to_stderr: bool) -> Option<Traces> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let traces = Traces::from_env();
    let json = format == "json";
    let writer = move || -> Box<dyn std::io::Write> {
        if to_stderr {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        }
    };
    let text = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(!to_stderr)
    });
    let json = json.then(|| tracing_subscriber::fmt::layer().json().with_writer(writer));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(traces.as_ref().map(|t| t.layer()))
        .try_init();
    traces
}

/// The process-wide recorder; installed once, shared by every app in the process.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                1800.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("seconds".into()), &buckets)
                .expect("valid buckets")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_ok() {
                describe_metrics();
            }
            handle
        })
        .clone()
}

/// HELP text for every metric, and a zero for those without labels, so that a scraper sees
/// each one from start-up rather than from its first event.
fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "compressd_jobs",
        "Jobs in the store by status (every replica's)"
    );
    describe_gauge!("compressd_workers", "Job slots of this process");
    describe_gauge!(
        "compressd_workers_busy",
        "Job slots of this process running an attempt; busy ratio = this / compressd_workers"
    );
    describe_histogram!(
        "compressd_job_queue_wait_seconds",
        Unit::Seconds,
        "From a job's submission to its first claim, by the op of its first step"
    );
    describe_histogram!(
        "compressd_job_duration_seconds",
        Unit::Seconds,
        "Wall time of one attempt, by outcome and the op of the job's first step"
    );
    describe_counter!(
        "compressd_job_input_bytes_total",
        Unit::Bytes,
        "Model bytes given to attempts, by the op of the job's first step"
    );
    describe_counter!(
        "compressd_upload_bytes_total",
        Unit::Bytes,
        "Bytes received in uploads"
    );
    describe_counter!(
        "compressd_cache_hits_total",
        "Jobs answered from the results cache"
    );
    describe_counter!(
        "compressd_input_cache_hits_total",
        "Job inputs from object storage found on the worker's disk from an earlier attempt"
    );
    describe_counter!(
        "compressd_input_cache_misses_total",
        "Job inputs fetched from object storage (then kept for later attempts)"
    );
    describe_counter!(
        "compressd_rate_limited_total",
        "Requests refused by a key's rate limit"
    );
    describe_counter!(
        "compressd_webhooks_total",
        "Webhook delivery attempts, by outcome"
    );
    describe_histogram!(
        "compressd_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP requests by method, route and status"
    );
    metrics::gauge!("compressd_workers_busy").set(0.0);
    metrics::counter!("compressd_upload_bytes_total").increment(0);
    metrics::counter!("compressd_cache_hits_total").increment(0);
    metrics::counter!("compressd_rate_limited_total").increment(0);
    metrics::counter!("compressd_input_cache_hits_total").increment(0);
    metrics::counter!("compressd_input_cache_misses_total").increment(0);
    for outcome in ["delivered", "failed"] {
        metrics::counter!("compressd_webhooks_total", "outcome" => outcome).increment(0);
    }
}
