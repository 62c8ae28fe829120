//! Prometheus metrics of the data plane, served on `GET /metrics`. Every metric name is
//! defined here, once.

use std::sync::{Arc, atomic::AtomicU64};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::routing::Router;

/// Requests by route and status code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub status: u16,
}

/// Proxied requests by endpoint.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

/// Upstream attempts by upstream and outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub upstream: Arc<str>,
    pub outcome: &'static str,
}

/// Retries by the failure that caused them.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub reason: &'static str,
}

/// Tokens by kind (input, cached_input, output, reasoning) and model, as the OpenTelemetry
/// GenAI conventions split them.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub token_type: &'static str,
    pub model: Arc<str>,
}

/// Usage events by final status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: &'static str,
}

/// Per-upstream gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: Arc<str>,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 5 ms … ~11 min: Codex reasoning streams run for minutes.
    Histogram::new(exponential_buckets(0.005, 2.0, 18))
}

fn ttfb_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Every metric of the data plane.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: HistogramFamily<EndpointLabels>,
    pub ttfb: HistogramFamily<EndpointLabels>,
    pub upstream_attempts: Family<AttemptLabels, Counter>,
    pub retries: Family<RetryLabels, Counter>,
    pub tokens: Family<TokenLabels, Counter>,
    pub usage_events: Family<StatusLabels, Counter>,
    pub usage_queue_depth: Gauge,
    pub usage_published: Counter,
    pub usage_publish_errors: Counter,
    pub usage_unqueued: Counter,
    pub usage_spool_depth: Gauge,
    pub usage_spool_corrupt: Counter,
    pub snapshot_version: Gauge,
    pub snapshot_built_seconds: Gauge<f64, AtomicU64>,
    pub snapshot_age_seconds: Gauge<f64, AtomicU64>,
    pub snapshots_rejected: Counter,
    pub upstream_in_flight: Family<UpstreamLabels, Gauge>,
    pub upstream_available: Family<UpstreamLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All metrics, registered.
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::default(),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            ttfb: Family::new_with_constructor(ttfb_histogram),
            upstream_attempts: Family::default(),
            retries: Family::default(),
            tokens: Family::default(),
            usage_events: Family::default(),
            usage_queue_depth: Gauge::default(),
            usage_published: Counter::default(),
            usage_publish_errors: Counter::default(),
            usage_unqueued: Counter::default(),
            usage_spool_depth: Gauge::default(),
            usage_spool_corrupt: Counter::default(),
            snapshot_version: Gauge::default(),
            snapshot_built_seconds: Gauge::default(),
            snapshot_age_seconds: Gauge::default(),
            snapshots_rejected: Counter::default(),
            upstream_in_flight: Family::default(),
            upstream_available: Family::default(),
        };
        let r = &mut m.registry;
        r.register(
            "codex_gateway_requests",
            "HTTP requests by route and status",
            m.requests.clone(),
        );
        r.register(
            "codex_gateway_request_duration_seconds",
            "Proxied request duration, to the end of the response body",
            m.request_duration.clone(),
        );
        r.register(
            "codex_gateway_ttfb_seconds",
            "Time to the first response byte sent to the client",
            m.ttfb.clone(),
        );
        r.register(
            "codex_gateway_upstream_attempts",
            "Upstream attempts by upstream and outcome",
            m.upstream_attempts.clone(),
        );
        r.register(
            "codex_gateway_retries",
            "Attempts retried, by the failure that caused them",
            m.retries.clone(),
        );
        r.register(
            "gen_ai_client_token_usage",
            "Tokens billed, by token type and model",
            m.tokens.clone(),
        );
        r.register(
            "codex_gateway_usage_events",
            "Usage events produced, by status",
            m.usage_events.clone(),
        );
        r.register(
            "codex_gateway_usage_queue_depth",
            "Usage events waiting to be published",
            m.usage_queue_depth.clone(),
        );
        r.register(
            "codex_gateway_usage_published",
            "Usage events written to the Redis stream",
            m.usage_published.clone(),
        );
        r.register(
            "codex_gateway_usage_publish_errors",
            "Failed attempts to write a usage batch",
            m.usage_publish_errors.clone(),
        );
        r.register(
            "codex_gateway_usage_unqueued",
            "Usage events that could not be queued (logged with their ids)",
            m.usage_unqueued.clone(),
        );
        r.register(
            "codex_gateway_usage_spool_depth",
            "Usage events waiting in the local spool for the sink to answer",
            m.usage_spool_depth.clone(),
        );
        r.register(
            "codex_gateway_usage_spool_corrupt",
            "Spool records skipped as corrupt (a torn write)",
            m.usage_spool_corrupt.clone(),
        );
        r.register(
            "codex_gateway_snapshot_version",
            "Version of the applied snapshot",
            m.snapshot_version.clone(),
        );
        r.register(
            "codex_gateway_snapshot_built_timestamp_seconds",
            "When the control plane built the applied snapshot (age = time() - this)",
            m.snapshot_built_seconds.clone(),
        );
        r.register(
            "codex_gateway_snapshot_age_seconds",
            "Seconds since the control plane built the applied snapshot",
            m.snapshot_age_seconds.clone(),
        );
        r.register(
            "codex_gateway_snapshots_rejected",
            "Snapshots rejected by this data plane",
            m.snapshots_rejected.clone(),
        );
        r.register(
            "codex_gateway_upstream_in_flight",
            "Streams open to each upstream from this data plane",
            m.upstream_in_flight.clone(),
        );
        r.register(
            "codex_gateway_upstream_available",
            "1 if this data plane would send to the upstream now (healthy, circuit closed, not cooling down)",
            m.upstream_available.clone(),
        );
        m
    }

    /// Records the snapshot now serving (received or restored from disk).
    pub fn snapshot_applied(&self, version: u64, built_at_ms: i64) {
        self.snapshot_version
            .set(i64::try_from(version).unwrap_or(i64::MAX));
        self.snapshot_built_seconds.set(built_at_ms as f64 / 1000.0);
    }

    /// The text exposition, with per-upstream gauges read first from the `router` of the
    /// snapshot built at `built_at_ms` (if one is applied).
    pub fn render(&self, applied: Option<(&Router, i64)>) -> String {
        if let Some((router, built_at_ms)) = applied {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            self.snapshot_age_seconds
                .set(now_ms.saturating_sub(built_at_ms).max(0) as f64 / 1000.0);
            let now = std::time::Instant::now();
            // Only upstreams of the current snapshot: a deleted one must not linger as "available".
            self.upstream_in_flight.clear();
            self.upstream_available.clear();
            for u in router.upstreams() {
                let labels = UpstreamLabels {
                    upstream: u.name.clone(),
                };
                self.upstream_in_flight
                    .get_or_create(&labels)
                    .set(i64::from(u.state.in_flight()));
                self.upstream_available
                    .get_or_create(&labels)
                    .set(i64::from(u.available(now)));
            }
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
