//! Responding: the committed upstream answer goes back to the client with its status and
//! headers (hop-by-hop ones dropped), its body streamed through the metering tap, which bills
//! exactly once however the body ends.

use http::{Response, header};
use http_body_util::BodyExt;

use super::{ProxyBody, failover::Committed, forward, limits::KeySlot, request::ClientRequest};
use crate::metering::{Held, Meter, MeteredBody, TapKind};

/// The client's response for `committed`, metered by `meter`.
pub(super) fn metered(
    committed: Committed,
    request: &ClientRequest,
    meter: Meter,
    slot: Option<KeySlot>,
) -> Response<ProxyBody> {
    let kind = match (
        forward::is_event_stream(&committed.head.headers),
        request.endpoint.is_responses(),
    ) {
        (true, true) => TapKind::ResponsesSse,
        (true, false) => TapKind::ChatSse {
            strip_usage_chunk: request.strip_usage_chunk,
        },
        (false, _) => TapKind::Json,
    };
    // The request's span (when traces are exported) stays open until the response body
    // ends, so a trace shows the whole stream, not only the time to its head.
    let mut held: Vec<Held> = Vec::with_capacity(3);
    held.push(Box::new(committed.in_flight));
    let span = tracing::Span::current();
    if !span.is_disabled() {
        held.push(Box::new(span));
    }
    if let Some(slot) = slot {
        held.push(Box::new(slot));
    }
    let body = MeteredBody::new(
        committed.body,
        committed.prefix,
        kind,
        meter,
        committed.upstream.id,
        committed.upstream.timeout,
        held,
    );
    let mut response = Response::new(body.boxed_unsync());
    *response.status_mut() = committed.head.status;
    *response.headers_mut() = forward::into_client_response_headers(committed.head.headers);
    if kind != TapKind::Json {
        // A stream may lose a chunk (the usage chunk) or gain one (a terminal error event):
        // its length is whatever it turns out to be.
        response.headers_mut().remove(header::CONTENT_LENGTH);
    }
    response
}
