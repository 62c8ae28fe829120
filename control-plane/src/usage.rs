//! The usage consumer: reads usage events from the Redis stream through a consumer group,
//! writes each batch and its balance debits in one Postgres transaction keyed by event id,
//! and acknowledges only after commit. Entries left pending by a dead consumer are claimed.

use std::{sync::Arc, time::Duration};

use chrono::DateTime;
use gateway_proto::{USAGE_EVENT_FIELD, v1::UsageEvent};
use prost::Message;
use redis::{
    AsyncCommands, RedisError,
    aio::{ConnectionManager, ConnectionManagerConfig},
    streams::{StreamAutoClaimOptions, StreamId, StreamReadOptions, StreamReadReply},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use crate::store::{Store, UsageRow};

const BATCH: usize = 500;
const BLOCK: Duration = Duration::from_millis(1000);
/// Entries pending this long with another consumer are presumed orphaned and claimed.
const CLAIM_IDLE: Duration = Duration::from_secs(60);
const CLAIM_EVERY: Duration = Duration::from_secs(30);
const RETRY_BACKOFF: Duration = Duration::from_millis(500);

/// Where the consumer reads from.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub redis_url: String,
    pub stream: String,
    pub group: String,
    pub consumer: String,
}

/// The usage consumer task.
#[derive(Debug)]
pub struct UsageConsumer {
    store: Store,
    settings: ConsumerSettings,
    ingested: Arc<watch::Sender<u64>>,
}

#[derive(Debug, thiserror::Error)]
enum ConsumeError {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl UsageConsumer {
    /// A consumer; `ingested` counts events newly written to the ledger.
    pub fn new(
        store: Store,
        settings: ConsumerSettings,
        ingested: Arc<watch::Sender<u64>>,
    ) -> Self {
        Self {
            store,
            settings,
            ingested,
        }
    }

    /// Consumes until `cancel`; a batch in progress is finished first.
    pub async fn run(self, cancel: CancellationToken) {
        let mut conn = None;
        // Start with this consumer's own pending entries: they were read but never acked.
        let mut backlog = true;
        let mut last_claim = tokio::time::Instant::now();
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
            if last_claim.elapsed() >= CLAIM_EVERY {
                last_claim = tokio::time::Instant::now();
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
            if let Err(err) = self.process(c, &entries).await {
                error!(target: "UsageConsumer", error = %err, entries = entries.len(), "ingesting a usage batch failed; it stays pending and is retried");
                backlog = true;
                pause(&cancel, RETRY_BACKOFF).await;
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
        for entry in entries {
            let payload: Option<Vec<u8>> = entry.get(USAGE_EVENT_FIELD);
            match payload.as_deref().map(decode) {
                Some(Ok(row)) => rows.push(row),
                Some(Err(reason)) => {
                    warn!(target: "UsageConsumer", stream_id = %entry.id, reason = %reason, "undecodable usage event moved to dead letters");
                    self.store
                        .dead_letter(&entry.id, payload.as_deref(), &reason)
                        .await?;
                }
                None => {
                    warn!(target: "UsageConsumer", stream_id = %entry.id, "usage entry without an event field moved to dead letters");
                    self.store
                        .dead_letter(&entry.id, None, "entry has no `event` field")
                        .await?;
                }
            }
        }
        let outcome = self.store.ingest_usage(&rows).await?;
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        let _: usize = conn
            .xack(&self.settings.stream, &self.settings.group, &ids)
            .await?;
        debug!(target: "UsageConsumer", read = entries.len(), inserted = outcome.inserted, "usage batch committed");
        if let Some(version) = outcome.version {
            info!(target: "UsageConsumer", users = ?outcome.exhausted_users, version, "balances exhausted");
        }
        self.ingested.send_modify(|n| *n += outcome.inserted);
        Ok(())
    }
}

async fn pause(cancel: &CancellationToken, d: Duration) {
    tokio::select! {
        () = cancel.cancelled() => {}
        () = tokio::time::sleep(d) => {}
    }
}

/// A stream payload → a ledger row, refusing what cannot be billed correctly.
fn decode(payload: &[u8]) -> Result<UsageRow, String> {
    let e = UsageEvent::decode(payload).map_err(|err| format!("not a usage event: {err}"))?;
    row_from_event(e)
}

/// A usage event → a ledger row, refusing what cannot be billed correctly.
pub fn row_from_event(e: UsageEvent) -> Result<UsageRow, String> {
    let tokens = |v: u64, what: &str| i64::try_from(v).map_err(|_| format!("{what} out of range"));
    Ok(UsageRow {
        id: Uuid::parse_str(&e.id).map_err(|err| format!("bad event id {:?}: {err}", e.id))?,
        request_id: e.request_id,
        key_id: e.key_id,
        user_id: e.user_id,
        upstream_id: (e.upstream_id != 0).then_some(e.upstream_id),
        model: e.model,
        endpoint: e.endpoint,
        input_tokens: tokens(e.input_tokens, "input_tokens")?,
        cached_tokens: tokens(e.cached_tokens, "cached_tokens")?,
        output_tokens: tokens(e.output_tokens, "output_tokens")?,
        reasoning_tokens: tokens(e.reasoning_tokens, "reasoning_tokens")?,
        cost_micros: e.cost_micros,
        status: e.status,
        stream: e.stream,
        estimated: e.estimated,
        ttfb_ms: i32::try_from(e.ttfb_ms).unwrap_or(i32::MAX),
        duration_ms: i32::try_from(e.duration_ms).unwrap_or(i32::MAX),
        node_id: e.node_id,
        started_at: DateTime::from_timestamp_millis(e.started_at_ms)
            .ok_or_else(|| format!("bad start time {}", e.started_at_ms))?,
    })
}

#[cfg(test)]
mod tests {
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
                .contains("bad event id")
        );
    }
}
