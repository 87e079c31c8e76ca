//! Traces over OTLP/HTTP, for operators who run a collector: on when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, off otherwise
//! (then nothing here costs anything). A job's trace runs across processes and hosts: the
//! request's W3C `traceparent` is stored with the job, the worker that claims it continues that
//! trace, and hands its own attempt's `traceparent` to the job process, whose steps are spans.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The exporter, kept so that what is batched is sent before the process ends.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// The exporter the environment asks for, if any. A bad setting is reported on stderr
    /// (logging is not up yet) and the process runs without traces rather than not at all.
    pub fn from_env() -> Option<Traces> {
        let configured = |var: &str| std::env::var(var).is_ok_and(|v| !v.trim().is_empty());
        let wanted = configured("OTEL_EXPORTER_OTLP_ENDPOINT")
            || configured("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let disabled =
            std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
        if !wanted || disabled {
            return None;
        }
        let protocol = match std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .as_deref()
        {
            Ok("http/json") => Protocol::HttpJson,
            Ok("http/protobuf") | Err(_) => Protocol::HttpBinary,
            Ok(other) => {
                eprintln!(
                    "compressd: OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported (http/protobuf or http/json); traces are off"
                );
                return None;
            }
        };
        let exporter = match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .build()
        {
            Ok(exporter) => exporter,
            Err(e) => {
                eprintln!("compressd: the OTLP exporter could not start ({e}); traces are off");
                return None;
            }
        };
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("compressd");
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        Some(Traces { provider })
    }

    /// The layer that turns the process's tracing spans into OTLP spans.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("compressd"))
    }
}

impl Drop for Traces {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("compressd: some trace spans were not sent: {e}");
        }
    }
}

/// The `traceparent` that continues `span`'s trace elsewhere; None without traces.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The trace of the current span, as a `traceparent`.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// Makes `span` a child of the span `traceparent` names (another process's, or the client's).
/// A missing or malformed value leaves `span` the root of a trace of its own.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        // Only fails when the span is already closed or traces are off: nothing to link then.
        let _ = span.set_parent(cx);
    }
}
