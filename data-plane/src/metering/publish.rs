//! Delivery of usage events: a bounded in-memory queue drained by one task that writes
//! batches to the Redis stream with pipelined `XADD` — or, without Redis (standalone), to the
//! control plane's `ReportUsage` RPC. When the sink fails, batches go to the spool (a local,
//! fsynced file) and are replayed in order, with their ids, once it answers; without a spool
//! they are retried from memory. Shutdown closes the queue and flushes what is in it.

use std::{
    io,
    pin::pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use gateway_proto::{
    USAGE_EVENT_FIELD,
    v1::{ReportUsageRequest, UsageEvent, usage_service_client::UsageServiceClient},
};
use prost::Message;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::{drain::Drains, spool::Spool};
use crate::{ControlPlane, metrics::Metrics};

const QUEUE_CAPACITY: usize = 65_536;
/// Most events in one pipeline while the queue keeps up. A batch is written, and its replies
/// read, in one go on the thread that serves requests, so its size is how long every request
/// in flight waits: in three pairs of bench runs at 256 (~64 KB of `XADD`s) the gateway's
/// JSON p99 was 2.3–3.1× its median against the bare HTTP stack's 1.9–2.4×; at 64, 1.5–2.2×
/// against 1.5–2.2×.
const BATCH: usize = 64;
/// Most events in one pipeline once [`BATCH`] or more are waiting: one pipeline is in flight
/// at a time, so small ones cap delivery at `BATCH` a round trip (with only those, the bench's
/// queue grew by ~10,000 events a second at 64 connections), and a backlog goes in larger
/// ones. A spool replay, a backlog by nature, always does.
const BACKLOG_BATCH: usize = 256;
/// How long the first event of a batch waits at most for company; it stops waiting once
/// [`BATCH`] events are there. It wakes when events come, never on a clock of its own: in the
/// paced case a look every millisecond cost each stream more than the pipelines it saved.
/// Streams end a few hundred times a second on a busy node, not thousands, and a pipeline
/// costs tens of microseconds however few events it carries: at 20 ms, in the bench's paced
/// case, an event shared its pipeline with one or two others and cost its stream 16 µs.
/// Under load a batch fills within a few milliseconds and goes then.
const LINGER: Duration = Duration::from_millis(100);
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Bound on one `ReportUsage` call.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// After shutdown, how long a failing Redis may hold up exit before unsent events are logged.
const SHUTDOWN_RETRY_BUDGET: Duration = Duration::from_secs(10);

/// Where events go.
#[derive(Debug, Clone)]
pub enum PublisherSettings {
    /// `XADD` to a Redis stream, read by the control plane's consumer group.
    Redis { url: String, stream: String },
    /// The control plane's `ReportUsage` RPC, on the data plane's one channel to it.
    ControlPlane { channel: ControlPlane },
}

/// A live connection to wherever events go.
enum Sink {
    Redis(ConnectionManager),
    ControlPlane(Box<UsageServiceClient<ControlPlane>>),
}

/// Why a batch was not delivered.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("control plane: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("the usage sink does not match its settings")]
    Mismatch,
}

/// Handle the request path uses to hand over events; never blocks.
#[derive(Debug, Clone)]
pub struct UsagePublisher {
    tx: mpsc::Sender<UsageEvent>,
    metrics: Arc<Metrics>,
    drains: Drains,
}

impl UsagePublisher {
    /// The after-disconnect drains whose events are still to come.
    pub fn drains(&self) -> &Drains {
        &self.drains
    }

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
///
/// `last_resort` is where a spool that the sink still refuses at shutdown is delivered
/// instead (the control plane's `ReportUsage` when the sink is Redis): a data plane's disk
/// may not outlive it (a Kubernetes emptyDir does not).
pub fn spawn_publisher(
    settings: PublisherSettings,
    last_resort: Option<PublisherSettings>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    spool: Option<Spool>,
) -> (UsagePublisher, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let task_metrics = metrics.clone();
    let task = tokio::spawn(async move {
        let spool = spool.map(|s| Arc::new(Mutex::new(s)));
        run(settings, rx, shutdown, task_metrics.clone(), spool.clone()).await;
        if let Some(spool) = spool {
            settle_spool_at_exit(last_resort, &spool, &task_metrics).await;
        }
    });
    let drains = Drains::default();
    (
        UsagePublisher {
            tx,
            metrics,
            drains,
        },
        task,
    )
}

/// The sink refused the spool until the end: hand it to the last resort, or say loudly what
/// is left where.
async fn settle_spool_at_exit(
    last_resort: Option<PublisherSettings>,
    spool: &SharedSpool,
    metrics: &Metrics,
) {
    if lock(spool).depth() == 0 {
        return;
    }
    if let Some(settings) = last_resort {
        match replay(&settings, &mut None, spool, metrics).await {
            Ok(()) if lock(spool).depth() == 0 => {
                info!(target: "ProxyHandler", "usage spool delivered to the control plane at shutdown");
                return;
            }
            Ok(()) => {}
            Err(err) => {
                warn!(target: "ProxyHandler", error = %err, "the control plane did not take the usage spool either");
            }
        }
    }
    let left = lock(spool).depth();
    error!(target: "ProxyHandler", events = left, "usage events remain in the spool at exit; they are replayed when a data plane starts on this SPOOL_PATH — keep the file if its volume is not reused");
}

async fn run(
    settings: PublisherSettings,
    mut rx: mpsc::Receiver<UsageEvent>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    spool: Option<SharedSpool>,
) {
    let mut conn: Option<Sink> = None;
    let mut closing_since: Option<tokio::time::Instant> = None;
    let mut backoff = RETRY_MIN;
    let depth = spool.as_ref().map_or(0, |s| lock(s).depth());
    metrics.usage_spool_depth.set(depth as i64);
    if depth > 0 {
        warn!(target: "ProxyHandler", events = depth, "usage spool holds events from before; replaying");
    }
    loop {
        // Spooled events go first, so the sink sees events in the order they were produced.
        if let Some(s) = spool.as_ref().filter(|s| lock(s).depth() > 0) {
            match replay(&settings, &mut conn, s, &metrics).await {
                Ok(()) => backoff = RETRY_MIN,
                Err(err) => {
                    conn = None;
                    debug!(target: "ProxyHandler", error = %err, "usage sink still unavailable; spool kept");
                }
            }
        }
        let spooling = spool.as_ref().is_some_and(|s| lock(s).depth() > 0);
        let first = tokio::select! {
            event = rx.recv() => event,
            () = shutdown.cancelled(), if closing_since.is_none() => {
                // Stop accepting, then drain what is already queued.
                rx.close();
                closing_since = Some(tokio::time::Instant::now());
                continue;
            }
            () = tokio::time::sleep(backoff), if spooling => {
                backoff = (backoff * 2).min(RETRY_MAX);
                continue;
            }
        };
        let Some(first) = first else {
            return;
        };
        let mut batch = vec![first];
        if closing_since.is_none() {
            linger(&mut rx, &mut batch, &shutdown).await;
        }
        let most = batch_limit(rx.len());
        while batch.len() < most {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        metrics.usage_queue_depth.set(rx.len() as i64);
        if let Some(s) = spool.as_ref().filter(|_| spooling) {
            spool_batch(s, batch, &metrics).await;
            continue;
        }
        match send(&settings, &mut conn, &batch).await {
            Ok(()) => {
                debug!(target: "ProxyHandler", events = batch.len(), "usage batch published");
                metrics.usage_published.inc_by(batch.len() as u64);
            }
            Err(err) => {
                metrics.usage_publish_errors.inc();
                conn = None;
                warn!(target: "ProxyHandler", error = %err, events = batch.len(), "publishing usage failed");
                if let Some(s) = &spool {
                    spool_batch(s, batch, &metrics).await;
                } else {
                    retry_in_memory(
                        &settings,
                        &mut conn,
                        batch,
                        &shutdown,
                        &mut closing_since,
                        &mut rx,
                        &metrics,
                    )
                    .await;
                }
            }
        }
    }
}

/// Takes events into `batch` as they come until it holds [`BATCH`], [`LINGER`] has passed,
/// the queue closes or shutdown begins.
async fn linger(
    rx: &mut mpsc::Receiver<UsageEvent>,
    batch: &mut Vec<UsageEvent>,
    shutdown: &CancellationToken,
) {
    let mut until = pin!(tokio::time::sleep(LINGER));
    while batch.len() < BATCH {
        tokio::select! {
            taken = rx.recv_many(batch, BATCH - batch.len()) => if taken == 0 {
                return;
            },
            () = &mut until => return,
            () = shutdown.cancelled() => return,
        }
    }
}

/// Most events the next pipeline takes when `waiting` are queued behind its first.
fn batch_limit(waiting: usize) -> usize {
    if waiting >= BATCH {
        BACKLOG_BATCH
    } else {
        BATCH
    }
}

type SharedSpool = Arc<Mutex<Spool>>;

fn lock(spool: &SharedSpool) -> MutexGuard<'_, Spool> {
    spool.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs spool I/O (which fsyncs) off the async runtime.
async fn blocking<T: Send + 'static>(
    spool: &SharedSpool,
    f: impl FnOnce(&mut Spool) -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let spool = spool.clone();
    tokio::task::spawn_blocking(move || f(&mut lock(&spool)))
        .await
        .map_err(io::Error::other)?
}

/// Appends a batch to the spool. If even the spool fails, the events are logged whole:
/// never dropped silently.
async fn spool_batch(spool: &SharedSpool, batch: Vec<UsageEvent>, metrics: &Metrics) {
    let events = Arc::new(batch);
    let to_write = events.clone();
    let result = blocking(spool, move |s| s.append(&to_write)).await;
    metrics.usage_spool_depth.set(lock(spool).depth() as i64);
    if let Err(err) = result {
        for e in events.iter() {
            error!(target: "ProxyHandler", error = %err, event_id = %e.id, request_id = %e.request_id, user_id = e.user_id, cost_micros = e.cost_micros, "usage event could not be spooled");
        }
    }
}

/// Sends everything in the spool, in order, then empties it. A failure part-way leaves the
/// spool as it was: events already delivered are delivered again later, and the ledger ignores
/// the repeats by id.
async fn replay(
    settings: &PublisherSettings,
    conn: &mut Option<Sink>,
    spool: &SharedSpool,
    metrics: &Metrics,
) -> Result<(), SendError> {
    let replayed = match blocking(spool, |s| s.read()).await {
        Ok(r) => r,
        Err(err) => {
            error!(target: "ProxyHandler", error = %err, "cannot read the usage spool");
            return Ok(());
        }
    };
    if replayed.corrupt > 0 {
        metrics.usage_spool_corrupt.inc_by(replayed.corrupt);
        error!(target: "ProxyHandler", records = replayed.corrupt, "corrupt tail of the usage spool skipped");
    }
    for chunk in replayed.events.chunks(BACKLOG_BATCH) {
        send(settings, conn, chunk).await?;
        metrics.usage_published.inc_by(chunk.len() as u64);
    }
    if let Err(err) = blocking(spool, |s| s.clear()).await {
        error!(target: "ProxyHandler", error = %err, "cannot empty the usage spool; its events will be sent again (the ledger ignores repeats)");
    }
    metrics.usage_spool_depth.set(lock(spool).depth() as i64);
    info!(target: "ProxyHandler", events = replayed.events.len(), "usage spool replayed");
    Ok(())
}

/// Without a spool, a failed batch is retried from memory (bounded by the shutdown budget).
#[allow(clippy::too_many_arguments)]
async fn retry_in_memory(
    settings: &PublisherSettings,
    conn: &mut Option<Sink>,
    batch: Vec<UsageEvent>,
    shutdown: &CancellationToken,
    closing_since: &mut Option<tokio::time::Instant>,
    rx: &mut mpsc::Receiver<UsageEvent>,
    metrics: &Metrics,
) {
    let mut backoff = RETRY_MIN;
    loop {
        if closing_since.is_some_and(|t| t.elapsed() > SHUTDOWN_RETRY_BUDGET) {
            for e in &batch {
                error!(target: "ProxyHandler", event_id = %e.id, request_id = %e.request_id, user_id = e.user_id, cost_micros = e.cost_micros, "usage event unpublished at shutdown");
            }
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled(), if closing_since.is_none() => {
                rx.close();
                *closing_since = Some(tokio::time::Instant::now());
            }
        }
        backoff = (backoff * 2).min(RETRY_MAX);
        match send(settings, conn, &batch).await {
            Ok(()) => {
                metrics.usage_published.inc_by(batch.len() as u64);
                return;
            }
            Err(err) => {
                metrics.usage_publish_errors.inc();
                *conn = None;
                warn!(target: "ProxyHandler", error = %err, events = batch.len(), "publishing usage failed; retrying");
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
        PublisherSettings::ControlPlane { channel, .. } => Ok(Sink::ControlPlane(Box::new(
            UsageServiceClient::new(channel.clone()),
        ))),
    }
}

async fn send(
    settings: &PublisherSettings,
    conn: &mut Option<Sink>,
    batch: &[UsageEvent],
) -> Result<(), SendError> {
    let span = info_span!(target: "ProxyHandler", "usage_publish", events = batch.len());
    send_batch(settings, conn, batch).instrument(span).await
}

async fn send_batch(
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
        (Sink::ControlPlane(client), PublisherSettings::ControlPlane { .. }) => {
            let mut request = tonic::Request::new(ReportUsageRequest {
                events: batch.to_vec(),
            });
            request.set_timeout(REPORT_TIMEOUT);
            client.report_usage(request).await?;
            Ok(())
        }
        // A sink always matches the settings it was made from.
        _ => Err(SendError::Mismatch),
    }
}

#[cfg(test)]
mod tests {
    use gateway_proto::v1::UsageEvent;
    use tokio::{sync::mpsc, time::Instant};
    use tokio_util::sync::CancellationToken;

    use super::{BACKLOG_BATCH, BATCH, LINGER, batch_limit, linger};

    fn events(n: usize) -> Vec<UsageEvent> {
        (0..n)
            .map(|i| UsageEvent {
                id: format!("e{i}"),
                ..UsageEvent::default()
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_leaves_without_lingering() {
        let (tx, mut rx) = mpsc::channel(BACKLOG_BATCH);
        for e in events(BATCH + 10) {
            tx.try_send(e).unwrap();
        }
        let mut batch = Vec::new();
        let start = Instant::now();
        linger(&mut rx, &mut batch, &CancellationToken::new()).await;
        assert_eq!(batch.len(), BATCH);
        assert_eq!(Instant::now(), start, "no time passed");
        assert_eq!(rx.len(), 10, "the rest wait for the next batch");
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_takes_events_as_they_come_until_it_fills() {
        let (tx, mut rx) = mpsc::channel(BACKLOG_BATCH);
        let sender = tokio::spawn(async move {
            for e in events(BATCH) {
                tokio::time::sleep(LINGER / 200).await;
                tx.send(e).await.unwrap();
            }
        });
        let mut batch = Vec::new();
        let start = Instant::now();
        linger(&mut rx, &mut batch, &CancellationToken::new()).await;
        assert_eq!(batch.len(), BATCH);
        assert!(Instant::now() - start < LINGER, "left once full");
        sender.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_small_batch_leaves_after_the_linger_or_at_shutdown() {
        let (tx, mut rx) = mpsc::channel(BACKLOG_BATCH);
        for e in events(3) {
            tx.try_send(e).unwrap();
        }
        let mut batch = Vec::new();
        let start = Instant::now();
        linger(&mut rx, &mut batch, &CancellationToken::new()).await;
        assert_eq!(batch.len(), 3);
        assert_eq!(Instant::now() - start, LINGER);

        tx.try_send(UsageEvent::default()).unwrap();
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let mut batch = Vec::new();
        let start = Instant::now();
        linger(&mut rx, &mut batch, &shutdown).await;
        assert!(batch.len() <= 1);
        assert_eq!(Instant::now(), start, "shutdown does not wait");
    }

    #[test]
    fn pipelines_stay_small_until_a_backlog_builds() {
        assert_eq!(batch_limit(0), BATCH);
        assert_eq!(batch_limit(BATCH - 1), BATCH);
        assert_eq!(batch_limit(BATCH), BACKLOG_BATCH);
        assert_eq!(batch_limit(50_000), BACKLOG_BATCH);
    }
}
