//! Delivery of usage events: a bounded in-memory queue drained by one task that writes
//! batches to the Redis stream with pipelined `XADD` — or, without Redis (standalone), to the
//! control plane's `ReportUsage` RPC. A failed batch is kept and retried with backoff;
//! shutdown closes the queue and flushes what is in it.

use std::{sync::Arc, time::Duration};

use gateway_proto::{
    USAGE_EVENT_FIELD,
    auth::Secret,
    v1::{ReportUsageRequest, UsageEvent, config_discovery_client::ConfigDiscoveryClient},
};
use prost::Message;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, error, warn};

use crate::metrics::Metrics;

const QUEUE_CAPACITY: usize = 65_536;
const BATCH: usize = 256;
/// How long the first event of a batch waits for company: under load this turns one write
/// to Redis per event into one per batch; idle, it delays an event by at most this much.
const LINGER: Duration = Duration::from_millis(2);
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// After shutdown, how long a failing Redis may hold up exit before unsent events are logged.
const SHUTDOWN_RETRY_BUDGET: Duration = Duration::from_secs(10);

/// Where events go.
#[derive(Debug, Clone)]
pub enum PublisherSettings {
    /// `XADD` to a Redis stream, read by the control plane's consumer group.
    Redis { url: String, stream: String },
    /// The control plane's `ReportUsage` RPC, with the data-plane token.
    ControlPlane { url: String, token: Secret },
}

/// A live connection to wherever events go.
enum Sink {
    Redis(ConnectionManager),
    ControlPlane(ConfigDiscoveryClient<Channel>),
}

/// Why a batch was not delivered.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("control plane: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("control plane: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("DATA_PLANE_TOKEN cannot be sent as gRPC metadata")]
    Token,
}

/// Handle the request path uses to hand over events; never blocks.
#[derive(Debug, Clone)]
pub struct UsagePublisher {
    tx: mpsc::Sender<UsageEvent>,
    metrics: Arc<Metrics>,
}

impl UsagePublisher {
    /// The metrics events are counted in.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Queues an event for delivery.
    pub fn publish(&self, event: UsageEvent) {
        let sent = self.tx.try_send(event);
        self.metrics
            .usage_queue_depth
            .set((self.tx.max_capacity() - self.tx.capacity()) as i64);
        if let Err(err) = sent {
            self.metrics.usage_unqueued.inc();
            let (reason, event) = match err {
                mpsc::error::TrySendError::Full(e) => ("usage queue full", e),
                mpsc::error::TrySendError::Closed(e) => ("usage queue closed", e),
            };
            // Never silent: the event is logged whole so it can be replayed from logs.
            error!(
                target: "ProxyHandler",
                reason,
                event_id = %event.id,
                request_id = %event.request_id,
                user_id = event.user_id,
                cost_micros = event.cost_micros,
                "usage event not queued"
            );
        }
    }
}

/// Starts the publisher task; it runs until `shutdown` fires and the queue is flushed.
pub fn spawn_publisher(
    settings: PublisherSettings,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) -> (UsagePublisher, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let task = tokio::spawn(run(settings, rx, shutdown, metrics.clone()));
    (UsagePublisher { tx, metrics }, task)
}

async fn run(
    settings: PublisherSettings,
    mut rx: mpsc::Receiver<UsageEvent>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) {
    let mut conn: Option<Sink> = None;
    let mut batch: Vec<UsageEvent> = Vec::with_capacity(BATCH);
    let mut closing_since: Option<tokio::time::Instant> = None;
    loop {
        if batch.is_empty() {
            let first = tokio::select! {
                event = rx.recv() => event,
                () = shutdown.cancelled(), if closing_since.is_none() => {
                    // Stop accepting, then drain what is already queued.
                    rx.close();
                    closing_since = Some(tokio::time::Instant::now());
                    continue;
                }
            };
            match first {
                Some(e) => batch.push(e),
                None => return,
            }
            if closing_since.is_none() && batch.len() < BATCH && rx.is_empty() {
                tokio::select! {
                    () = tokio::time::sleep(LINGER) => {}
                    () = shutdown.cancelled() => {}
                }
            }
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
        }
        let mut backoff = RETRY_MIN;
        loop {
            match send(&settings, &mut conn, &batch).await {
                Ok(()) => {
                    debug!(target: "ProxyHandler", events = batch.len(), "usage batch published");
                    metrics.usage_published.inc_by(batch.len() as u64);
                    metrics.usage_queue_depth.set(rx.len() as i64);
                    batch.clear();
                    break;
                }
                Err(err) => {
                    metrics.usage_publish_errors.inc();
                    conn = None;
                    if closing_since.is_some_and(|t| t.elapsed() > SHUTDOWN_RETRY_BUDGET) {
                        for e in batch.drain(..) {
                            error!(target: "ProxyHandler", event_id = %e.id, request_id = %e.request_id, user_id = e.user_id, cost_micros = e.cost_micros, "usage event unpublished at shutdown");
                        }
                        break;
                    }
                    warn!(target: "ProxyHandler", error = %err, events = batch.len(), "publishing usage failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.cancelled(), if closing_since.is_none() => {
                            rx.close();
                            closing_since = Some(tokio::time::Instant::now());
                        }
                    }
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
            }
        }
    }
}

async fn connect(settings: &PublisherSettings) -> Result<Sink, SendError> {
    match settings {
        PublisherSettings::Redis { url, .. } => {
            let client = redis::Client::open(url.as_str())?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(2)))
                .set_number_of_retries(1);
            Ok(Sink::Redis(
                client.get_connection_manager_with_config(config).await?,
            ))
        }
        PublisherSettings::ControlPlane { url, .. } => {
            let channel = Endpoint::from_shared(url.clone())?
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(10))
                .connect()
                .await?;
            Ok(Sink::ControlPlane(ConfigDiscoveryClient::new(channel)))
        }
    }
}

async fn send(
    settings: &PublisherSettings,
    conn: &mut Option<Sink>,
    batch: &[UsageEvent],
) -> Result<(), SendError> {
    let sink = match conn {
        Some(sink) => sink,
        None => conn.insert(connect(settings).await?),
    };
    match (sink, settings) {
        (Sink::Redis(c), PublisherSettings::Redis { stream, .. }) => {
            let mut pipe = redis::pipe();
            for event in batch {
                pipe.cmd("XADD")
                    .arg(stream)
                    .arg("*")
                    .arg(USAGE_EVENT_FIELD)
                    .arg(event.encode_to_vec())
                    .ignore();
            }
            Ok(pipe.query_async::<()>(c).await?)
        }
        (Sink::ControlPlane(client), PublisherSettings::ControlPlane { token, .. }) => {
            let mut request = tonic::Request::new(ReportUsageRequest {
                events: batch.to_vec(),
            });
            request.metadata_mut().insert(
                "authorization",
                token.bearer().map_err(|_| SendError::Token)?,
            );
            client.report_usage(request).await?;
            Ok(())
        }
        // A sink always matches the settings it was made from.
        _ => Err(SendError::Token),
    }
}
