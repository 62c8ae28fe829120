//! The request path. For a proxied route, in order:
//! 1. the routing table of the current snapshot (503 until the first one is applied);
//! 2. authentication by key digest, expiry and balance — nothing but the in-memory table;
//! 3. the body, read whole up to the size limit (413 above it) and parsed only for `model`,
//!    `stream` and `prompt_cache_key`; the same bytes are forwarded;
//! 4. the model allow-list;
//! 5. the upstream pick: best priority tier, then the tier's ring for the affinity key;
//! 6. the forward, bounded by the upstream's timeout until the response head;
//! 7. the response streamed back through the metering tap, which bills exactly once.
//!
//! Every response, error or not, carries `x-request-id`; every error is OpenAI-shaped.

mod auth;
pub mod error;
mod failover;
mod forward;
pub(crate) mod limits;

use std::{
    borrow::Cow,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use serde::Deserialize;
use tracing::{Instrument, debug, info_span, warn};

use gateway_proto::v1::config_discovery_client::ConfigDiscoveryClient;

use self::{
    error::ProxyError,
    forward::{REQUEST_ID, UpstreamClient},
};
use crate::{
    metering::{Held, Meter, MeterGuard, MeteredBody, Outcome, TapKind, Unsettled, UsagePublisher},
    metrics::{Metrics, RequestLabels},
    routing::{Affinity, RoutingTable},
};

pub use crate::metering::BodyError;

/// Body of every response the proxy sends.
pub type ProxyBody = UnsyncBoxBody<Bytes, BodyError>;

pub(crate) fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes)
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// The proxied APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Responses,
    ResponsesCompact,
    ChatCompletions,
    Completions,
}

impl Endpoint {
    fn classify(path: &str) -> Option<Self> {
        match path.strip_suffix('/').unwrap_or(path) {
            "/v1/responses"
            | "/responses"
            | "/openai/v1/responses"
            | "/backend-api/codex/responses" => Some(Self::Responses),
            "/v1/responses/compact"
            | "/responses/compact"
            | "/openai/v1/responses/compact"
            | "/backend-api/codex/responses/compact" => Some(Self::ResponsesCompact),
            "/v1/chat/completions" => Some(Self::ChatCompletions),
            "/v1/completions" => Some(Self::Completions),
            _ => None,
        }
    }

    /// Whether the body must reach the upstream exactly as sent.
    fn is_responses(self) -> bool {
        matches!(self, Self::Responses | Self::ResponsesCompact)
    }

    fn upstream_path(self) -> &'static str {
        match self {
            Self::Responses => "/v1/responses",
            Self::ResponsesCompact => "/v1/responses/compact",
            Self::ChatCompletions => "/v1/chat/completions",
            Self::Completions => "/v1/completions",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Responses => "responses",
            Self::ResponsesCompact => "responses_compact",
            Self::ChatCompletions => "chat_completions",
            Self::Completions => "completions",
        }
    }
}

/// The fields of a request body the gateway needs; everything else is skipped unread.
#[derive(Deserialize)]
struct RequestFields<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(borrow, default)]
    prompt_cache_key: Option<Cow<'a, str>>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// Shared state of the request path.
#[derive(Debug)]
struct Shared {
    table: Arc<ArcSwapOption<RoutingTable>>,
    client: UpstreamClient,
    usage: UsagePublisher,
    node_id: Arc<str>,
    max_body_bytes: usize,
    body_timeout: Duration,
    trusted_proxies: Vec<ipnet::IpNet>,
    key_limits: limits::KeyLimits,
    unsettled: Arc<Unsettled>,
    metrics: Arc<Metrics>,
    control_plane: ConfigDiscoveryClient<tonic::transport::Channel>,
    data_plane_token: gateway_proto::auth::Secret,
    draining: AtomicBool,
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
    /// The control plane, for `GET /v1/usage` (connected on first use).
    pub control_plane: ConfigDiscoveryClient<tonic::transport::Channel>,
    /// The data-plane token for it.
    pub data_plane_token: gateway_proto::auth::Secret,
}

/// The proxy service; cheap to clone per connection.
#[derive(Debug, Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    /// A proxy over the routing table published in `table`.
    pub fn new(
        table: Arc<ArcSwapOption<RoutingTable>>,
        usage: UsagePublisher,
        settings: ProxySettings,
    ) -> Result<Self, rustls::Error> {
        Ok(Self {
            shared: Arc::new(Shared {
                table,
                client: forward::client()?,
                usage,
                node_id: settings.node_id,
                max_body_bytes: settings.max_body_bytes,
                body_timeout: settings.body_timeout,
                trusted_proxies: settings.trusted_proxies,
                key_limits: limits::KeyLimits::default(),
                unsettled: Arc::default(),
                metrics: settings.metrics,
                control_plane: settings.control_plane,
                data_plane_token: settings.data_plane_token,
                draining: AtomicBool::new(false),
            }),
        })
    }

    /// Marks the proxy as shutting down: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.shared.draining.store(true, Ordering::Relaxed);
    }

    /// Whether a snapshot is applied and the proxy is not shutting down.
    pub fn is_ready(&self) -> bool {
        !self.shared.draining.load(Ordering::Relaxed) && self.shared.table.load().is_some()
    }

    /// Handles one request. Never fails: every error has become a response here.
    pub async fn handle(
        self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let request_id = uuid::Uuid::now_v7().to_string();
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
            .route(request, peer, &request_id)
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
                err.into_response(&request_id)
            }
        };
        span.record("http.response.status_code", response.status().as_u16());
        if let Ok(value) = HeaderValue::from_str(&request_id) {
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
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let path = request.uri().path();
        match (request.method(), Endpoint::classify(path)) {
            (&Method::POST, Some(endpoint)) => {
                self.forward(request, peer, endpoint, request_id).await
            }
            (&Method::GET, Some(endpoint))
                if endpoint.is_responses() && is_websocket_upgrade(request.headers()) =>
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
                let limit = request
                    .uri()
                    .query()
                    .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("limit=")))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                self.usage(request.headers(), limit).await
            }
            (&Method::GET, None) if path == "/healthz" => Ok(text(StatusCode::OK, "ok")),
            (&Method::GET, None) if path == "/metrics" => {
                let table = self.shared.table.load_full();
                let body = self.shared.metrics.render(table.as_deref());
                let mut response = Response::new(full(Bytes::from(body)));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                Ok(response)
            }
            (&Method::GET, None) if path == "/readyz" => Ok(if self.is_ready() {
                text(StatusCode::OK, "ready")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready")
            }),
            _ => Err(ProxyError::NotFound(path.to_owned())),
        }
    }

    async fn forward(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        endpoint: Endpoint,
        request_id: &str,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let started = Instant::now();
        let started_at_ms = now_ms();
        let table = self.shared.table.load_full().ok_or(ProxyError::NotReady)?;
        let (parts, body) = request.into_parts();
        let (key, user) = auth::authenticate(
            &table,
            &parts.headers,
            started_at_ms,
            &self.shared.unsettled,
        )?;
        let client_ip = limits::client_ip(peer.ip(), &parts.headers, &self.shared.trusted_proxies);
        limits::check_ip(key, client_ip)?;
        let key_slot = self.shared.key_limits.admit(key, started)?;

        let limit = self.shared.max_body_bytes;
        if content_length(&parts.headers).is_some_and(|n| n > limit as u64) {
            return Err(ProxyError::BodyTooLarge(limit));
        }
        let body = tokio::time::timeout(
            self.shared.body_timeout,
            Limited::new(body, limit).collect(),
        )
        .await
        .map_err(|_| ProxyError::BodyTimeout)?
        .map_err(|err| {
            if err.is::<http_body_util::LengthLimitError>() {
                ProxyError::BodyTooLarge(limit)
            } else {
                ProxyError::BadRequest("the request body could not be read".into())
            }
        })?
        .to_bytes();
        let fields: RequestFields<'_> = serde_json::from_slice(&body).map_err(|err| {
            ProxyError::BadRequest(format!(
                "the request body is not a valid JSON object: {err}"
            ))
        })?;
        let model = fields
            .model
            .as_deref()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| ProxyError::BadRequest("the request body must name a `model`".into()))?
            .to_owned();
        auth::check_model(key, &model)?;

        let affinity = affinity_key(
            table.affinity,
            user.id,
            &parts.headers,
            fields.prompt_cache_key.as_deref(),
        );
        let request_id_value =
            HeaderValue::from_str(request_id).map_err(|_| ProxyError::Internal)?;
        let stream = fields.stream.unwrap_or(false);
        let price = table.price(&model);
        // Chat and completions streams only report usage when asked to: ask on the client's
        // behalf, and hide the extra chunk from a client that did not.
        let (body, strip_usage_chunk) = if endpoint.is_responses() || !stream {
            (body.clone(), false)
        } else {
            match fields.stream_options.as_ref().and_then(|o| o.include_usage) {
                Some(true) => (body.clone(), false),
                _ => (request_usage(&body, fields.stream_options.is_some())?, true),
            }
        };
        drop(fields);
        let mut meter = MeterGuard::new(Meter {
            publisher: self.shared.usage.clone(),
            request_id: request_id.to_owned(),
            key_id: key.id,
            user_id: user.id,
            upstream_id: 0,
            model,
            endpoint: endpoint.name(),
            stream,
            price,
            multiplier_ppm: user.multiplier_ppm,
            request_bytes: body.len(),
            node_id: self.shared.node_id.clone(),
            started,
            started_at_ms,
            first_byte: None,
            unsettled: self.shared.unsettled.clone(),
            settle_floor_ms: Unsettled::floor(table.built_at_ms),
        });

        let committed = failover::run(
            &self.shared.client,
            &self.shared.metrics,
            &table,
            affinity.as_bytes(),
            |upstream| {
                forward::upstream_request(
                    &parts.headers,
                    parts.uri.query(),
                    upstream,
                    endpoint.upstream_path(),
                    body.clone(),
                    &request_id_value,
                )
            },
            endpoint == Endpoint::Responses,
            request_id,
        )
        .await;
        let request_bytes = body.len();
        let committed = match committed {
            Ok(committed) => committed,
            Err(exhausted) => {
                if let Some(m) = meter.meter_mut() {
                    m.upstream_id = exhausted.upstream_id;
                }
                // Nothing was produced: the event records the failure at no cost.
                meter.finish(Outcome::UpstreamError, None, 0);
                return Err(exhausted.error);
            }
        };
        let Some(mut meter) = meter.into_inner() else {
            return Err(ProxyError::Internal);
        };
        meter.upstream_id = committed.upstream.id;
        let kind = match (
            is_event_stream(&committed.head.headers),
            endpoint.is_responses(),
        ) {
            (true, true) => TapKind::ResponsesSse,
            (true, false) => TapKind::ChatSse { strip_usage_chunk },
            (false, _) => TapKind::Json,
        };
        meter.request_bytes = request_bytes;
        // The request's span stays open until the response body ends, so a trace shows the
        // whole stream, not only the time to its head.
        let mut held: Vec<Held> = vec![
            Box::new(committed.in_flight),
            Box::new(tracing::Span::current()),
        ];
        if let Some(slot) = key_slot {
            held.push(Box::new(slot));
        }
        let body = MeteredBody::new(
            committed.body,
            committed.prefix,
            kind,
            meter,
            committed.upstream.timeout,
            held,
        );
        let mut response = Response::new(body.boxed_unsync());
        *response.status_mut() = committed.head.status;
        *response.headers_mut() = forward::client_response_headers(&committed.head.headers);
        if kind != TapKind::Json {
            // A stream may lose a chunk (the usage chunk) or gain one (a terminal error event):
            // its length is whatever it turns out to be.
            response.headers_mut().remove(header::CONTENT_LENGTH);
        }
        Ok(response)
    }
}

impl Proxy {
    /// `GET /v1/models`: what the presented key may use, from the snapshot.
    fn models(&self, headers: &HeaderMap) -> Result<Response<ProxyBody>, ProxyError> {
        let table = self.shared.table.load_full().ok_or(ProxyError::NotReady)?;
        let (key, _) = auth::authenticate_key(&table, headers, now_ms())?;
        let data: Vec<serde_json::Value> = table
            .models_for(key)
            .into_iter()
            .map(|id| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "codex-gateway"}))
            .collect();
        let body = serde_json::json!({"object": "list", "data": data});
        let mut response = Response::new(full(Bytes::from(body.to_string())));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(response)
    }
}

impl Proxy {
    /// `GET /v1/usage`: the key's own recent usage and its user's balance, from the ledger.
    async fn usage(
        &self,
        headers: &HeaderMap,
        limit: u32,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let table = self.shared.table.load_full().ok_or(ProxyError::NotReady)?;
        let (key, user) = auth::authenticate_key(&table, headers, now_ms())?;
        let mut request = tonic::Request::new(gateway_proto::v1::KeyUsageRequest {
            key_id: key.id,
            user_id: user.id,
            limit,
        });
        let token = self
            .shared
            .data_plane_token
            .bearer()
            .map_err(|_| ProxyError::Internal)?;
        request.metadata_mut().insert("authorization", token);
        request.set_timeout(Duration::from_secs(5));
        let usage = self
            .shared
            .control_plane
            .clone()
            .key_usage(request)
            .await
            .map_err(|status| {
                warn!(target: "ProxyHandler", error = %status, "key usage query failed");
                ProxyError::LedgerUnavailable
            })?
            .into_inner();
        let body = serde_json::json!({
            "object": "list",
            "balance_micros": usage.balance_micros,
            "data": usage.events,
        });
        let mut response = Response::new(full(Bytes::from(body.to_string())));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(response)
    }
}

/// The body with `stream_options.include_usage = true`. The common case (no `stream_options`)
/// inserts the member after the opening brace and leaves every other byte alone.
fn request_usage(body: &Bytes, has_stream_options: bool) -> Result<Bytes, ProxyError> {
    const MEMBER: &[u8] = br#""stream_options":{"include_usage":true},"#;
    if !has_stream_options
        && let Some(open) = body.iter().position(|b| !b.is_ascii_whitespace())
        && body[open] == b'{'
    {
        let mut out = Vec::with_capacity(body.len() + MEMBER.len());
        out.extend_from_slice(&body[..=open]);
        out.extend_from_slice(MEMBER);
        out.extend_from_slice(&body[open + 1..]);
        return Ok(Bytes::from(out));
    }
    let mut value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ProxyError::BadRequest(format!("the request body is not valid JSON: {e}")))?;
    let options = value
        .as_object_mut()
        .ok_or_else(|| ProxyError::BadRequest("the request body must be a JSON object".into()))?
        .entry("stream_options")
        .or_insert_with(|| serde_json::json!({}));
    match options.as_object_mut() {
        Some(o) => {
            o.insert("include_usage".into(), serde_json::Value::Bool(true));
        }
        None => {
            return Err(ProxyError::BadRequest(
                "`stream_options` must be an object".into(),
            ));
        }
    }
    serde_json::to_vec(&value)
        .map(Bytes::from)
        .map_err(|_| ProxyError::Internal)
}

/// The `route` label of a path (bounded: unknown paths share one label).
fn route_label(path: &str) -> &'static str {
    match Endpoint::classify(path) {
        Some(e) => e.name(),
        None => match path {
            "/v1/models" | "/models" => "models",
            "/v1/usage" => "usage",
            "/healthz" => "healthz",
            "/readyz" => "readyz",
            "/metrics" => "metrics",
            _ => "other",
        },
    }
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The key that keeps a client on one upstream: the user, or the user and session.
fn affinity_key(
    mode: Affinity,
    user_id: i64,
    headers: &HeaderMap,
    prompt_cache_key: Option<&str>,
) -> String {
    let session = match mode {
        Affinity::User => None,
        Affinity::UserSession => ["session-id", "session_id", "conversation_id"]
            .iter()
            .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
            .or(prompt_cache_key)
            .filter(|s| !s.is_empty()),
    };
    match session {
        Some(s) => format!("user:{user_id}|session:{s}"),
        None => format!("user:{user_id}"),
    }
}

pub(crate) fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_every_alias() {
        for p in [
            "/v1/responses",
            "/responses",
            "/openai/v1/responses",
            "/backend-api/codex/responses",
            "/v1/responses/",
        ] {
            assert_eq!(Endpoint::classify(p), Some(Endpoint::Responses), "{p}");
        }
        for p in [
            "/v1/responses/compact",
            "/responses/compact",
            "/openai/v1/responses/compact",
            "/backend-api/codex/responses/compact",
        ] {
            assert_eq!(
                Endpoint::classify(p),
                Some(Endpoint::ResponsesCompact),
                "{p}"
            );
        }
        assert_eq!(Endpoint::classify("/v1/models"), None);
    }

    #[test]
    fn usage_is_requested_without_touching_other_bytes() {
        let body = Bytes::from_static(b" {\"model\":\"m\",\n \"stream\":true}");
        let out = request_usage(&body, false).unwrap();
        assert_eq!(
            &out[..],
            b" {\"stream_options\":{\"include_usage\":true},\"model\":\"m\",\n \"stream\":true}"
        );
        let with_options = Bytes::from_static(
            b"{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_obfuscation\":false}}",
        );
        let v: serde_json::Value =
            serde_json::from_slice(&request_usage(&with_options, true).unwrap()).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["stream_options"]["include_obfuscation"], false);
    }

    #[test]
    fn affinity_modes() {
        let mut h = HeaderMap::new();
        assert_eq!(affinity_key(Affinity::User, 7, &h, Some("pck")), "user:7");
        assert_eq!(
            affinity_key(Affinity::UserSession, 7, &h, Some("pck")),
            "user:7|session:pck"
        );
        h.insert("session_id", HeaderValue::from_static("s1"));
        assert_eq!(
            affinity_key(Affinity::UserSession, 7, &h, Some("pck")),
            "user:7|session:s1"
        );
        assert_eq!(
            affinity_key(Affinity::UserSession, 7, &HeaderMap::new(), None),
            "user:7"
        );
    }
}
