//! Every way a proxied request can fail, mapped by whose fault it was to a status and an
//! OpenAI-shaped error body. Messages never contain an upstream URL, key or body verbatim.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;

use gateway_proto::{money::Micros, v1::SpendLimit};

use super::ProxyBody;

/// What a key at a cap is told: which cap, what it spent, and when the window frees room.
fn spend_limit_message(limit: &SpendLimit, spent: Micros, frees_at_ms: i64) -> String {
    let when = chrono::DateTime::from_timestamp_millis(frees_at_ms)
        .filter(|_| frees_at_ms > 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    match when {
        Some(when) => format!(
            "this API key has reached its spending limit of {limit} (spent {spent}); \
             room frees up at {when}"
        ),
        None if limit.window == gateway_proto::v1::SpendWindow::Lifetime as i32 => format!(
            "this API key has reached its lifetime spending limit of {limit} (spent {spent}); \
             ask for the limit to be raised"
        ),
        // Nothing of the window's spend is in the snapshot yet: it frees an hour or more on.
        None => format!(
            "this API key has reached its spending limit of {limit} (spent {spent}); \
             room frees up as the window moves on"
        ),
    }
}

/// A request that cannot be (or was not) proxied successfully.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    // The client's fault: 4xx.
    #[error("missing API key: send `Authorization: Bearer <gateway key>`")]
    MissingKey,
    #[error("invalid API key")]
    InvalidKey,
    #[error("this API key has expired")]
    KeyExpired,
    #[error("this API key may not use model {0:?}")]
    ModelNotAllowed(String),
    #[error("the model {0:?} does not exist or is not served here")]
    ModelNotFound(String),
    #[error("your balance is exhausted; top up to continue")]
    InsufficientQuota,
    #[error("{}", spend_limit_message(.limit, *.spent, *.frees_at_ms))]
    SpendLimitReached {
        /// The cap as operators write it: `5.00/day`, `50.00`.
        limit: SpendLimit,
        spent: Micros,
        /// Unix ms when room frees; 0 = never by itself.
        frees_at_ms: i64,
    },
    #[error("this API key may not be used from {0}")]
    IpNotAllowed(std::net::IpAddr),
    #[error("rate limit of {rpm} requests per minute reached; retry after {} s", retry_after.as_secs().max(1))]
    RateLimited {
        rpm: u32,
        retry_after: std::time::Duration,
    },
    #[error("this API key already has {0} requests in progress, its limit")]
    ConcurrencyLimited(u32),
    #[error("the request body was not received in time")]
    BodyTimeout,
    #[error("request body is larger than the {0}-byte limit")]
    BodyTooLarge(usize),
    #[error("{0}")]
    BadRequest(String),
    #[error("unknown route {0}")]
    NotFound(String),
    #[error("method not allowed on {0}")]
    MethodNotAllowed(String),
    #[error("WebSocket is not supported here; use HTTP with server-sent events")]
    WebSocketUnsupported,
    #[error("{message}")]
    UpstreamRejected { status: StatusCode, message: String },

    // Nobody to serve it: 503.
    #[error("the gateway has no configuration yet; try again shortly")]
    NotReady,
    #[error("no upstream is available for this request; try again shortly")]
    NoUpstream,
    #[error("usage is unavailable right now; try again shortly")]
    LedgerUnavailable,
    #[error("every upstream is busy; retry after {} s", .0.as_secs().max(1))]
    UpstreamsBusy(std::time::Duration),

    // The upstream's fault: 502/504.
    #[error("the upstream could not be reached")]
    UpstreamConnect,
    #[error("the upstream did not answer in time")]
    UpstreamTimeout,
    #[error("the upstream failed (status {0})")]
    UpstreamStatus(StatusCode),
    #[error("the upstream failed the response before producing output")]
    UpstreamFailed,
    #[error(
        "the upstream rejected the gateway's credentials; an operator must check the upstream's API key"
    )]
    UpstreamAuth,

    // Ours: 500.
    #[error("internal gateway error")]
    Internal,
}

impl ProxyError {
    /// Status code, type and code of the OpenAI-shaped error.
    fn shape(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::MissingKey | Self::InvalidKey => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
            ),
            Self::KeyExpired => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "expired_api_key",
            ),
            Self::ModelNotAllowed(_) => (
                StatusCode::FORBIDDEN,
                "invalid_request_error",
                "model_not_allowed",
            ),
            Self::ModelNotFound(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
            ),
            Self::InsufficientQuota | Self::SpendLimitReached { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "insufficient_quota",
                "insufficient_quota",
            ),
            Self::IpNotAllowed(_) => (
                StatusCode::FORBIDDEN,
                "invalid_request_error",
                "ip_not_allowed",
            ),
            Self::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                "rate_limit_exceeded",
            ),
            Self::ConcurrencyLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                "concurrency_limit_exceeded",
            ),
            Self::BodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                "request_timeout",
            ),
            Self::BodyTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
            ),
            Self::BadRequest(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
            ),
            Self::NotFound(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "unknown_url",
            ),
            Self::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "method_not_allowed",
            ),
            Self::WebSocketUnsupported => (
                StatusCode::UPGRADE_REQUIRED,
                "invalid_request_error",
                "websocket_not_supported",
            ),
            Self::UpstreamRejected { status, .. } => {
                (*status, "invalid_request_error", "upstream_rejected")
            }
            Self::NotReady => (StatusCode::SERVICE_UNAVAILABLE, "server_error", "not_ready"),
            Self::NoUpstream => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "no_upstream_available",
            ),
            Self::LedgerUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "ledger_unavailable",
            ),
            Self::UpstreamsBusy(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "upstreams_busy",
            ),
            Self::UpstreamConnect
            | Self::UpstreamStatus(_)
            | Self::UpstreamAuth
            | Self::UpstreamFailed => (StatusCode::BAD_GATEWAY, "server_error", "upstream_error"),
            Self::UpstreamTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                "upstream_timeout",
            ),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
            ),
        }
    }

    /// Whether the client caused it (logged at debug, not as an error).
    pub fn is_client_fault(&self) -> bool {
        self.shape().0.is_client_error()
    }

    /// How long the client should wait before retrying, when waiting helps.
    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::UpstreamsBusy(after) => Some(*after),
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            Self::ConcurrencyLimited(_) => Some(std::time::Duration::from_secs(1)),
            _ => None,
        }
    }

    /// The response the client sees.
    pub fn into_response(self, request_id: &str) -> Response<ProxyBody> {
        let (status, kind, code) = self.shape();
        let retry_after = self.retry_after();
        let body = ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                kind,
                code,
                param: None,
                request_id,
            },
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = Response::new(super::full(Bytes::from(json)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(after) = retry_after {
            // Whole seconds, rounded up, at least one.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'static str,
    code: &'static str,
    param: Option<&'static str>,
    request_id: &'a str,
}

/// A short, scrubbed version of an upstream's error message: the `error.message` of a JSON
/// body with URLs and key-like tokens removed, or nothing.
pub fn scrub_upstream_message(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Outer {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        message: String,
    }
    let message = serde_json::from_slice::<Outer>(body).ok()?.error.message;
    let scrubbed: Vec<&str> = message
        .split_whitespace()
        .map(|word| {
            let lower = word.to_ascii_lowercase();
            if lower.contains("://") || lower.starts_with("www.") {
                "[url]"
            } else if lower.starts_with("sk-") || lower.starts_with("bearer") || word.len() > 40 {
                "[redacted]"
            } else {
                word
            }
        })
        .collect();
    let mut text = scrubbed.join(" ");
    if text.len() > 300 {
        let mut cut = 300;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn errors_are_openai_shaped_with_request_id() {
        let response = ProxyError::InsufficientQuota.into_response("req-1");
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["type"], "insufficient_quota");
        assert_eq!(v["error"]["code"], "insufficient_quota");
        assert_eq!(v["error"]["request_id"], "req-1");
        assert!(v["error"]["message"].as_str().unwrap().contains("balance"));
    }

    #[test]
    fn statuses_follow_fault() {
        assert_eq!(ProxyError::InvalidKey.shape().0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            ProxyError::UpstreamTimeout.shape().0,
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(ProxyError::UpstreamAuth.shape().0, StatusCode::BAD_GATEWAY);
        assert_eq!(
            ProxyError::NoUpstream.shape().0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(ProxyError::BodyTooLarge(1).is_client_fault());
        assert!(!ProxyError::Internal.is_client_fault());
    }

    #[test]
    fn upstream_messages_are_scrubbed() {
        let body = br#"{"error":{"message":"Invalid model foo, see https://pool.internal/docs key sk-abcdef123"}}"#;
        let m = scrub_upstream_message(body).unwrap();
        assert_eq!(m, "Invalid model foo, see [url] key [redacted]");
        assert_eq!(scrub_upstream_message(b"<html>oops</html>"), None);
    }
}
