//! Usage retention: ledger events older than `USAGE_RETENTION_DAYS` are deleted by one replica
//! at a time (its own advisory lock, so it runs whether or not health checks do), in small
//! batches, pausing after each for four times as long as it took, so ingest never waits long
//! behind it and keeps most of its pace. The rollups stay:
//! summaries, spending caps and dashboards read them. Progress is logged (target
//! `UsageRetention`) and counted in `codex_gateway_usage_retention_deleted`.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    config::Retention,
    metrics::Metrics,
    store::{Duty, Store, StoreError},
};

/// Events deleted per statement: small enough that a batch takes tens of milliseconds.
const BATCH: i64 = 5_000;
/// After each batch the pass waits this many times as long as the batch took, so it keeps
/// the database busy at most a fifth of the time and ingest keeps (measured) most of its pace.
const PAUSE_FACTOR: u32 = 4;
/// The least pause between batches.
const MIN_PAUSE: Duration = Duration::from_millis(20);
/// How often a running pass logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The retention task's settings.
#[derive(Debug, Clone, Copy)]
pub struct RetentionSettings {
    pub keep: Retention,
    pub interval: Duration,
}

/// Runs usage retention while this replica holds the duty.
#[derive(Debug)]
pub struct UsageRetention {
    store: Store,
    settings: RetentionSettings,
    metrics: Arc<Metrics>,
}

impl UsageRetention {
    pub fn new(store: Store, settings: RetentionSettings, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            settings,
            metrics,
        }
    }

    /// Competes for the duty and, while holding it, runs a pass every interval until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        let Retention::Days(days) = self.settings.keep else {
            info!(target: "UsageRetention", "usage events are kept forever (USAGE_RETENTION_DAYS=never)");
            return;
        };
        let keep = TimeDelta::days(i64::from(days.get()));
        while !cancel.is_cancelled() {
            match self.store.try_lead(Duty::UsageRetention).await {
                Ok(Some(mut lead)) => {
                    loop {
                        if let Err(err) = self.pass(Utc::now() - keep, &cancel).await {
                            warn!(target: "UsageRetention", error = %err, "usage retention pass failed; retrying next interval");
                        }
                        if !self.pause(&cancel).await || !lead.holds().await {
                            break;
                        }
                    }
                    lead.release().await;
                }
                Ok(None) => {
                    if !self.pause(&cancel).await {
                        return;
                    }
                }
                Err(err) => {
                    warn!(target: "UsageRetention", error = %err, "cannot compete for the usage retention duty");
                    if !self.pause(&cancel).await {
                        return;
                    }
                }
            }
        }
    }

    /// Waits one interval; false when cancelled.
    async fn pause(&self, cancel: &CancellationToken) -> bool {
        tokio::select! {
            () = cancel.cancelled() => false,
            () = tokio::time::sleep(self.settings.interval) => true,
        }
    }

    /// Deletes every event that started before `cutoff`, batch by batch; how many.
    pub async fn pass(
        &self,
        cutoff: DateTime<Utc>,
        cancel: &CancellationToken,
    ) -> Result<u64, StoreError> {
        let started = Instant::now();
        let mut logged = started;
        let mut deleted = 0u64;
        self.metrics.retention_running.set(1);
        let result = loop {
            let batch = Instant::now();
            let n = match self.store.delete_usage_before(cutoff, BATCH).await {
                Ok(n) => n,
                Err(err) => break Err(err),
            };
            deleted += n;
            self.metrics.retention_deleted.inc_by(n);
            if n < BATCH as u64 || cancel.is_cancelled() {
                break Ok(deleted);
            }
            if logged.elapsed() >= PROGRESS_EVERY {
                logged = Instant::now();
                info!(target: "UsageRetention", deleted, before = %cutoff, elapsed_ms = started.elapsed().as_millis() as u64, "usage retention pass in progress");
            }
            tokio::time::sleep((batch.elapsed() * PAUSE_FACTOR).max(MIN_PAUSE)).await;
        };
        self.metrics.retention_running.set(0);
        if deleted > 0 {
            info!(target: "UsageRetention", deleted, before = %cutoff, elapsed_ms = started.elapsed().as_millis() as u64, "usage retention pass done");
        }
        result
    }
}
