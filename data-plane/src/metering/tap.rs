//! The metering tap: a body wrapper that forwards every upstream frame to the client as it
//! arrives, lets a parser look at a copy-free view of the bytes for usage, enforces the idle
//! timeout between chunks, and publishes the usage event exactly once — when the stream ends,
//! fails, or is dropped because the client went away. Once bytes have gone to the client a
//! failure is never retried or spliced: an SSE stream ends with a terminal error event.

use std::{
    any::Any,
    collections::VecDeque,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use super::{
    Meter, Outcome, TokenUsage,
    extract::{event_type, from_json_body, from_response_event},
};
use crate::sse::SseParser;

/// Largest JSON body kept for reading its usage; larger bodies are still forwarded whole.
const MAX_JSON_TAP_BYTES: usize = 8 * 1024 * 1024;

/// Error type of proxied bodies.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Which parser looks at the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapKind {
    /// A Responses-API SSE stream; usage is in the terminal event.
    ResponsesSse,
    /// A single JSON document with a top-level `usage`.
    Json,
}

/// The upstream fell silent for longer than its timeout.
#[derive(Debug, thiserror::Error)]
#[error("upstream sent nothing for {0:?}")]
pub(super) struct IdleTimeout(Duration);

#[derive(Debug)]
enum Tap {
    Sse {
        parser: SseParser,
        terminal: Option<(Outcome, Option<TokenUsage>)>,
        content_chunks: u64,
        responses: bool,
    },
    Json {
        buf: Vec<u8>,
        overflowed: bool,
    },
}

impl Tap {
    fn new(kind: TapKind) -> Self {
        match kind {
            TapKind::ResponsesSse => Self::Sse {
                parser: SseParser::new(),
                terminal: None,
                content_chunks: 0,
                responses: true,
            },
            TapKind::Json => Self::Json {
                buf: Vec::new(),
                overflowed: false,
            },
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        match self {
            Self::Sse {
                parser,
                terminal,
                content_chunks,
                ..
            } => parser.feed(chunk, |event| {
                let fallback;
                let name: &[u8] = if event.event.is_empty() {
                    fallback = event_type(event.data).unwrap_or_default();
                    fallback.as_bytes()
                } else {
                    event.event
                };
                let outcome = match name {
                    b"response.completed" => Outcome::Completed,
                    b"response.incomplete" => Outcome::Incomplete,
                    b"response.failed" => Outcome::Failed,
                    n if n.ends_with(b".delta") => {
                        *content_chunks += 1;
                        return;
                    }
                    _ => return,
                };
                *terminal = Some((outcome, from_response_event(event.data)));
            }),
            Self::Json { buf, overflowed } => {
                if buf.len() + chunk.len() > MAX_JSON_TAP_BYTES {
                    *overflowed = true;
                    buf.clear();
                } else if !*overflowed {
                    buf.extend_from_slice(chunk);
                }
            }
        }
    }

    fn is_responses(&self) -> bool {
        matches!(
            self,
            Self::Sse {
                responses: true,
                ..
            }
        )
    }

    /// The event that ends a failed SSE stream, if this is one.
    fn error_event(&self, message: &str) -> Option<Bytes> {
        let Self::Sse {
            parser, responses, ..
        } = self
        else {
            return None;
        };
        // Close any event the upstream left half-sent, so ours parses on its own.
        let separator = if parser.at_boundary() { "" } else { "\n\n" };
        let error = serde_json::json!({"code": "upstream_error", "message": message});
        let text = if *responses {
            let data = serde_json::json!({
                "type": "response.failed",
                "response": {"status": "failed", "error": error},
            });
            format!("{separator}event: response.failed\ndata: {data}\n\n")
        } else {
            let data = serde_json::json!({"error": {"message": message, "type": "server_error", "code": "upstream_error"}});
            format!("{separator}data: {data}\n\n")
        };
        Some(Bytes::from(text))
    }

    /// The result when the body ended (`ended`) or was dropped before its end.
    fn result(&self, ended: bool) -> (Outcome, Option<TokenUsage>, u64) {
        match self {
            Self::Sse {
                terminal: Some((outcome, usage)),
                content_chunks,
                ..
            } => (*outcome, *usage, *content_chunks),
            Self::Sse {
                terminal: None,
                content_chunks,
                ..
            } => {
                // A stream that stops without a terminal event was cut by the upstream; one
                // that is dropped early was abandoned by the client.
                let outcome = if ended {
                    Outcome::UpstreamError
                } else {
                    Outcome::ClientCancelled
                };
                (outcome, None, *content_chunks)
            }
            Self::Json { buf, .. } => {
                let (usage, status) = from_json_body(buf);
                let outcome = match (status.as_deref(), ended || usage.is_some()) {
                    (_, false) => Outcome::ClientCancelled,
                    (Some("incomplete"), true) => Outcome::Incomplete,
                    (Some("failed"), true) => Outcome::Failed,
                    (_, true) => Outcome::Completed,
                };
                (outcome, usage, u64::from(!buf.is_empty()))
            }
        }
    }
}

/// Something kept alive for as long as the body (an in-flight count, a concurrency slot).
pub type Held = Box<dyn Any + Send>;

/// An upstream body on its way to the client, metered.
pub struct MeteredBody {
    inner: Incoming,
    /// Frames read ahead of the response head (see the proxy's prefetch), sent first.
    prefix: VecDeque<Bytes>,
    tap: Tap,
    meter: Option<Meter>,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    /// The terminal error event has been sent; the body is over.
    done: bool,
    _held: Vec<Held>,
}

impl std::fmt::Debug for MeteredBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredBody")
            .field("tap", &self.tap)
            .field("metered", &self.meter.is_none())
            .finish_non_exhaustive()
    }
}

impl MeteredBody {
    /// Wraps `inner`, to be sent after `prefix`; `idle_timeout` bounds every silence between
    /// frames; `held` is released when the body is dropped.
    pub fn new(
        inner: Incoming,
        prefix: Vec<Bytes>,
        kind: TapKind,
        meter: Meter,
        idle_timeout: Duration,
        held: Vec<Held>,
    ) -> Self {
        Self {
            inner,
            prefix: prefix.into(),
            tap: Tap::new(kind),
            meter: Some(meter),
            idle_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            done: false,
            _held: held,
        }
    }

    fn finish(&mut self, ended: bool, forced: Option<Outcome>) {
        if let Some(meter) = self.meter.take() {
            let (outcome, usage, chunks) = self.tap.result(ended);
            meter.finish(forced.unwrap_or(outcome), usage, chunks);
        }
    }

    fn saw(&mut self, data: &Bytes) {
        if let Some(meter) = self.meter.as_mut()
            && meter.first_byte.is_none()
        {
            meter.first_byte = Some(Instant::now());
        }
        self.tap.feed(data);
    }

    /// Ends a failed stream: SSE clients get a terminal error event (after the bytes already
    /// sent, never a splice of another upstream's answer); a JSON body can only be cut.
    fn fail(
        &mut self,
        reason: &str,
        err: BodyError,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        // A terminal event already seen still decides the outcome: the usage is real.
        let forced = match &self.tap {
            Tap::Sse {
                terminal: Some(_), ..
            } => None,
            _ => Some(Outcome::UpstreamError),
        };
        self.finish(true, forced);
        match self.tap.error_event(reason) {
            Some(event) => {
                self.done = true;
                Poll::Ready(Some(Ok(Frame::data(event))))
            }
            None => Poll::Ready(Some(Err(err))),
        }
    }
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(data) = this.prefix.pop_front() {
            this.saw(&data);
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let data = data.clone();
                    this.saw(&data);
                }
                let deadline = tokio::time::Instant::now() + this.idle_timeout;
                this.idle.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                this.fail("the upstream stream was interrupted", err.into())
            }
            Poll::Ready(None) => {
                // A Responses stream that stops without its terminal event was cut.
                if matches!(this.tap, Tap::Sse { terminal: None, .. }) && this.tap.is_responses() {
                    return this.fail(
                        "the upstream stream ended before the response completed",
                        "stream ended early".into(),
                    );
                }
                this.finish(true, None);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.idle.as_mut().poll(cx).is_ready() {
                    let timeout = this.idle_timeout;
                    return this.fail(
                        "the upstream stopped sending",
                        Box::new(IdleTimeout(timeout)),
                    );
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // Until the end has been observed (and metered), there is more to poll.
        self.done || (self.meter.is_none() && self.prefix.is_empty() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        let prefix: u64 = self.prefix.iter().map(|b| b.len() as u64).sum();
        if prefix > 0 {
            hint.set_lower(hint.lower() + prefix);
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper + prefix);
            }
        }
        hint
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        self.finish(false, None);
    }
}
