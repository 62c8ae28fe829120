//! The operator's endpoints on the proxy's port: `GET /healthz` (the process is up),
//! `GET /readyz` (a snapshot is applied and the data plane is not draining) and
//! `GET /metrics` (Prometheus text, with per-upstream gauges read from the snapshot).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::{metrics::Metrics, snapshot::AppliedSnapshot};

/// State the admin endpoints read.
#[derive(Debug)]
pub struct Admin {
    snapshot: Arc<ArcSwapOption<AppliedSnapshot>>,
    metrics: Arc<Metrics>,
    draining: AtomicBool,
}

impl Admin {
    /// Admin endpoints over the applied snapshot and the data plane's metrics.
    pub fn new(snapshot: Arc<ArcSwapOption<AppliedSnapshot>>, metrics: Arc<Metrics>) -> Self {
        Self {
            snapshot,
            metrics,
            draining: AtomicBool::new(false),
        }
    }

    /// Marks the data plane as shutting down: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether a snapshot is applied and the data plane is not shutting down.
    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed) && self.snapshot.load().is_some()
    }

    /// The response for an admin `path`, or `None` if it is not one.
    pub fn respond(&self, path: &str) -> Option<Response<Bytes>> {
        match path {
            "/healthz" => Some(text(StatusCode::OK, "ok")),
            "/readyz" => Some(if self.is_ready() {
                text(StatusCode::OK, "ready")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready")
            }),
            "/metrics" => {
                let snapshot = self.snapshot.load_full();
                let applied = snapshot.as_deref().map(|s| (s.router(), s.built_at_ms));
                let mut response = Response::new(Bytes::from(self.metrics.render(applied)));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                Some(response)
            }
            _ => None,
        }
    }
}

/// The `route` label of an admin path.
pub(crate) fn route_label(path: &str) -> Option<&'static str> {
    match path {
        "/healthz" => Some("healthz"),
        "/readyz" => Some("readyz"),
        "/metrics" => Some("metrics"),
        _ => None,
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from_static(body.as_bytes()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}
