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
use gateway_proto::ids::UpstreamId;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

pub use super::reader::TapKind;
use super::{
    Meter, Outcome,
    drain::Drain,
    reader::{Tap, UsageChunkFilter},
};
use crate::upstream::UpstreamBody;

/// Error type of proxied bodies.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The upstream fell silent for longer than its timeout.
#[derive(Debug, thiserror::Error)]
#[error("upstream sent nothing for {0:?}")]
pub(super) struct IdleTimeout(Duration);

/// Something kept alive for as long as the body (an in-flight count, a concurrency slot).
pub type Held = Box<dyn Any + Send>;

/// An upstream body on its way to the client, metered.
pub struct MeteredBody {
    /// The upstream body; taken by the drain task when the client leaves early.
    inner: Option<UpstreamBody>,
    /// Frames read ahead of the response head (see the proxy's prefetch), sent first.
    prefix: VecDeque<Bytes>,
    tap: Tap,
    meter: Option<Meter>,
    /// The upstream answering; billed with the event.
    upstream_id: UpstreamId,
    idle_timeout: Duration,
    /// Fires at the earliest moment the upstream could have been silent for `idle_timeout`;
    /// moved only when it fires (to `last_frame + idle_timeout`), not on every frame.
    idle: Pin<Box<Sleep>>,
    last_frame: tokio::time::Instant,
    /// The terminal error event has been sent; the body is over.
    done: bool,
    /// Removes the usage-only chunk the gateway asked for on the client's behalf.
    strip: Option<UsageChunkFilter>,
    /// What the upstream said right after the frames merged into the last one sent.
    stash: Option<Stashed>,
    _held: Vec<Held>,
}

/// An upstream outcome seen while merging frames, handled on the next poll.
enum Stashed {
    End,
    Error(hyper::Error),
    Trailers(Frame<Bytes>),
}

/// Most bytes merged into one frame.
const MAX_COALESCED: usize = 64 * 1024;

impl std::fmt::Debug for MeteredBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredBody")
            .field("tap", &self.tap)
            .field("metered", &self.meter.is_none())
            .finish_non_exhaustive()
    }
}

impl MeteredBody {
    /// Wraps `inner` from upstream `upstream_id`, to be sent after `prefix`; `idle_timeout`
    /// bounds every silence between frames; `held` is released when the body is dropped.
    pub fn new(
        inner: UpstreamBody,
        prefix: Vec<Bytes>,
        kind: TapKind,
        meter: Meter,
        upstream_id: UpstreamId,
        idle_timeout: Duration,
        held: Vec<Held>,
    ) -> Self {
        // The prefix went out in one burst anyway: one write for all of it.
        let prefix: VecDeque<Bytes> = if prefix.len() > 1 {
            VecDeque::from([Bytes::from(prefix.concat())])
        } else {
            prefix.into()
        };
        Self {
            inner: Some(inner),
            prefix,
            tap: Tap::new(kind),
            meter: Some(meter),
            upstream_id,
            idle_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            last_frame: tokio::time::Instant::now(),
            done: false,
            strip: matches!(
                kind,
                TapKind::ChatSse {
                    strip_usage_chunk: true
                }
            )
            .then(UsageChunkFilter::default),
            stash: None,
            _held: held,
        }
    }

    fn finish(&mut self, ended: bool, forced: Option<Outcome>) {
        if let Some(meter) = self.meter.take() {
            let (outcome, usage, chunks) = self.tap.result(ended);
            meter.finish(
                Some(self.upstream_id),
                forced.unwrap_or(outcome),
                usage,
                chunks,
            );
        }
    }

    /// Merges frames that are already available after `first` into one write. Never waits:
    /// what is not there yet is not held back. (The upstream body drives its connection as it
    /// is polled, so every event already received is available here.)
    fn coalesce(&mut self, first: Bytes, cx: &mut Context<'_>) -> Bytes {
        let mut merged: Option<Vec<u8>> = None;
        loop {
            let len = merged.as_ref().map_or(first.len(), Vec::len);
            if len >= MAX_COALESCED {
                break;
            }
            let Some(inner) = self.inner.as_mut() else {
                break;
            };
            match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(more) => merged
                        .get_or_insert_with(|| first.to_vec())
                        .extend_from_slice(&more),
                    Err(trailers) => {
                        self.stash = Some(Stashed::Trailers(trailers));
                        break;
                    }
                },
                Poll::Ready(Some(Err(err))) => {
                    self.stash = Some(Stashed::Error(err));
                    break;
                }
                Poll::Ready(None) => {
                    self.stash = Some(Stashed::End);
                    break;
                }
                Poll::Pending => break,
            }
        }
        merged.map_or(first, Bytes::from)
    }

    /// Handles what the upstream said after the bytes already sent.
    fn resume(&mut self, stash: Stashed) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match stash {
            Stashed::End => self.end(),
            Stashed::Error(err) => self.fail("the upstream stream was interrupted", err.into()),
            Stashed::Trailers(frame) => Poll::Ready(Some(Ok(frame))),
        }
    }

    /// The upstream body ended.
    fn end(&mut self) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        // A Responses stream that stops without its terminal event was cut.
        if matches!(self.tap, Tap::Sse { terminal: None, .. }) && self.tap.is_responses() {
            return self.fail(
                "the upstream stream ended before the response completed",
                "stream ended early".into(),
            );
        }
        self.finish(true, None);
        // Whatever the filter still holds was never a complete event: pass it on.
        match self.strip.as_mut().map(UsageChunkFilter::rest) {
            Some(rest) if !rest.is_empty() => {
                self.done = true;
                Poll::Ready(Some(Ok(Frame::data(rest))))
            }
            _ => Poll::Ready(None),
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
        if let Some(stash) = this.stash.take() {
            return this.resume(stash);
        }
        loop {
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(None);
            };
            return match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.last_frame = tokio::time::Instant::now();
                    let data = match frame.into_data() {
                        Ok(data) => this.coalesce(data, cx),
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    };
                    this.saw(&data);
                    let out = match this.strip.as_mut() {
                        None => data,
                        Some(filter) => filter.pass(&data),
                    };
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                    // Everything was filtered out: what the upstream said next, or more data.
                    match this.stash.take() {
                        Some(stash) => this.resume(stash),
                        None => continue,
                    }
                }
                Poll::Ready(Some(Err(err))) => {
                    this.fail("the upstream stream was interrupted", err.into())
                }
                Poll::Ready(None) => this.end(),
                Poll::Pending => {
                    while this.idle.as_mut().poll(cx).is_ready() {
                        let deadline = this.last_frame + this.idle_timeout;
                        if deadline <= tokio::time::Instant::now() {
                            let timeout = this.idle_timeout;
                            return this.fail(
                                "the upstream stopped sending",
                                Box::new(IdleTimeout(timeout)),
                            );
                        }
                        // A frame came since it was set: wait out the rest of the silence.
                        this.idle.as_mut().reset(deadline);
                    }
                    Poll::Pending
                }
            };
        }
    }

    fn is_end_stream(&self) -> bool {
        // Until the end has been observed (and metered), there is more to poll.
        self.done
            || (self.meter.is_none()
                && self.prefix.is_empty()
                && self.stash.is_none()
                && self.inner.as_ref().is_none_or(UpstreamBody::is_end_stream))
    }

    fn size_hint(&self) -> SizeHint {
        if matches!(self.tap, Tap::Sse { .. }) {
            return SizeHint::default();
        }
        let mut hint = self
            .inner
            .as_ref()
            .map(UpstreamBody::size_hint)
            .unwrap_or_default();
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
        let Some(meter) = self.meter.take() else {
            return;
        };
        let upstream = Some(self.upstream_id);
        let upstream_done =
            self.inner.as_ref().is_none_or(UpstreamBody::is_end_stream) && self.prefix.is_empty();
        if upstream_done || self.tap.has_terminal() {
            // Everything was read (hyper drops a length-delimited body after its last byte
            // without polling for the end), or the client closed after the terminal event, as
            // Codex does: a success.
            let (outcome, usage, chunks) = self.tap.result(true);
            meter.finish(upstream, outcome, usage, chunks);
            return;
        }
        // The client left before the end. The upstream keeps working (and billing) for a
        // while: read on, bounded, for the real usage instead of an estimate.
        let Some(inner) = self.inner.take() else {
            let (_, usage, chunks) = self.tap.result(false);
            meter.finish(upstream, Outcome::ClientCancelled, usage, chunks);
            return;
        };
        let drain = Drain {
            inner,
            tap: std::mem::replace(&mut self.tap, Tap::new(TapKind::Json)),
            meter,
            upstream_id: self.upstream_id,
            idle: self.idle_timeout,
            held: std::mem::take(&mut self._held),
        };
        drain.spawn();
    }
}
