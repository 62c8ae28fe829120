//! The usage consumer: reads usage events from the Redis stream through a consumer group,
//! writes each batch and its balance debits in one Postgres transaction keyed by event id,
//! and acknowledges only after commit. Entries left pending by a dead consumer are claimed.
//! A batch the database refuses is split to find the entries at fault; one refused
//! `MAX_ATTEMPTS` times goes to the dead-letter table with its error instead of looping. The
//! stream is trimmed only below what every consumer group has acknowledged.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use chrono::DateTime;
use gateway_proto::{
    USAGE_EVENT_FIELD,
    ids::{KeyId, UpstreamId, UserId},
    money::Micros,
    v1::UsageEvent,
};
use prost::Message;
use redis::{
    AsyncCommands, RedisError,
    aio::{ConnectionManager, ConnectionManagerConfig},
    streams::{StreamAutoClaimOptions, StreamId, StreamReadOptions, StreamReadReply},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};
use uuid::Uuid;

use crate::{
    metrics::Metrics,
    store::{IngestOutcome, Store, UsageRow},
};

const BATCH: usize = 500;
const BLOCK: Duration = Duration::from_millis(1000);
/// Entries pending this long with another consumer are presumed orphaned and claimed.
const CLAIM_IDLE: Duration = Duration::from_secs(60);
/// Default period of housekeeping: claiming orphans, trimming the stream.
pub const DEFAULT_HOUSEKEEPING: Duration = Duration::from_secs(30);
/// Refusals of one entry before it is dead-lettered.
const MAX_ATTEMPTS: u32 = 5;
const RETRY_BACKOFF: Duration = Duration::from_millis(500);
/// How often the consumer group's lag is read for the metrics.
const LAG_PERIOD: Duration = Duration::from_secs(1);

/// Where the consumer reads from.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub redis_url: String,
    pub stream: String,
    pub group: String,
    pub consumer: String,
    /// How often orphans are claimed and the stream is trimmed.
    pub housekeeping: Duration,
    /// Idle time after which a consumer with nothing pending is deleted from the group.
    pub stale_consumer_after: Duration,
}

/// The usage consumer task.
#[derive(Debug)]
pub struct UsageConsumer {
    store: Store,
    settings: ConsumerSettings,
    ingested: Arc<watch::Sender<u64>>,
    metrics: Arc<Metrics>,
    /// Refusals per stream entry, for entries the database refuses on their own.
    refusals: Mutex<HashMap<String, u32>>,
}

#[derive(Debug, thiserror::Error)]
enum ConsumeError {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("the ledger refused {0} entries; they stay pending")]
    Refused(usize),
}

/// `ms-seq` → (ms, seq).
fn stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

impl UsageConsumer {
    /// A consumer; `ingested` counts events newly written to the ledger.
    pub fn new(
        store: Store,
        settings: ConsumerSettings,
        ingested: Arc<watch::Sender<u64>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            settings,
            ingested,
            metrics,
            refusals: Mutex::new(HashMap::new()),
        }
    }

    /// Consumes until `cancel`; a batch in progress is finished first.
    pub async fn run(self, cancel: CancellationToken) {
        let mut conn = None;
        // Start with this consumer's own pending entries: they were read but never acked.
        let mut backlog = true;
        let mut last_claim = tokio::time::Instant::now();
        let mut last_lag = last_claim - LAG_PERIOD;
        while !cancel.is_cancelled() {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match self.connect().await {
                    Ok(c) => conn.insert(c),
                    Err(err) => {
                        warn!(target: "UsageConsumer", error = %err, "cannot reach redis; retrying");
                        pause(&cancel, RETRY_BACKOFF).await;
                        continue;
                    }
                },
            };
            if last_claim.elapsed() >= self.settings.housekeeping {
                last_claim = tokio::time::Instant::now();
                match self.trim(c).await {
                    Ok(0) => {}
                    Ok(n) => {
                        debug!(target: "UsageConsumer", trimmed = n, "usage stream trimmed below what every group acknowledged")
                    }
                    Err(err) => {
                        warn!(target: "UsageConsumer", error = %err, "trimming the usage stream failed")
                    }
                }
                match self.delete_stale_consumers(c).await {
                    Ok(gone) if gone.is_empty() => {}
                    Ok(gone) => {
                        info!(target: "UsageConsumer", consumers = ?gone, "deleted idle consumers with nothing pending")
                    }
                    Err(err) => {
                        warn!(target: "UsageConsumer", error = %err, "deleting idle consumers failed")
                    }
                }
                match self.claim_orphans(c).await {
                    Ok(0) => {}
                    Ok(n) => {
                        info!(target: "UsageConsumer", claimed = n, "claimed entries of a dead consumer");
                        backlog = true;
                    }
                    Err(err) => {
                        warn!(target: "UsageConsumer", error = %err, "claiming orphaned entries failed")
                    }
                }
            }
            if last_lag.elapsed() >= LAG_PERIOD {
                last_lag = tokio::time::Instant::now();
                if let Err(err) = self.measure_lag(c).await {
                    debug!(target: "UsageConsumer", error = %err, "reading the consumer group's lag failed");
                }
            }
            let read = tokio::select! {
                () = cancel.cancelled() => break,
                read = self.read(c, backlog) => read,
            };
            let entries = match read {
                Ok(entries) => entries,
                Err(err) => {
                    warn!(target: "UsageConsumer", error = %err, "reading the usage stream failed; retrying");
                    if err.to_string().contains("NOGROUP") {
                        conn = None;
                    }
                    pause(&cancel, RETRY_BACKOFF).await;
                    continue;
                }
            };
            if entries.is_empty() {
                backlog = false;
                continue;
            }
            let started = std::time::Instant::now();
            let span = info_span!(target: "UsageConsumer", "usage_batch", entries = entries.len());
            if let Err(err) = self.process(c, &entries).instrument(span).await {
                self.metrics.usage_batch_errors.inc();
                error!(target: "UsageConsumer", error = %err, entries = entries.len(), "ingesting a usage batch failed; it stays pending and is retried");
                backlog = true;
                pause(&cancel, RETRY_BACKOFF).await;
            } else {
                self.metrics.usage_batches.inc();
                self.metrics
                    .usage_batch_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
        }
        info!(target: "UsageConsumer", "usage consumer stopped");
    }

    async fn connect(&self) -> Result<ConnectionManager, RedisError> {
        let client = redis::Client::open(self.settings.redis_url.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(BLOCK + Duration::from_secs(5)))
            .set_connection_timeout(Some(Duration::from_secs(2)));
        let mut conn = client.get_connection_manager_with_config(config).await?;
        // From the start of the stream: events published before the group existed count too,
        // and the ledger ignores any it already has.
        let created: Result<(), RedisError> = conn
            .xgroup_create_mkstream(&self.settings.stream, &self.settings.group, "0")
            .await;
        match created {
            Ok(()) => {
                info!(target: "UsageConsumer", stream = %self.settings.stream, group = %self.settings.group, "consumer group created")
            }
            Err(err) if err.code() == Some("BUSYGROUP") => {}
            Err(err) => return Err(err),
        }
        Ok(conn)
    }

    async fn read(
        &self,
        conn: &mut ConnectionManager,
        backlog: bool,
    ) -> Result<Vec<StreamId>, RedisError> {
        let mut options = StreamReadOptions::default()
            .group(&self.settings.group, &self.settings.consumer)
            .count(BATCH);
        if !backlog {
            options = options.block(BLOCK.as_millis() as usize);
        }
        let id = if backlog { "0" } else { ">" };
        let reply: Option<StreamReadReply> = conn
            .xread_options(&[&self.settings.stream], &[id], &options)
            .await?;
        Ok(reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default())
    }

    /// Updates the lag and pending gauges from the group's entry in `XINFO GROUPS`.
    async fn measure_lag(&self, conn: &mut ConnectionManager) -> Result<(), RedisError> {
        let groups: redis::streams::StreamInfoGroupsReply =
            conn.xinfo_groups(&self.settings.stream).await?;
        if let Some(group) = groups.groups.iter().find(|g| g.name == self.settings.group) {
            let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            // Redis leaves lag out when it cannot tell (after deletions); keep the last value.
            if let Some(lag) = group.lag {
                self.metrics.usage_consumer_lag.set(gauge(lag));
            }
            self.metrics.usage_pending.set(gauge(group.pending));
        }
        Ok(())
    }

    /// Deletes other consumers of the group that have nothing pending and have been idle
    /// longer than the setting. Only an empty consumer is deleted, so nothing is lost even if
    /// it is alive: Redis recreates it on its next read.
    async fn delete_stale_consumers(
        &self,
        conn: &mut ConnectionManager,
    ) -> Result<Vec<String>, RedisError> {
        let reply: redis::streams::StreamInfoConsumersReply = conn
            .xinfo_consumers(&self.settings.stream, &self.settings.group)
            .await?;
        let stale_ms = self.settings.stale_consumer_after.as_millis();
        let mut gone = Vec::new();
        for consumer in reply.consumers {
            if consumer.name == self.settings.consumer
                || consumer.pending > 0
                || (consumer.idle as u128) < stale_ms
            {
                continue;
            }
            // A live consumer reads at least every second, so it is never this idle; should
            // one read in the instant between XINFO and here, it still ingests what it read
            // (the ledger is idempotent) — only a crash right then would need a re-drive.
            let dropped: usize = conn
                .xgroup_delconsumer(&self.settings.stream, &self.settings.group, &consumer.name)
                .await?;
            if dropped > 0 {
                error!(target: "UsageConsumer", consumer = %consumer.name, dropped, "a deleted consumer had just read entries; if it does not ingest them, re-drive them from the stream");
            }
            gone.push(consumer.name);
        }
        Ok(gone)
    }

    async fn claim_orphans(&self, conn: &mut ConnectionManager) -> Result<usize, RedisError> {
        let reply: redis::streams::StreamAutoClaimReply = conn
            .xautoclaim_options(
                &self.settings.stream,
                &self.settings.group,
                &self.settings.consumer,
                CLAIM_IDLE.as_millis() as u64,
                "0-0",
                StreamAutoClaimOptions::default().count(BATCH).with_justid(),
            )
            .await?;
        Ok(reply.claimed.len())
    }

    async fn process(
        &self,
        conn: &mut ConnectionManager,
        entries: &[StreamId],
    ) -> Result<(), ConsumeError> {
        let mut rows = Vec::with_capacity(entries.len());
        let mut row_ids: Vec<&str> = Vec::with_capacity(entries.len());
        for entry in entries {
            let payload: Option<Vec<u8>> = entry.get(USAGE_EVENT_FIELD);
            match payload.as_deref().map(decode) {
                Some(Ok(row)) => {
                    rows.push(row);
                    row_ids.push(entry.id.as_str());
                }
                Some(Err(reason)) => {
                    warn!(target: "UsageConsumer", stream_id = %entry.id, reason = %reason, "undecodable usage event moved to dead letters");
                    self.store
                        .dead_letter(&entry.id, payload.as_deref(), &reason.to_string())
                        .await?;
                    self.metrics.usage_dead_lettered.inc();
                }
                None => {
                    warn!(target: "UsageConsumer", stream_id = %entry.id, "usage entry without an event field moved to dead letters");
                    self.store
                        .dead_letter(&entry.id, None, "entry has no `event` field")
                        .await?;
                    self.metrics.usage_dead_lettered.inc();
                }
            }
        }
        let mut pending: Vec<&str> = Vec::new();
        match self.store.ingest_usage(&rows).await {
            Ok(outcome) => self.committed(&outcome),
            Err(err) if err.is_transient() => return Err(err.into()),
            Err(err) => {
                warn!(target: "UsageConsumer", error = %err, entries = rows.len(), "the ledger refused a usage batch; retrying its entries one by one");
                for (row, id) in rows.iter().zip(&row_ids) {
                    match self.store.ingest_usage(std::slice::from_ref(row)).await {
                        Ok(outcome) => self.committed(&outcome),
                        Err(err) if err.is_transient() => return Err(err.into()),
                        Err(err) => {
                            if self.refused(id) < MAX_ATTEMPTS {
                                pending.push(id);
                                continue;
                            }
                            error!(target: "UsageConsumer", stream_id = %id, event_id = %row.id, user_id = row.user_id.get(), cost_micros = row.cost_micros.get(), error = %err, "usage event refused repeatedly; moved to dead letters");
                            let payload = entries
                                .iter()
                                .find(|e| e.id == *id)
                                .and_then(|e| e.get::<Vec<u8>>(USAGE_EVENT_FIELD));
                            self.store
                                .dead_letter(id, payload.as_deref(), &err.to_string())
                                .await?;
                            self.metrics.usage_dead_lettered.inc();
                            self.forget(id);
                        }
                    }
                }
            }
        }
        let done: Vec<&str> = entries
            .iter()
            .map(|e| e.id.as_str())
            .filter(|id| !pending.contains(id))
            .collect();
        if !done.is_empty() {
            let _: usize = conn
                .xack(&self.settings.stream, &self.settings.group, &done)
                .await?;
        }
        for id in &done {
            self.forget(id);
        }
        if pending.is_empty() {
            Ok(())
        } else {
            Err(ConsumeError::Refused(pending.len()))
        }
    }

    fn committed(&self, outcome: &IngestOutcome) {
        debug!(target: "UsageConsumer", inserted = outcome.inserted, "usage batch committed");
        if let Some(version) = outcome.version {
            let users: Vec<i64> = outcome.exhausted_users.iter().map(|u| u.get()).collect();
            info!(target: "UsageConsumer", users = ?users, version, "balances exhausted");
        }
        self.ingested.send_modify(|n| *n += outcome.inserted);
    }

    /// Counts a refusal of entry `id`; returns how many it has had.
    fn refused(&self, id: &str) -> u32 {
        let mut refusals = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        let n = refusals.entry(id.to_owned()).or_default();
        *n += 1;
        *n
    }

    fn forget(&self, id: &str) {
        self.refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// Trims the stream below the oldest entry any group still needs: its first pending
    /// entry, or, with nothing pending, its last delivered one.
    async fn trim(&self, conn: &mut ConnectionManager) -> Result<usize, RedisError> {
        let groups: redis::streams::StreamInfoGroupsReply =
            conn.xinfo_groups(&self.settings.stream).await?;
        let mut floor: Option<(u64, u64, String)> = None;
        for group in groups.groups {
            let needed = if group.pending > 0 {
                match conn
                    .xpending::<_, _, redis::streams::StreamPendingReply>(
                        &self.settings.stream,
                        &group.name,
                    )
                    .await?
                {
                    redis::streams::StreamPendingReply::Data(d) => d.start_id,
                    _ => group.last_delivered_id,
                }
            } else {
                group.last_delivered_id
            };
            let Some((ms, seq)) = stream_id(&needed) else {
                return Ok(0);
            };
            if floor.as_ref().is_none_or(|f| (ms, seq) < (f.0, f.1)) {
                floor = Some((ms, seq, needed));
            }
        }
        let Some((_, _, floor)) = floor else {
            return Ok(0);
        };
        redis::cmd("XTRIM")
            .arg(&self.settings.stream)
            .arg("MINID")
            .arg(floor)
            .query_async(conn)
            .await
    }
}

async fn pause(cancel: &CancellationToken, d: Duration) {
    tokio::select! {
        () = cancel.cancelled() => {}
        () = tokio::time::sleep(d) => {}
    }
}

/// A stream payload → a ledger row, refusing what cannot be billed correctly.
/// The ledger row of a stream entry's payload (also what a dead letter is redriven from).
pub fn decode(payload: &[u8]) -> Result<UsageRow, BadEvent> {
    UsageRow::try_from(UsageEvent::decode(payload)?)
}

/// Why a usage event cannot become a ledger row; the entry goes to the dead letters with it.
#[derive(Debug, thiserror::Error)]
pub enum BadEvent {
    /// The payload is not a protobuf `UsageEvent`.
    #[error("not a usage event: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The event id is not a UUID.
    #[error("bad event id {id:?}: {source}")]
    Id {
        /// The id as sent.
        id: String,
        #[source]
        source: uuid::Error,
    },
    /// A token count does not fit the ledger.
    #[error("{0} out of range")]
    Tokens(&'static str),
    /// The start time is not a representable instant.
    #[error("bad start time {0}")]
    StartTime(i64),
}

impl TryFrom<UsageEvent> for UsageRow {
    type Error = BadEvent;

    fn try_from(e: UsageEvent) -> Result<Self, BadEvent> {
        let tokens = |v: u64, what| i64::try_from(v).map_err(|_| BadEvent::Tokens(what));
        // A status this build does not know (a newer data plane's) is kept as unspecified:
        // the event is still billed, as it was when statuses were free text.
        let status = e.status();
        Ok(UsageRow {
            id: Uuid::parse_str(&e.id).map_err(|source| BadEvent::Id {
                id: e.id.clone(),
                source,
            })?,
            request_id: e.request_id,
            key_id: KeyId(e.key_id),
            user_id: UserId(e.user_id),
            upstream_id: e.upstream_id.map(UpstreamId),
            model: e.model,
            endpoint: e.endpoint,
            input_tokens: tokens(e.input_tokens, "input_tokens")?,
            cached_tokens: tokens(e.cached_tokens, "cached_tokens")?,
            output_tokens: tokens(e.output_tokens, "output_tokens")?,
            reasoning_tokens: tokens(e.reasoning_tokens, "reasoning_tokens")?,
            cost_micros: Micros(e.cost_micros),
            status,
            stream: e.stream,
            estimated: e.estimated,
            ttfb_ms: i32::try_from(e.ttfb_ms).unwrap_or(i32::MAX),
            duration_ms: i32::try_from(e.duration_ms).unwrap_or(i32::MAX),
            node_id: e.node_id,
            started_at: DateTime::from_timestamp_millis(e.started_at_ms)
                .ok_or(BadEvent::StartTime(e.started_at_ms))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use gateway_proto::v1::UsageStatus;

    use super::*;

    #[test]
    fn decodes_events_and_refuses_garbage() {
        let id = Uuid::now_v7();
        let event = UsageEvent {
            id: id.to_string(),
            user_id: 3,
            input_tokens: 10,
            started_at_ms: 1_700_000_000_000,
            ..Default::default()
        };
        let row = decode(&event.encode_to_vec()).unwrap();
        assert_eq!(row.id, id);
        assert_eq!(row.upstream_id, None);
        assert_eq!(row.input_tokens, 10);
        assert!(decode(b"\xff\xff\xff").is_err());
        let bad_id = UsageEvent {
            id: "nope".into(),
            ..event
        };
        assert!(
            decode(&bad_id.encode_to_vec())
                .unwrap_err()
                .to_string()
                .contains("bad event id")
        );
    }

    #[test]
    fn statuses_are_kept_and_unknown_ones_still_billed() {
        let event = UsageEvent {
            id: Uuid::now_v7().to_string(),
            key_id: 4,
            upstream_id: Some(2),
            cost_micros: 125,
            status: UsageStatus::ClientCancelled as i32,
            ..Default::default()
        };
        let row = decode(&event.encode_to_vec()).unwrap();
        assert_eq!(
            (row.key_id, row.upstream_id, row.cost_micros, row.status),
            (
                KeyId(4),
                Some(UpstreamId(2)),
                Micros(125),
                UsageStatus::ClientCancelled
            )
        );
        let newer = UsageEvent {
            status: 99,
            ..event
        };
        let row = decode(&newer.encode_to_vec()).unwrap();
        assert_eq!(
            (row.status, row.cost_micros),
            (UsageStatus::Unspecified, Micros(125))
        );
    }
}
