//! Prometheus metrics of the control plane and the small HTTP server that exposes them with
//! liveness and readiness: `GET /metrics`, `/healthz`, `/readyz` on `METRICS_ADDR`.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
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
use tokio::{net::TcpListener, sync::watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, info};

use crate::{snapshot::SnapshotRx, store::Store};

/// How long `/readyz` waits for Postgres.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Per-upstream gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
}

/// Every metric of the control plane. Counters are updated where things happen; gauges that
/// mirror state (snapshot, health, leadership) are read when scraped.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Usage events newly written to the ledger (duplicates ignored are not counted), by the
    /// consumer and by `ReportUsage` alike: advanced from the process's `ingested` count.
    usage_ingested: Counter,
    /// The `ingested` count already added to `usage_ingested`.
    ingested_seen: AtomicU64,
    /// Batches committed to the ledger.
    pub usage_batches: Counter,
    /// Time from reading a batch to its acknowledgement.
    pub usage_batch_seconds: Histogram,
    /// Batches that failed and stay pending for a retry.
    pub usage_batch_errors: Counter,
    /// Entries moved to the dead-letter table.
    pub usage_dead_lettered: Counter,
    /// Entries in the stream not yet delivered to the consumer group.
    pub usage_consumer_lag: Gauge,
    /// Entries delivered to the group but not acknowledged.
    pub usage_pending: Gauge,
    /// Ledger events deleted by usage retention.
    pub retention_deleted: Counter,
    /// Whether a retention pass is running here (1) or not (0).
    pub retention_running: Gauge,
    /// Database migrations this process applied at start.
    pub migrations_applied: Counter,
    snapshot_version: Gauge,
    snapshot_built_seconds: Gauge<f64, AtomicU64>,
    snapshot_upstreams: Gauge,
    snapshot_keys: Gauge,
    upstream_healthy: Family<UpstreamLabels, Gauge>,
    health_leader: Gauge,
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
            usage_ingested: Counter::default(),
            ingested_seen: AtomicU64::new(0),
            usage_batches: Counter::default(),
            usage_batch_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            usage_batch_errors: Counter::default(),
            usage_dead_lettered: Counter::default(),
            usage_consumer_lag: Gauge::default(),
            usage_pending: Gauge::default(),
            retention_deleted: Counter::default(),
            retention_running: Gauge::default(),
            migrations_applied: Counter::default(),
            snapshot_version: Gauge::default(),
            snapshot_built_seconds: Gauge::default(),
            snapshot_upstreams: Gauge::default(),
            snapshot_keys: Gauge::default(),
            upstream_healthy: Family::default(),
            health_leader: Gauge::default(),
        };
        let r = &mut m.registry;
        r.register(
            "codex_gateway_ledger_events",
            "Usage events newly written to the ledger by this replica",
            m.usage_ingested.clone(),
        );
        r.register(
            "codex_gateway_ledger_batches",
            "Usage batches committed and acknowledged by this replica",
            m.usage_batches.clone(),
        );
        r.register(
            "codex_gateway_ledger_batch_duration_seconds",
            "Time from reading a usage batch to acknowledging it",
            m.usage_batch_seconds.clone(),
        );
        r.register(
            "codex_gateway_ledger_batch_errors",
            "Usage batches that failed and stay pending for a retry",
            m.usage_batch_errors.clone(),
        );
        r.register(
            "codex_gateway_ledger_dead_letters",
            "Usage entries moved to the dead-letter table",
            m.usage_dead_lettered.clone(),
        );
        r.register(
            "codex_gateway_usage_consumer_lag",
            "Usage stream entries not yet delivered to the ledger's consumer group",
            m.usage_consumer_lag.clone(),
        );
        r.register(
            "codex_gateway_usage_consumer_pending",
            "Usage stream entries delivered to the consumer group but not acknowledged",
            m.usage_pending.clone(),
        );
        r.register(
            "codex_gateway_usage_retention_deleted",
            "Ledger events older than USAGE_RETENTION_DAYS deleted by this replica",
            m.retention_deleted.clone(),
        );
        r.register(
            "codex_gateway_usage_retention_running",
            "1 while this replica runs a usage retention pass",
            m.retention_running.clone(),
        );
        r.register(
            "codex_gateway_migrations_applied",
            "Database migrations this process applied at start",
            m.migrations_applied.clone(),
        );
        r.register(
            "codex_gateway_snapshot_version",
            "Version of the snapshot this replica serves to data planes",
            m.snapshot_version.clone(),
        );
        r.register(
            "codex_gateway_snapshot_built_timestamp_seconds",
            "When that snapshot was built (age = time() - this)",
            m.snapshot_built_seconds.clone(),
        );
        r.register(
            "codex_gateway_snapshot_upstreams",
            "Upstreams in the served snapshot",
            m.snapshot_upstreams.clone(),
        );
        r.register(
            "codex_gateway_snapshot_keys",
            "Gateway keys in the served snapshot",
            m.snapshot_keys.clone(),
        );
        r.register(
            "codex_gateway_upstream_healthy",
            "1 if active health checks consider the upstream healthy",
            m.upstream_healthy.clone(),
        );
        r.register(
            "codex_gateway_health_leader",
            "1 if this replica runs the active health checks",
            m.health_leader.clone(),
        );
        m
    }

    /// The text exposition, with state read from the current snapshot, leadership and the
    /// count of events this process wrote to the ledger.
    pub fn render(
        &self,
        snapshots: &SnapshotRx,
        leader: &watch::Receiver<bool>,
        ingested: &watch::Receiver<u64>,
    ) -> String {
        let total = *ingested.borrow();
        let seen = self.ingested_seen.swap(total, Ordering::Relaxed);
        self.usage_ingested.inc_by(total.saturating_sub(seen));
        if let Some(snapshot) = snapshots.borrow().as_ref() {
            self.snapshot_version
                .set(i64::try_from(snapshot.version).unwrap_or(i64::MAX));
            self.snapshot_built_seconds
                .set(snapshot.built_at_ms as f64 / 1000.0);
            self.snapshot_upstreams
                .set(i64::try_from(snapshot.upstreams.len()).unwrap_or(i64::MAX));
            self.snapshot_keys
                .set(i64::try_from(snapshot.keys.len()).unwrap_or(i64::MAX));
            self.upstream_healthy.clear();
            for u in &snapshot.upstreams {
                self.upstream_healthy
                    .get_or_create(&UpstreamLabels {
                        upstream: u.name.clone(),
                    })
                    .set(i64::from(u.healthy));
            }
        }
        self.health_leader.set(i64::from(*leader.borrow()));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// What the HTTP server answers from.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) snapshots: SnapshotRx,
    pub(crate) leader: watch::Receiver<bool>,
    pub(crate) ingested: watch::Receiver<u64>,
    pub(crate) store: Store,
}

impl Endpoints {
    async fn answer(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        match (request.method(), request.uri().path()) {
            (&http::Method::GET, "/metrics") => {
                let body = self
                    .metrics
                    .render(&self.snapshots, &self.leader, &self.ingested);
                let mut response = Response::new(Full::new(Bytes::from(body)));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            }
            (&http::Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
            // Ready = can serve config: a replica holding a snapshot keeps data planes (new
            // ones too) going while Postgres is away, so the database only colours the answer.
            (&http::Method::GET, "/readyz") => {
                let has_snapshot = self.snapshots.borrow().is_some();
                let database =
                    tokio::time::timeout(READY_TIMEOUT, self.store.config_version()).await;
                match (has_snapshot, database) {
                    (false, _) => text(StatusCode::SERVICE_UNAVAILABLE, "no snapshot yet"),
                    (true, Ok(Ok(_))) => text(StatusCode::OK, "ready"),
                    (true, _) => text(
                        StatusCode::OK,
                        "ready (database unreachable: serving the last snapshot; admin API and ledger wait)",
                    ),
                }
            }
            _ => text(StatusCode::NOT_FOUND, "not found"),
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

/// Serves the endpoints on `listener` until `cancel`.
pub(crate) async fn serve(listener: TcpListener, endpoints: Endpoints, cancel: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        info!(addr = %addr, "control plane serving /metrics, /healthz, /readyz");
    }
    let builder = auto::Builder::new(TokioExecutor::new());
    // Connections are tracked so this returns only when the last one has closed.
    let connections = TaskTracker::new();
    loop {
        let (stream, _) = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    debug!(error = %err, "accepting a metrics connection failed");
                    continue;
                }
            },
        };
        let endpoints = endpoints.clone();
        let builder = builder.clone();
        let cancel = cancel.clone();
        connections.spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let endpoints = endpoints.clone();
                async move { Ok::<_, Infallible>(endpoints.answer(&request).await) }
            });
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = cancel.cancelled() => {}
                _ = connection => {}
            }
        });
    }
    connections.close();
    connections.wait().await;
}
