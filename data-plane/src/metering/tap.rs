//! The metering tap: a body wrapper that forwards every upstream frame to the client as it
//! arrives, lets a parser look at a copy-free view of the bytes for usage, enforces the idle
//! timeout between chunks, and publishes the usage event exactly once — when the stream ends,
//! fails, or is dropped because the client went away.

use std::{
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

/// An upstream body on its way to the client, metered.
#[derive(Debug)]
pub struct MeteredBody {
    inner: Incoming,
    tap: Tap,
    meter: Option<Meter>,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
}

impl MeteredBody {
    /// Wraps `inner`; `idle_timeout` bounds every silence between frames.
    pub fn new(inner: Incoming, kind: TapKind, meter: Meter, idle_timeout: Duration) -> Self {
        Self {
            inner,
            tap: Tap::new(kind),
            meter: Some(meter),
            idle_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
        }
    }

    fn finish(&mut self, ended: bool, forced: Option<Outcome>) {
        if let Some(meter) = self.meter.take() {
            let (outcome, usage, chunks) = self.tap.result(ended);
            meter.finish(forced.unwrap_or(outcome), usage, chunks);
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
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Some(meter) = this.meter.as_mut()
                        && meter.first_byte.is_none()
                    {
                        meter.first_byte = Some(Instant::now());
                    }
                    this.tap.feed(data);
                }
                let deadline = tokio::time::Instant::now() + this.idle_timeout;
                this.idle.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                // A terminal event already seen still decides the outcome: the usage is real.
                let forced = match &this.tap {
                    Tap::Sse {
                        terminal: Some(_), ..
                    } => None,
                    _ => Some(Outcome::UpstreamError),
                };
                this.finish(true, forced);
                Poll::Ready(Some(Err(err.into())))
            }
            Poll::Ready(None) => {
                this.finish(true, None);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.idle.as_mut().poll(cx).is_ready() {
                    this.finish(true, Some(Outcome::UpstreamError));
                    return Poll::Ready(Some(Err(Box::new(IdleTimeout(this.idle_timeout)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // Until the end has been observed (and metered), there is more to poll.
        self.meter.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        self.finish(false, None);
    }
}
