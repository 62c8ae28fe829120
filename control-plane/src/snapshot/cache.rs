//! Keeps the latest snapshot in a `watch` channel: rebuilt from the tables whenever the config
//! version moves (any replica, through Postgres `LISTEN`; in-process on SQLite), with a
//! periodic version check as a safety net for notifications lost while reconnecting.

use std::{sync::Arc, time::Duration};

use gateway_proto::v1::Snapshot;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{BuildSettings, build};
use crate::{
    crypto::Cipher,
    store::{Changes, Store},
};

/// Receiver of the latest published snapshot.
pub type SnapshotRx = watch::Receiver<Option<Arc<Snapshot>>>;

const SAFETY_NET_PERIOD: Duration = Duration::from_secs(2);

/// Builds and publishes snapshots.
#[derive(Debug)]
pub struct SnapshotCache {
    store: Store,
    cipher: Cipher,
    settings: BuildSettings,
    tx: watch::Sender<Option<Arc<Snapshot>>>,
}

impl SnapshotCache {
    /// A cache with nothing published yet.
    pub fn new(store: Store, cipher: Cipher, settings: BuildSettings) -> Self {
        let (tx, _) = watch::channel(None);
        Self {
            store,
            cipher,
            settings,
            tx,
        }
    }

    /// Subscribes to published snapshots.
    pub fn subscribe(&self) -> SnapshotRx {
        self.tx.subscribe()
    }

    /// Version of the published snapshot (0 before the first).
    pub fn published_version(&self) -> u64 {
        self.tx.borrow().as_ref().map_or(0, |s| s.version)
    }

    /// Rebuilds from the store and publishes if the version moved on.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        let state = self.store.snapshot_state().await?;
        if u64::try_from(state.version).unwrap_or(0) <= self.published_version() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let snapshot = build(state, &self.cipher, self.settings)?;
        info!(
            target: "ConfigStream",
            version = snapshot.version,
            upstreams = snapshot.upstreams.len(),
            keys = snapshot.keys.len(),
            build_ms = started.elapsed().as_millis() as u64,
            "snapshot published"
        );
        self.tx.send_replace(Some(Arc::new(snapshot)));
        Ok(())
    }

    /// Follows config changes until `cancel` fires.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut listener = None;
        let mut tick = tokio::time::interval(SAFETY_NET_PERIOD);
        loop {
            if listener.is_none() {
                listener = match self.store.changes().await {
                    Ok(l) => Some(l),
                    Err(err) => {
                        warn!(target: "ConfigStream", error = %err, "cannot listen for config changes; polling");
                        None
                    }
                };
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                notified = recv(&mut listener) => {
                    if let Err(err) = notified {
                        warn!(target: "ConfigStream", error = %err, "config listener failed; reconnecting");
                        listener = None;
                    }
                }
                _ = tick.tick() => {}
            }
            if let Err(err) = self.refresh().await {
                warn!(target: "ConfigStream", error = %err, "snapshot rebuild failed; keeping the last one");
            }
        }
    }
}

async fn recv(listener: &mut Option<Changes>) -> Result<(), crate::store::StoreError> {
    match listener {
        Some(l) => l.next().await,
        None => std::future::pending().await,
    }
}
