//! The boundary with upstreams: the rewriting of requests and responses (upstream key in, client key out, hop-by-hop headers dropped, everything
//! else kept byte-for-byte).

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Version, header};
use http_body_util::Full;

use super::error::ProxyError;
use crate::routing::Upstream;

/// Header carrying the gateway's request id, to the upstream and to the client.
pub(super) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Headers that describe one hop and never travel further.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// Header names the `Connection` header lists as hop-by-hop for this message.
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect()
}

/// The request to send upstream: same body bytes, same headers except hop-by-hop ones and the
/// client's credentials; the upstream's key and the gateway's request id added.
pub(super) fn upstream_request(
    client_headers: &HeaderMap,
    query: Option<&str>,
    upstream: &Upstream,
    path: &str,
    body: Bytes,
    request_id: &HeaderValue,
) -> Result<Request<Full<Bytes>>, ProxyError> {
    let uri = upstream
        .target
        .path_and_query(path, query)
        .map_err(|_| ProxyError::Internal)?;
    let listed = connection_listed(client_headers);
    let mut headers = HeaderMap::with_capacity(client_headers.len() + 2);
    for (name, value) in client_headers {
        if is_hop_by_hop(name)
            || listed.contains(name)
            || name == header::HOST
            || name == header::AUTHORIZATION
            || name == header::CONTENT_LENGTH
            || name == REQUEST_ID
            || name.as_str() == "x-api-key"
        {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    headers.insert(header::AUTHORIZATION, upstream.authorization.clone());
    headers.insert(REQUEST_ID, request_id.clone());
    let mut request = Request::new(Full::new(body));
    *request.uri_mut() = uri;
    *request.method_mut() = http::Method::POST;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Ok(request)
}

/// Response headers for the client: the upstream's, minus hop-by-hop ones (and its request
/// id: the client gets the gateway's). Edited in place, so the map is not built again.
pub(super) fn into_client_response_headers(mut headers: HeaderMap) -> HeaderMap {
    for name in connection_listed(&headers) {
        headers.remove(name);
    }
    for name in HOP_BY_HOP.into_iter().chain([REQUEST_ID]) {
        headers.remove(name);
    }
    headers
}

/// Whether a response is a Server-Sent Events stream.
pub(super) fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn upstream() -> Upstream {
        Upstream {
            id: gateway_proto::ids::UpstreamId(1),
            name: "pool".into(),
            base_url: "http://pool.example/openai".into(),
            target: crate::upstream::Target::parse("http://pool.example/openai").unwrap(),
            authorization: HeaderValue::from_static("Bearer sk-upstream"),
            priority: 0,
            weight: 1,
            max_retries: 0,
            timeout: Duration::from_secs(1),
            healthy: true,
            models: Box::default(),
            state: Default::default(),
        }
    }

    #[test]
    fn rewrites_credentials_and_hop_by_hop_only() {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer cgw-client"),
        );
        h.insert("x-api-key", HeaderValue::from_static("cgw-client"));
        h.insert("host", HeaderValue::from_static("gateway"));
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-drop-me"),
        );
        h.insert("x-drop-me", HeaderValue::from_static("1"));
        h.insert("session_id", HeaderValue::from_static("abc"));
        h.insert("conversation_id", HeaderValue::from_static("c1"));
        h.insert(
            "openai-beta",
            HeaderValue::from_static("responses=experimental"),
        );
        h.insert("x-codex-window-id", HeaderValue::from_static("w:0"));
        h.append("x-multi", HeaderValue::from_static("a"));
        h.append("x-multi", HeaderValue::from_static("b"));
        let rid = HeaderValue::from_static("rid-1");
        let req = upstream_request(
            &h,
            Some("a=1"),
            &upstream(),
            "/v1/responses",
            Bytes::from_static(b"{}"),
            &rid,
        )
        .unwrap();
        assert_eq!(req.uri(), "/openai/v1/responses?a=1");
        let out = req.headers();
        assert_eq!(out["authorization"], "Bearer sk-upstream");
        assert_eq!(out["x-request-id"], "rid-1");
        assert!(out.get("x-api-key").is_none());
        assert!(out.get("host").is_none());
        assert!(out.get("connection").is_none());
        assert!(out.get("x-drop-me").is_none());
        assert_eq!(out["session_id"], "abc");
        assert_eq!(out["conversation_id"], "c1");
        assert_eq!(out["openai-beta"], "responses=experimental");
        assert_eq!(out["x-codex-window-id"], "w:0");
        assert_eq!(out.get_all("x-multi").iter().count(), 2);
    }

    #[test]
    fn client_response_headers_lose_hop_by_hop_ones_only() {
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert("connection", HeaderValue::from_static("keep-alive, x-hop"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-request-id", HeaderValue::from_static("upstream-id"));
        h.append("x-multi", HeaderValue::from_static("a"));
        h.append("x-multi", HeaderValue::from_static("b"));
        let out = into_client_response_headers(h);
        let mut names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "x-multi"]);
        assert_eq!(out.get_all("x-multi").iter().count(), 2);
    }
}
