//! Logs and traces for every Codex Gateway binary.
//!
//! Logs go to stdout, one JSON object per line by default, each with the `target` operators
//! grep for (`ProxyHandler`, `HealthCheck`, `ConfigStream`, `UsageConsumer`). When
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the same `tracing` spans are also exported as
//! OpenTelemetry traces over OTLP/gRPC, batched off the request path.

use clap::{Args, ValueEnum};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_subscriber::{
    EnvFilter, Layer, filter::FilterExt, layer::SubscriberExt, util::SubscriberInitExt,
};

/// Log and trace settings shared by both planes.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Log output format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// OTLP/gRPC endpoint of an OpenTelemetry collector, e.g. `http://otel-collector:4317`.
    /// Traces are exported only when this is set.
    #[arg(long = "otlp-endpoint", env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// `service.name` of the exported traces (default: the binary's name).
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub service_name: Option<String>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// Keeps trace export running; dropping it flushes and stops the exporter.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports every finished span now (they are otherwise batched for a few seconds).
    pub fn flush(&self) {
        if let Some(provider) = &self.provider
            && let Err(err) = provider.force_flush()
        {
            tracing::warn!(error = %err, "flushing traces failed");
        }
    }

    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Exports what is left; errors have nowhere useful to go at exit.
            let _ = provider.shutdown();
        }
    }
}

/// Errors setting up telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTEL_EXPORTER_OTLP_ENDPOINT: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("a global log subscriber is already installed: {0}")]
    AlreadyInstalled(#[from] tracing_subscriber::util::TryInitError),
}

/// The log layer: one flat JSON object per line (fields beside `message`, `target` and the
/// current spans included), or human-readable text.
fn log_layer<S, W>(format: LogFormat, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(writer)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(writer).boxed(),
    }
}

/// The level filter from `RUST_LOG` (default `info`).
fn level_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// What the log layer takes: events at the configured level, and no spans. Log lines name
/// their request themselves (`request_id` is a field of every request-path event), so a span
/// per request and per attempt is built only when traces are exported: without an exporter
/// the request path creates no span at all.
fn log_filter<S>(levels: EnvFilter) -> impl tracing_subscriber::layer::Filter<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    levels.and(tracing_subscriber::filter::filter_fn(|meta| {
        meta.is_event()
    }))
}

/// The registry with its layers. Without an exporter the trace layer is left out rather
/// than added as `None`: an absent optional layer declares interest in every callsite, which
/// would build every span again.
fn subscriber<L, T>(logs: L, traces: Option<T>) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    L: Layer<tracing_subscriber::Registry> + Send + Sync,
    T: Layer<tracing_subscriber::layer::Layered<L, tracing_subscriber::Registry>> + Send + Sync,
{
    let registry = tracing_subscriber::registry().with(logs);
    match traces {
        Some(traces) => Box::new(registry.with(traces)),
        None => Box::new(registry),
    }
}

/// Installs the global log subscriber (level from `RUST_LOG`, default `info`) and, when an
/// endpoint is configured, the OTLP trace exporter. Must be called inside a Tokio runtime
/// (the gRPC exporter's connection lives on it). `default_service` names the traces unless
/// `OTEL_SERVICE_NAME` is set.
pub fn init(args: &TelemetryArgs, default_service: &str) -> Result<Telemetry, TelemetryError> {
    let logs = log_layer(args.log_format, std::io::stdout).with_filter(log_filter(level_filter()));
    let provider = match &args.otlp_endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()?;
            let service = args
                .service_name
                .clone()
                .unwrap_or_else(|| default_service.to_owned());
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(Resource::builder().with_service_name(service).build())
                    .build(),
            )
        }
        None => None,
    };
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("codex-gateway"))
            .with_level(true)
            .with_filter(level_filter())
    });
    subscriber(logs, traces).try_init()?;
    if let Some(endpoint) = &args.otlp_endpoint {
        tracing::info!(endpoint = %endpoint, "exporting traces over OTLP");
    }
    Ok(Telemetry { provider })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn without_an_exporter_no_span_is_built_and_events_still_log() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(
            log_layer(LogFormat::Json, move || writer.clone())
                .with_filter(log_filter(EnvFilter::new("info"))),
        );
        // The filter turns a span's callsite off for good: with the one global subscriber of
        // a process, `info_span!` then builds nothing (in a test binary, other tests'
        // subscribers share the callsite cache, so the interest itself is what is checked).
        let metadata = tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            tracing::info_span!(target: "ProxyHandler", "proxy_request", request_id = "r-1")
                .metadata()
                .unwrap()
        });
        let logs = || {
            log_layer(LogFormat::Json, std::io::sink)
                .with_filter(log_filter(EnvFilter::new("info")))
        };
        let installed = super::subscriber(logs(), None::<tracing_subscriber::layer::Identity>);
        assert!(
            installed.register_callsite(metadata).is_never(),
            "a span is built for logs alone"
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(target: "ProxyHandler", request_id = "r-1", "request failed");
            tracing::debug!(target: "ProxyHandler", "below the level");
        });
        let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{out}");
        let line: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(line["request_id"], "r-1");
        assert_eq!(line["message"], "request failed");
    }

    #[test]
    fn json_logs_carry_the_target_fields_and_span_operators_grep_for() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber =
            tracing_subscriber::registry().with(log_layer(LogFormat::Json, move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span =
                tracing::info_span!(target: "ProxyHandler", "proxy_request", request_id = "r-1");
            let _entered = span.enter();
            tracing::warn!(target: "ProxyHandler", upstream = "pool-a", attempt = 2, "upstream attempt failed");
        });
        let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{out}");
        let line: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(line["target"], "ProxyHandler");
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "upstream attempt failed");
        assert_eq!(line["upstream"], "pool-a");
        assert_eq!(line["attempt"], 2);
        assert_eq!(line["span"]["request_id"], "r-1");
        assert!(line["timestamp"].is_string());
    }
}
