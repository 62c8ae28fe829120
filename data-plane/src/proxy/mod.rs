//! The request path. A proxied request (`POST` to a Responses, chat or completions route)
//! runs these phases, in this order, each in the module that owns it:
//! 1. **snapshot** — the applied snapshot of this moment (503 until the first is applied);
//! 2. **admit** (`auth`) — the key by digest, its expiry, the user's balance less this data
//!    plane's unsettled spend, the key's IP allow-list, then its RPM and concurrency limits;
//! 3. **read the request** (`request`) — the body whole up to the size limit (413 above it),
//!    scanned only for its top-level `model`, `stream` and `prompt_cache_key` (`fields`;
//!    the rest is never parsed); the same bytes are forwarded,
//!    except that chat/completions streams get `stream_options.include_usage` added;
//!    then the key's model allow-list (`auth`);
//! 4. **meter** (`metering`) — from here on the request is billed exactly once, however it
//!    ends (a client that leaves during retries is billed as cancelled);
//! 5. **pick and attempt with failover** (`failover`, asking `routing` for the user's next
//!    upstream: best tier, then the tier's ring for the affinity key) — each attempt bounded
//!    by the upstream's timeout until the response head; retried before the first byte only;
//! 6. **respond** (`respond`) — the committed answer streamed back through the metering tap,
//!    which bills when the body ends, fails or is dropped.
//!
//! Other routes: `GET /v1/models` and `GET /v1/usage` (`key_api`), the operator's
//! `/healthz`, `/readyz`, `/metrics` (`crate::admin`), and a 426 for WebSocket upgrades.
//! Every response, error or not, carries `x-request-id`; every error is OpenAI-shaped.

mod auth;
pub mod error;
mod failover;
mod fields;
mod forward;
mod key_api;
mod limits;
mod request;
mod respond;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use tracing::{Instrument, debug, info_span, warn};

use gateway_proto::v1::usage_service_client::UsageServiceClient;

use self::{
    auth::{Admission, Admitted},
    error::ProxyError,
    forward::REQUEST_ID,
    request::{BodyLimits, ClientRequest, Endpoint},
};
use crate::{
    ControlPlane,
    admin::{self, Admin},
    metering::{Meter, MeterGuard, Outcome, Unsettled, UsagePublisher},
    metrics::{Metrics, RequestLabels},
    routing,
    snapshot::AppliedSnapshot,
    upstream::UpstreamClient,
};

pub use crate::metering::BodyError;

/// Body of every response the proxy sends.
pub type ProxyBody = UnsyncBoxBody<Bytes, BodyError>;

fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes)
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// Pages a single-node gateway serves beside the API: `gatewayctl standalone` answers
/// `/admin/…` and `/portal/…` with its console. Fleet data planes have none.
#[derive(Clone)]
pub struct Site(Arc<SiteFn>);

/// How a [`Site`] answers a request from a peer.
type SiteFn =
    dyn Fn(Request<Incoming>, SocketAddr) -> crate::BoxFuture<Response<ProxyBody>> + Send + Sync;

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Site")
    }
}

impl Site {
    /// A site answering with `answer`.
    pub fn new(
        answer: impl Fn(Request<Incoming>, SocketAddr) -> crate::BoxFuture<Response<ProxyBody>>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        Self(Arc::new(answer))
    }

    /// Whether `path` is one of the site's.
    fn serves(path: &str) -> bool {
        ["/admin", "/portal"].iter().any(|prefix| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }
}

/// Shared state of the request path.
#[derive(Debug)]
struct Shared {
    snapshot: Arc<ArcSwapOption<AppliedSnapshot>>,
    client: UpstreamClient,
    usage: UsagePublisher,
    node_id: Arc<str>,
    body_limits: BodyLimits,
    admission: Admission,
    metrics: Arc<Metrics>,
    admin: Arc<Admin>,
    ledger: UsageServiceClient<ControlPlane>,
    site: Option<Site>,
}

/// How the proxy treats clients.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Name of this node in usage events.
    pub node_id: Arc<str>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Time allowed to receive a request body.
    pub body_timeout: Duration,
    /// Peers whose `X-Forwarded-For` is believed (load balancers).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Where requests are counted.
    pub metrics: Arc<Metrics>,
    /// The data plane's channel to its control plane, for `GET /v1/usage`.
    pub control_plane: ControlPlane,
    /// Pages served beside the API (standalone's console), if any.
    pub site: Option<Site>,
}

/// The proxy service; cheap to clone per connection.
#[derive(Debug, Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    /// A proxy over the snapshot published in `snapshot`, answering admin paths with `admin`.
    pub fn new(
        snapshot: Arc<ArcSwapOption<AppliedSnapshot>>,
        usage: UsagePublisher,
        admin: Arc<Admin>,
        settings: ProxySettings,
    ) -> Result<Self, rustls::Error> {
        Ok(Self {
            shared: Arc::new(Shared {
                snapshot,
                client: UpstreamClient::new()?,
                usage,
                node_id: settings.node_id,
                body_limits: BodyLimits {
                    max_bytes: settings.max_body_bytes,
                    timeout: settings.body_timeout,
                },
                admission: Admission::new(settings.trusted_proxies),
                metrics: settings.metrics,
                admin,
                ledger: UsageServiceClient::new(settings.control_plane),
                site: settings.site,
            }),
        })
    }

    /// Handles one request. Never fails: every error has become a response here.
    pub async fn handle(
        self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<ProxyBody>, Infallible> {
        // The id is written once: as text on the stack for logs, the span and the usage event,
        // and as one header value for the upstream and the client.
        let mut id_text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let request_id: &str = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut id_text);
        let request_id_value = HeaderValue::from_str(request_id).ok();
        let route = route_label(request.uri().path());
        let span = info_span!(
            target: "ProxyHandler",
            "proxy_request",
            otel.kind = "server",
            http.request.method = %request.method(),
            http.route = route,
            request_id = %request_id,
            http.response.status_code = tracing::field::Empty,
        );
        let mut response = match self
            .route(request, peer, request_id, request_id_value.as_ref())
            .instrument(span.clone())
            .await
        {
            Ok(response) => response,
            Err(err) => {
                if err.is_client_fault() {
                    debug!(target: "ProxyHandler", request_id = %request_id, error = %err, "request refused");
                } else {
                    warn!(target: "ProxyHandler", request_id = %request_id, error = %err, "request failed");
                }
                err.into_response(request_id)
            }
        };
        span.record("http.response.status_code", response.status().as_u16());
        if let Some(value) = request_id_value {
            response.headers_mut().insert(REQUEST_ID, value);
        }
        self.shared
            .metrics
            .requests
            .get_or_create(&RequestLabels {
                route,
                status: response.status().as_u16(),
            })
            .inc();
        Ok(response)
    }

    async fn route(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        request_id: &str,
        request_id_value: Option<&HeaderValue>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let path = request.uri().path();
        if let Some(site) = &self.shared.site
            && Site::serves(path)
        {
            return Ok((site.0)(request, peer).await);
        }
        match (request.method(), Endpoint::classify(path)) {
            (&Method::POST, Some(endpoint)) => {
                let request_id_value = request_id_value.ok_or(ProxyError::Internal)?;
                self.forward(request, peer, endpoint, request_id, request_id_value)
                    .await
            }
            (&Method::GET, Some(endpoint))
                if endpoint.is_responses() && request::is_websocket_upgrade(request.headers()) =>
            {
                // At once, before anything else: Codex then falls back to HTTP/SSE instead
                // of retrying the upgrade.
                Err(ProxyError::WebSocketUnsupported)
            }
            (_, Some(_)) => Err(ProxyError::MethodNotAllowed(path.to_owned())),
            (&Method::GET, None) if path == "/v1/models" || path == "/models" => {
                self.models(request.headers())
            }
            (&Method::GET, None) if path == "/v1/usage" => {
                let limit = key_api::usage_limit(request.uri().query())?;
                // Boxed: its gRPC call's state is kilobytes, and unboxed it would be copied
                // into every request's future (hyper moves each one into place).
                Box::pin(self.usage(request.headers(), limit)).await
            }
            (&Method::GET, None) => self
                .shared
                .admin
                .respond(path)
                .map(|response| response.map(full))
                .ok_or_else(|| ProxyError::NotFound(path.to_owned())),
            _ => Err(ProxyError::NotFound(path.to_owned())),
        }
    }

    /// A proxied request, phase by phase (see the module doc).
    async fn forward(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        endpoint: Endpoint,
        request_id: &str,
        request_id_value: &HeaderValue,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let started = Instant::now();
        let started_at_ms = now_ms();
        let snapshot = self
            .shared
            .snapshot
            .load_full()
            .ok_or(ProxyError::NotReady)?;
        let (parts, body) = request.into_parts();

        let admitted =
            self.shared
                .admission
                .admit(&snapshot, &parts.headers, peer, started, started_at_ms)?;

        let mut request =
            request::read(endpoint, &parts.headers, body, self.shared.body_limits).await?;
        auth::check_model(admitted.key, &request.model)?;
        if !snapshot.router().serves(&request.model) {
            // Before the meter: nothing was attempted, nothing is billed.
            return Err(ProxyError::ModelNotFound(request.model));
        }

        let meter = MeterGuard::new(self.meter(
            request_id,
            &admitted,
            &mut request,
            &snapshot,
            started,
            started_at_ms,
        ));

        let affinity = routing::affinity_key(
            snapshot.affinity,
            admitted.user.id,
            &parts.headers,
            request.prompt_cache_key(),
        );
        let committed = failover::run(
            &self.shared.client,
            &self.shared.metrics,
            failover::Route {
                router: snapshot.router(),
                affinity_key: affinity.as_bytes(),
                model: meter.model(),
            },
            |upstream| {
                forward::upstream_request(
                    &parts.headers,
                    parts.uri.query(),
                    upstream,
                    endpoint.upstream_path(),
                    request.body.clone(),
                    request_id_value,
                )
            },
            endpoint == Endpoint::Responses,
            request_id,
        )
        .await;
        let committed = match committed {
            Ok(committed) => committed,
            Err(exhausted) => {
                // Nothing was produced: the event records the failure at no cost.
                meter.finish_unproduced(exhausted.upstream_id, Outcome::UpstreamError);
                return Err(exhausted.error);
            }
        };

        let meter = meter.into_inner().ok_or(ProxyError::Internal)?;
        Ok(respond::metered(committed, &request, meter, admitted.slot))
    }

    /// The meter of an admitted, read request; the model moves into it (nothing after the
    /// meter needs it).
    fn meter(
        &self,
        request_id: &str,
        admitted: &Admitted<'_>,
        request: &mut ClientRequest,
        snapshot: &AppliedSnapshot,
        started: Instant,
        started_at_ms: i64,
    ) -> Meter {
        let pricing = snapshot.pricing(&request.model);
        Meter {
            publisher: self.shared.usage.clone(),
            request_id: request_id.to_owned(),
            key_id: admitted.key.id,
            key_capped: !admitted.key.caps.is_empty(),
            user_id: admitted.user.id,
            price: pricing.price,
            model: std::mem::take(&mut request.model),
            model_label: pricing.label,
            endpoint: request.endpoint.name(),
            stream: request.stream,
            multiplier_ppm: admitted.user.multiplier_ppm,
            request_bytes: request.body.len(),
            node_id: self.shared.node_id.clone(),
            started,
            started_at_ms,
            first_byte: None,
            unsettled: self.shared.admission.unsettled().clone(),
            settle_floor_ms: Unsettled::floor(snapshot.built_at_ms),
        }
    }
}

/// The `route` label of a path (bounded: unknown paths share one label).
fn route_label(path: &str) -> &'static str {
    match Endpoint::classify(path) {
        Some(e) => e.name(),
        None => match path {
            "/v1/models" | "/models" => "models",
            "/v1/usage" => "usage",
            _ => admin::route_label(path).unwrap_or("other"),
        },
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future a three-argument async fn returns.
    fn future_size<A, B, C, F: Future>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn the_request_future_holds_no_rare_arm_inline() {
        // hyper moves each request's future into place, and each call moves its callee's
        // future into its own, so every byte of them is copied on every request. A rarely
        // taken path with a large state is boxed instead: the gRPC call of `/v1/usage` (the
        // future was 12.4 KB with it inline, 6.6 KB once it was boxed) and a new upstream
        // connection (4.8 KB once that was boxed too).
        let size = future_size(Proxy::handle);
        assert!(size <= 5 * 1024, "handle's future is {size} bytes");
    }
}
