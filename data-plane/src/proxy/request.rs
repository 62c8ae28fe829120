//! Reading the request: which API the path names, the body read whole up to the size limit
//! and scanned only for the top-level fields the gateway needs (`model`, `stream`,
//! `prompt_cache_key`, `stream_options`; see `fields`), and — for chat and completions streams only — `include_usage` asked
//! for on the client's behalf. Responses bodies are forwarded exactly as sent.

use std::time::Duration;

use super::{error::ProxyError, fields};
use bytes::Bytes;
use http::{HeaderMap, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

/// The proxied APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    Responses,
    ResponsesCompact,
    ChatCompletions,
    Completions,
}

impl Endpoint {
    pub(super) fn classify(path: &str) -> Option<Self> {
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
    pub(super) fn is_responses(self) -> bool {
        matches!(self, Self::Responses | Self::ResponsesCompact)
    }

    pub(super) fn upstream_path(self) -> &'static str {
        match self {
            Self::Responses => "/v1/responses",
            Self::ResponsesCompact => "/v1/responses/compact",
            Self::ChatCompletions => "/v1/chat/completions",
            Self::Completions => "/v1/completions",
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Responses => "responses",
            Self::ResponsesCompact => "responses_compact",
            Self::ChatCompletions => "chat_completions",
            Self::Completions => "completions",
        }
    }
}

/// How much of a request body is accepted, and how fast.
#[derive(Debug, Clone, Copy)]
pub(super) struct BodyLimits {
    pub(super) max_bytes: usize,
    pub(super) timeout: Duration,
}

/// A request read and understood, ready to forward.
#[derive(Debug)]
pub(super) struct ClientRequest {
    pub(super) endpoint: Endpoint,
    /// What goes upstream: the client's bytes (with `include_usage` added for chat and
    /// completions streams that did not ask for it).
    pub(super) body: Bytes,
    pub(super) model: String,
    pub(super) stream: bool,
    /// The body's `prompt_cache_key`: a view into the body itself unless it had escapes.
    prompt_cache_key: Option<Bytes>,
    /// The gateway asked for the usage chunk; the client did not and must not see it.
    pub(super) strip_usage_chunk: bool,
}

/// Reads the body (413 above the limit, 408-style error past the timeout) and the fields the
/// gateway needs from it.
pub(super) async fn read(
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: Incoming,
    limits: BodyLimits,
) -> Result<ClientRequest, ProxyError> {
    let limit = limits.max_bytes;
    if content_length(headers).is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::BodyTooLarge(limit));
    }
    let body = tokio::time::timeout(limits.timeout, Limited::new(body, limit).collect())
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
    let fields = fields::scan(&body).map_err(|err| {
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
    let stream = fields.stream.unwrap_or(false);
    let prompt_cache_key = fields
        .prompt_cache_key
        .as_deref()
        .map(|key| view(&body, key));
    // Chat and completions streams only report usage when asked to: ask on the client's
    // behalf, and hide the extra chunk from a client that did not.
    let (forwarded, strip_usage_chunk) = if endpoint.is_responses() || !stream {
        (body.clone(), false)
    } else {
        match fields.stream_options.and_then(|o| o.include_usage) {
            Some(true) => (body.clone(), false),
            _ => (request_usage(&body, fields.stream_options.is_some())?, true),
        }
    };
    Ok(ClientRequest {
        endpoint,
        body: forwarded,
        model,
        stream,
        prompt_cache_key,
        strip_usage_chunk,
    })
}

impl ClientRequest {
    /// The body's `prompt_cache_key`, if it named one.
    pub(super) fn prompt_cache_key(&self) -> Option<&str> {
        // Always UTF-8: it was read as a JSON string.
        self.prompt_cache_key
            .as_deref()
            .and_then(|key| std::str::from_utf8(key).ok())
    }
}

/// `text` as a view into `body` when it lies inside it (a string serde borrowed), else a copy.
fn view(body: &Bytes, text: &str) -> Bytes {
    let start = (text.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
    let range = start..start.saturating_add(text.len());
    match body.get(range.clone()) {
        Some(inside) if inside.as_ptr() == text.as_ptr() => body.slice(range),
        _ => Bytes::copy_from_slice(text.as_bytes()),
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

pub(super) fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
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
    fn prompt_cache_key_is_a_view_of_the_body_or_a_copy() {
        let body = Bytes::from_static(b"{\"prompt_cache_key\":\"pck-1\"}");
        let inside = std::str::from_utf8(&body[21..26]).unwrap();
        let v = view(&body, inside);
        assert_eq!(&v[..], b"pck-1");
        assert_eq!(v.as_ptr(), inside.as_ptr(), "no copy");
        let elsewhere = view(&body, "pck-2");
        assert_eq!(&elsewhere[..], b"pck-2");
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
}
