//! Metering: read usage from what the upstream sends, price it, and publish exactly one usage
//! event per proxied request, whatever way the request ends.

mod drain;
pub(crate) mod extract;
mod price;
mod publish;
mod reader;
pub mod spool;
mod tap;
mod unsettled;

pub use drain::Drains;
pub use extract::TokenUsage;
pub use price::{Price, cost};
pub use publish::{PublisherSettings, UsagePublisher, spawn_publisher};
pub use tap::{BodyError, Held, MeteredBody, TapKind};
pub use unsettled::{SETTLE_MARGIN_MS, Unsettled};

use std::{sync::Arc, time::Instant};

use gateway_proto::{
    ids::{KeyId, UpstreamId, UserId},
    money::Micros,
    names::Named,
    v1::UsageEvent,
};

use crate::metrics::{EndpointLabels, StatusLabels, TokenLabels};

/// Output tokens assumed per content chunk when the upstream reports no usage.
const ESTIMATED_TOKENS_PER_CHUNK: u64 = 25;
/// Request bytes assumed per input token when estimating.
const ESTIMATED_BYTES_PER_TOKEN: u64 = 4;

/// How a metered request ended: the wire's status, named for the ledger, logs and metrics
/// by [`Named::name`](gateway_proto::names::Named::name). (`Unspecified` is never produced.)
pub use gateway_proto::v1::UsageStatus as Outcome;

/// Everything known about a request once it is admitted and read; consumed by
/// [`Meter::finish`], with the upstream that answered (if any), so an event is published at
/// most once.
#[derive(Debug)]
pub struct Meter {
    pub publisher: UsagePublisher,
    pub request_id: String,
    pub key_id: KeyId,
    /// Whether the key has spending caps (its spend is then counted per key too).
    pub key_capped: bool,
    pub user_id: UserId,
    pub model: String,
    /// The model's metrics label (bounded: see [`crate::snapshot::ModelPricing`]).
    pub model_label: Arc<str>,
    pub endpoint: &'static str,
    pub stream: bool,
    pub price: Option<Price>,
    pub multiplier_ppm: u64,
    pub request_bytes: usize,
    pub node_id: Arc<str>,
    pub started: Instant,
    pub started_at_ms: i64,
    pub first_byte: Option<Instant>,
    /// This proxy's spend not yet in the snapshot balances, and the snapshot's floor for it.
    pub unsettled: Arc<Unsettled>,
    pub settle_floor_ms: i64,
}

impl Meter {
    /// Prices the usage (estimating when the upstream reported none) and publishes the event.
    /// `upstream` is the upstream that answered, or the last one tried; `None` when none was.
    pub fn finish(
        self,
        upstream: Option<UpstreamId>,
        outcome: Outcome,
        reported: Option<TokenUsage>,
        content_chunks: u64,
    ) {
        let (usage, estimated) = match reported {
            Some(usage) => (usage.normalized(), false),
            None if content_chunks == 0 => (TokenUsage::default(), false),
            None => (
                TokenUsage {
                    input: self.request_bytes as u64 / ESTIMATED_BYTES_PER_TOKEN,
                    cached: 0,
                    output: content_chunks * ESTIMATED_TOKENS_PER_CHUNK,
                    reasoning: 0,
                },
                true,
            ),
        };
        let cost = self
            .price
            .map_or(Micros::ZERO, |p| cost(&usage, &p, self.multiplier_ppm));
        self.record_metrics(outcome, &usage);
        let duration = self.started.elapsed();
        self.unsettled.record(
            self.user_id,
            self.key_capped.then_some(self.key_id),
            self.started_at_ms
                .saturating_add(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)),
            cost,
            self.settle_floor_ms,
        );
        let ttfb_ms = self
            .first_byte
            .map_or(0, |t| t.duration_since(self.started).as_millis());
        let event = UsageEvent {
            id: uuid::Uuid::now_v7().to_string(),
            request_id: self.request_id,
            key_id: self.key_id.get(),
            user_id: self.user_id.get(),
            upstream_id: upstream.map(UpstreamId::get),
            model: self.model,
            endpoint: self.endpoint.to_owned(),
            input_tokens: usage.input,
            cached_tokens: usage.cached,
            output_tokens: usage.output,
            reasoning_tokens: usage.reasoning,
            cost_micros: cost.get(),
            status: outcome as i32,
            stream: self.stream,
            estimated,
            ttfb_ms: u32::try_from(ttfb_ms).unwrap_or(u32::MAX),
            duration_ms: u32::try_from(duration.as_millis()).unwrap_or(u32::MAX),
            node_id: self.node_id.to_string(),
            started_at_ms: self.started_at_ms,
        };
        self.publisher.publish(event);
    }
}

impl Meter {
    fn record_metrics(&self, outcome: Outcome, usage: &TokenUsage) {
        let m = self.publisher.metrics();
        let endpoint = EndpointLabels {
            endpoint: self.endpoint,
        };
        m.request_duration
            .get_or_create(&endpoint)
            .observe(self.started.elapsed().as_secs_f64());
        if let Some(first) = self.first_byte {
            m.ttfb
                .get_or_create(&endpoint)
                .observe(first.duration_since(self.started).as_secs_f64());
        }
        m.usage_events
            .get_or_create(&StatusLabels {
                status: outcome.name(),
            })
            .inc();
        for (token_type, n) in [
            ("input", usage.input - usage.cached.min(usage.input)),
            ("cached_input", usage.cached),
            ("output", usage.output),
            ("reasoning", usage.reasoning),
        ] {
            if n > 0 {
                m.tokens
                    .get_or_create(&TokenLabels {
                        token_type,
                        model: self.model_label.clone(),
                    })
                    .inc_by(n);
            }
        }
    }
}

/// Holds a request's meter until it is handed to the response body; if the request is
/// dropped first (the client went away during retries), it bills the cancellation once.
#[derive(Debug)]
pub struct MeterGuard(Option<Meter>);

impl MeterGuard {
    /// Guards `meter`.
    pub fn new(meter: Meter) -> Self {
        Self(Some(meter))
    }

    /// The requested model.
    pub fn model(&self) -> &str {
        self.0.as_ref().map_or("", |m| m.model.as_str())
    }

    /// Hands the meter on; the guard no longer bills.
    pub fn into_inner(mut self) -> Option<Meter> {
        self.0.take()
    }

    /// Bills now a request that produced nothing, with the last upstream tried.
    pub fn finish_unproduced(mut self, upstream: Option<UpstreamId>, outcome: Outcome) {
        if let Some(meter) = self.0.take() {
            meter.finish(upstream, outcome, None, 0);
        }
    }
}

impl Drop for MeterGuard {
    fn drop(&mut self) {
        if let Some(meter) = self.0.take() {
            meter.finish(None, Outcome::ClientCancelled, None, 0);
        }
    }
}
