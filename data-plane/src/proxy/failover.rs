//! Retries and failover, before the first byte reaches the client (DESIGN §2.5).
//!
//! Retryable: connection errors, no response head within the upstream's timeout, 5xx, 429,
//! the upstream rejecting its own key (401/403), and a Responses stream that fails
//! (`response.failed`/`error`) or ends before any output event. Each upstream is tried up to
//! `1 + max_retries` times, then the user's next upstream in ring order (same tier, then less
//! preferred tiers), never one already tried. A 429 with a short `Retry-After` (≤ 1 s) is
//! retried on the same upstream after that wait; a longer one cools the upstream down for the
//! stated time and fails over at once. Anything else from the upstream (400, 404, 413, …) is
//! the request's own fault and goes back to the client without a retry.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use gateway_proto::ids::UpstreamId;
use http::{Request, Response, StatusCode, header, response::Parts};
use http_body_util::{BodyExt, Full, Limited};
use rand::Rng;
use tracing::{Instrument, debug, info_span, warn};

use super::error::{ProxyError, scrub_upstream_message};
use crate::{
    metrics::{AttemptLabels, Metrics, RetryLabels},
    routing::{Router, Upstream, passive::InFlight},
    sse::SseParser,
    upstream::{UpstreamBody, UpstreamClient},
};

/// Upper bound on attempts for one request, whatever the upstreams' `max_retries`.
const MAX_ATTEMPTS: u32 = 8;
/// A 429 asking to wait at most this long is retried on the same upstream after the wait.
const SHORT_RETRY_AFTER: Duration = Duration::from_millis(1_000);
/// First backoff between attempts on the same upstream; doubles, with jitter.
const BACKOFF_BASE: Duration = Duration::from_millis(50);
/// Most bytes held back while waiting for a stream's first output event.
const MAX_PREFETCH_BYTES: usize = 1024 * 1024;
/// Most of an upstream error body read to learn why it failed.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Why an attempt failed in a way worth retrying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
    Connect,
    Timeout,
    Status(StatusCode),
    RateLimited(Option<Duration>),
    UpstreamAuth(StatusCode),
    FailedBeforeOutput,
    CutBeforeOutput,
}

impl Failure {
    /// Short name for logs and metrics.
    pub(super) fn label(&self) -> &'static str {
        match self {
            Self::Connect => "connect_error",
            Self::Timeout => "timeout",
            Self::Status(_) => "server_error",
            Self::RateLimited(_) => "rate_limited",
            Self::UpstreamAuth(_) => "upstream_auth",
            Self::FailedBeforeOutput => "failed_before_output",
            Self::CutBeforeOutput => "cut_before_output",
        }
    }

    /// The client's error when nothing else is left to try.
    fn into_error(self, router: &Router, model: &str) -> ProxyError {
        match self {
            Self::Connect | Self::CutBeforeOutput => ProxyError::UpstreamConnect,
            Self::Timeout => ProxyError::UpstreamTimeout,
            Self::Status(s) => ProxyError::UpstreamStatus(s),
            Self::UpstreamAuth(_) => ProxyError::UpstreamAuth,
            Self::FailedBeforeOutput => ProxyError::UpstreamFailed,
            Self::RateLimited(after) => ProxyError::UpstreamsBusy(
                router
                    .all_cooling(model, Instant::now())
                    .or(after)
                    .unwrap_or(Duration::from_secs(1)),
            ),
        }
    }
}

/// What one attempt produced.
enum Attempt {
    /// Forward this answer to the client.
    Commit(Parts, UpstreamBody, Vec<Bytes>),
    Retry(Failure),
    /// A final answer that is the request's own fault.
    Reject(ProxyError),
}

/// The answer chosen for the client.
#[derive(Debug)]
pub(super) struct Committed {
    pub(super) upstream: Arc<Upstream>,
    pub(super) head: Parts,
    pub(super) body: UpstreamBody,
    /// Bytes read ahead of the head, to be sent first.
    pub(super) prefix: Vec<Bytes>,
    pub(super) in_flight: InFlight,
}

/// Why no answer could be committed, and the last upstream tried (none if none was).
#[derive(Debug)]
pub(super) struct Exhausted {
    pub(super) error: ProxyError,
    pub(super) upstream_id: Option<UpstreamId>,
}

/// Where a request may go: the snapshot's router, the request's affinity key and its model.
#[derive(Debug, Clone, Copy)]
pub(super) struct Route<'a> {
    pub(super) router: &'a Router,
    pub(super) affinity_key: &'a [u8],
    pub(super) model: &'a str,
}

/// Picks upstreams in the affinity key's order among those serving the model (see
/// [`Router::choose`]) and tries each until one gives an answer worth forwarding.
pub(super) async fn run(
    client: &UpstreamClient,
    metrics: &Metrics,
    route: Route<'_>,
    build: impl Fn(&Upstream) -> Result<Request<Full<Bytes>>, ProxyError>,
    prefetch_sse: bool,
    request_id: &str,
) -> Result<Committed, Exhausted> {
    let Route {
        router,
        affinity_key,
        model,
    } = route;
    let mut tried: Vec<UpstreamId> = Vec::new();
    let mut last: Option<Failure> = None;
    let mut attempts = 0;
    'upstreams: while let Some(upstream) =
        router.choose(affinity_key, model, &tried, Instant::now())
    {
        tried.push(upstream.id);
        let mut retries_left = upstream.max_retries;
        let mut backoff = BACKOFF_BASE;
        loop {
            if attempts >= MAX_ATTEMPTS || !upstream.state.begin_attempt(Instant::now()) {
                break 'upstreams;
            }
            attempts += 1;
            let in_flight = upstream.state.start();
            let request = build(&upstream).map_err(|error| Exhausted {
                error,
                upstream_id: Some(upstream.id),
            })?;
            let span = info_span!(
                target: "ProxyHandler",
                "upstream_attempt",
                otel.kind = "client",
                upstream = %upstream.name,
                attempt = attempts,
                outcome = tracing::field::Empty,
            );
            let outcome = attempt(client, &upstream, request, prefetch_sse)
                .instrument(span.clone())
                .await;
            let label = match &outcome {
                Attempt::Commit(..) => "ok",
                Attempt::Reject(_) => "rejected",
                Attempt::Retry(f) => f.label(),
            };
            span.record("outcome", label);
            metrics
                .upstream_attempts
                .get_or_create(&AttemptLabels {
                    upstream: upstream.name.clone(),
                    outcome: label,
                })
                .inc();
            match outcome {
                Attempt::Commit(head, body, prefix) => {
                    upstream.state.success();
                    return Ok(Committed {
                        upstream,
                        head,
                        body,
                        prefix,
                        in_flight,
                    });
                }
                Attempt::Reject(error) => {
                    upstream.state.success();
                    return Err(Exhausted {
                        error,
                        upstream_id: Some(upstream.id),
                    });
                }
                Attempt::Retry(failure) => {
                    drop(in_flight);
                    metrics
                        .retries
                        .get_or_create(&RetryLabels {
                            reason: failure.label(),
                        })
                        .inc();
                    let now = Instant::now();
                    warn!(target: "ProxyHandler", request_id, upstream = %upstream.name, attempt = attempts, failure = failure.label(), "upstream attempt failed");
                    let wait = match &failure {
                        Failure::RateLimited(Some(after)) if *after > SHORT_RETRY_AFTER => {
                            upstream.state.cool_down(now, *after);
                            last = Some(failure);
                            continue 'upstreams;
                        }
                        Failure::RateLimited(Some(after)) => *after,
                        Failure::RateLimited(None) => backoff,
                        _ => {
                            if upstream.state.failure(now) {
                                warn!(target: "ProxyHandler", upstream = %upstream.name, "circuit opened after consecutive failures");
                            }
                            backoff
                        }
                    };
                    last = Some(failure);
                    if retries_left == 0 || !upstream.state.available(Instant::now()) {
                        continue 'upstreams;
                    }
                    retries_left -= 1;
                    let jitter = rand::rng().random_range(0.5..1.0);
                    tokio::time::sleep(wait.mul_f64(jitter)).await;
                    backoff = backoff.saturating_mul(2);
                }
            }
        }
    }
    let upstream_id = tried.last().copied();
    let error = match last {
        Some(failure) => failure.into_error(router, model),
        None => match router.all_cooling(model, Instant::now()) {
            Some(after) => ProxyError::UpstreamsBusy(after),
            None => ProxyError::NoUpstream,
        },
    };
    Err(Exhausted { error, upstream_id })
}

async fn attempt(
    client: &UpstreamClient,
    upstream: &Upstream,
    request: Request<Full<Bytes>>,
    prefetch_sse: bool,
) -> Attempt {
    let response = match tokio::time::timeout(
        upstream.timeout,
        client.send(&upstream.target, request),
    )
    .await
    {
        Err(_) => return Attempt::Retry(Failure::Timeout),
        Ok(Err(err)) => {
            debug!(target: "ProxyHandler", upstream = %upstream.name, error = %err, "upstream connection failed");
            return Attempt::Retry(Failure::Connect);
        }
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if status.is_success() {
        let (head, mut body) = response.into_parts();
        if prefetch_sse && super::forward::is_event_stream(&head.headers) {
            return match prefetch(&mut body, upstream.timeout).await {
                Ok(prefix) => Attempt::Commit(head, body, prefix),
                Err(failure) => Attempt::Retry(failure),
            };
        }
        return Attempt::Commit(head, body, Vec::new());
    }
    classify(response, upstream).await
}

async fn classify(response: Response<UpstreamBody>, upstream: &Upstream) -> Attempt {
    let status = response.status();
    match status {
        StatusCode::TOO_MANY_REQUESTS => {
            Attempt::Retry(Failure::RateLimited(retry_after(response.headers())))
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            tracing::error!(target: "ProxyHandler", upstream = %upstream.name, status = status.as_u16(), "upstream rejected its API key");
            Attempt::Retry(Failure::UpstreamAuth(status))
        }
        s if s.is_client_error() => {
            let body = tokio::time::timeout(
                upstream.timeout,
                Limited::new(response.into_body(), MAX_ERROR_BODY).collect(),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .map(|c| c.to_bytes())
            .unwrap_or_default();
            Attempt::Reject(ProxyError::UpstreamRejected {
                status: s,
                message: match scrub_upstream_message(&body) {
                    Some(m) => format!("the upstream rejected the request: {m}"),
                    None => format!("the upstream rejected the request (status {})", s.as_u16()),
                },
            })
        }
        s => Attempt::Retry(Failure::Status(s)),
    }
}

/// `Retry-After` in seconds (HTTP dates are rare from API pools and treated as absent).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)))
}

/// Reads a Responses stream until its first output event, so a `response.failed` (or a cut)
/// that comes before any output can still be retried: nothing has reached the client yet.
/// Returns the bytes read, to be sent first once committed.
async fn prefetch(body: &mut UpstreamBody, idle: Duration) -> Result<Vec<Bytes>, Failure> {
    let mut parser = SseParser::new();
    let mut frames = Vec::new();
    let mut held = 0;
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(Failure::Timeout),
            Ok(None) => return Err(Failure::CutBeforeOutput),
            Ok(Some(Err(_))) => return Err(Failure::CutBeforeOutput),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let (mut failed, mut output) = (false, false);
        parser.feed(&data, |event| match &*event.name() {
            b"response.created" | b"response.in_progress" | b"" => {}
            b"response.failed" | b"error" => failed = true,
            _ => output = true,
        });
        held += data.len();
        frames.push(data);
        if failed {
            return Err(Failure::FailedBeforeOutput);
        }
        if output || held > MAX_PREFETCH_BYTES {
            return Ok(frames);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds() {
        let mut h = http::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(header::RETRY_AFTER, "0.5".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(500)));
        h.insert(
            header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }
}
