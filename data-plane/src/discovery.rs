//! The config stream: subscribes to the control plane, turns each snapshot into the applied
//! snapshot, swaps it in only if it is valid and newer, and acknowledges or rejects every
//! version. Resubscribes with jittered exponential backoff; while disconnected the last good
//! snapshot keeps serving.

use std::{path::PathBuf, sync::Arc, time::Duration};

use arc_swap::ArcSwapOption;
use gateway_proto::v1::{
    Ack, DiscoveryRequest, Nack, Snapshot, Subscribe,
    config_discovery_client::ConfigDiscoveryClient, discovery_request::Kind,
};
use prost::Message;
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Request;
use tracing::{info, info_span, warn};

use crate::{
    ControlPlane,
    metrics::Metrics,
    routing::passive::StateRegistry,
    snapshot::{AppliedSnapshot, SnapshotRejected},
};

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(15);
/// Snapshots carry every key digest; 100k keys are about 6 MB, far above tonic's 4 MiB default.
const MAX_SNAPSHOT_BYTES: usize = 512 * 1024 * 1024;

/// Why a config stream session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("config stream failed: {0}")]
    Status(#[from] tonic::Status),
}

/// Follows the control plane's snapshots into the shared applied snapshot.
#[derive(Debug)]
pub struct Discovery {
    channel: ControlPlane,
    node_id: String,
    table: Arc<ArcSwapOption<AppliedSnapshot>>,
    applied: watch::Sender<u64>,
    persist: PathBuf,
    /// Latest applied snapshot, encoded, for the writer task.
    to_persist: watch::Sender<Option<(u64, Arc<Vec<u8>>)>>,
    persisted: watch::Sender<u64>,
    /// Each upstream's passive state, carried from one table to the next.
    states: StateRegistry,
    metrics: Arc<Metrics>,
}

impl Discovery {
    /// A follower subscribing over `channel` and publishing into `table`; the receiver
    /// reports the applied version. The snapshot kept at `persist` (if valid) is applied at
    /// once, and every applied snapshot is written back there.
    pub fn new(
        channel: ControlPlane,
        node_id: String,
        table: Arc<ArcSwapOption<AppliedSnapshot>>,
        persist: PathBuf,
        metrics: Arc<Metrics>,
    ) -> (Self, watch::Receiver<u64>) {
        let (applied, rx) = watch::channel(0);
        let discovery = Self {
            channel,
            node_id,
            table,
            applied,
            persist,
            to_persist: watch::Sender::new(None),
            persisted: watch::Sender::new(0),
            states: StateRegistry::default(),
            metrics,
        };
        discovery.restore();
        (discovery, rx)
    }

    /// The version last written to the snapshot file (0 if none).
    pub fn persisted_version(&self) -> watch::Receiver<u64> {
        self.persisted.subscribe()
    }

    fn restore(&self) {
        let path = &self.persist;
        match crate::snapshot_file::load(path) {
            Ok(Some(snapshot)) => match AppliedSnapshot::build(snapshot, &self.states) {
                Ok(table) => {
                    let version = table.version;
                    self.metrics.snapshot_applied(version, table.built_at_ms);
                    self.table.store(Some(Arc::new(table)));
                    self.applied.send_replace(version);
                    info!(target: "ConfigStream", version, path = %path.display(), "serving the persisted snapshot until the control plane answers");
                }
                Err(err) => {
                    warn!(target: "ConfigStream", error = %err, path = %path.display(), "persisted snapshot is invalid; ignoring it");
                }
            },
            Ok(None) => {}
            Err(err) => {
                warn!(target: "ConfigStream", error = %err, "persisted snapshot unusable; ignoring it")
            }
        }
    }

    /// Runs until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        let writer = tokio::spawn(write_snapshots(
            self.persist.clone(),
            self.to_persist.subscribe(),
            self.persisted.clone(),
        ));
        self.follow(&cancel).await;
        // The writer finishes the snapshot it is writing, then sees its feed gone.
        drop(self);
        let _ = writer.await;
    }

    async fn follow(&self, cancel: &CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.session(cancel).await {
                Ok(received) => {
                    if cancel.is_cancelled() {
                        return;
                    }
                    warn!(target: "ConfigStream", "control plane closed the config stream; reconnecting");
                    if received {
                        backoff = BACKOFF_MIN;
                    }
                }
                Err(err) => {
                    warn!(target: "ConfigStream", error = %err, applied_version = *self.applied.borrow(), "config stream unavailable; serving the last good snapshot");
                }
            }
            // Full jitter: a fleet restarted together does not reconnect in lockstep.
            let wait = rand::rng().random_range(backoff / 2..=backoff);
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One subscription; returns whether any snapshot arrived.
    async fn session(&self, cancel: &CancellationToken) -> Result<bool, SessionError> {
        let mut client = ConfigDiscoveryClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_SNAPSHOT_BYTES);
        let (tx, rx) = mpsc::channel(8);
        let subscribe = DiscoveryRequest {
            kind: Some(Kind::Subscribe(Subscribe {
                node_id: self.node_id.clone(),
                last_version: *self.applied.borrow(),
            })),
        };
        // The receiver is alive until the request is sent, so this cannot fail.
        let _ = tx.send(subscribe).await;
        let request = Request::new(ReceiverStream::new(rx));
        let mut inbound = client.stream_config(request).await?.into_inner();
        info!(target: "ConfigStream", node = %self.node_id, "subscribed to the control plane");
        let mut received = false;
        loop {
            let message = tokio::select! {
                () = cancel.cancelled() => return Ok(received),
                message = inbound.message() => message?,
            };
            let Some(snapshot) = message else {
                return Ok(received);
            };
            received = true;
            let version = snapshot.version;
            let reply = match self.apply(snapshot) {
                Ok(()) => Kind::Ack(Ack { version }),
                Err(err) => {
                    self.metrics.snapshots_rejected.inc();
                    warn!(target: "ConfigStream", version, error = %err, "snapshot rejected; keeping the last good one");
                    Kind::Nack(Nack {
                        version,
                        reason: err.to_string(),
                    })
                }
            };
            if tx
                .send(DiscoveryRequest { kind: Some(reply) })
                .await
                .is_err()
            {
                return Ok(received);
            }
        }
    }

    fn apply(&self, snapshot: Snapshot) -> Result<(), SnapshotRejected> {
        let _span =
            info_span!(target: "ConfigStream", "snapshot_apply", version = snapshot.version)
                .entered();
        let applied = *self.applied.borrow();
        if snapshot.version == applied {
            return Ok(());
        }
        if snapshot.version < applied {
            return Err(SnapshotRejected::Stale {
                got: snapshot.version,
                applied,
            });
        }
        let started = std::time::Instant::now();
        let built_at_ms = snapshot.built_at_ms;
        let encoded = Arc::new(snapshot.encode_to_vec());
        let table = AppliedSnapshot::build(snapshot, &self.states)?;
        let version = table.version;
        let keys = table.key_count();
        let ids: std::collections::HashSet<_> = table.router().upstream_ids().collect();
        self.states.retain(|id| ids.contains(&id));
        self.table.store(Some(Arc::new(table)));
        self.applied.send_replace(version);
        self.metrics.snapshot_applied(version, built_at_ms);
        info!(target: "ConfigStream", version, keys, apply_us = started.elapsed().as_micros() as u64, "snapshot applied");
        self.to_persist.send_replace(Some((version, encoded)));
        Ok(())
    }
}

/// Writes applied snapshots to `path`, latest wins, one at a time so an older version never
/// overwrites a newer one. Ends when the discovery that feeds it is gone.
async fn write_snapshots(
    path: PathBuf,
    mut latest: watch::Receiver<Option<(u64, Arc<Vec<u8>>)>>,
    persisted: watch::Sender<u64>,
) {
    while latest.changed().await.is_ok() {
        let Some((version, encoded)) = latest.borrow_and_update().clone() else {
            continue;
        };
        let target = path.clone();
        // Off the async runtime: fsync can take a while on a busy disk.
        let written =
            tokio::task::spawn_blocking(move || crate::snapshot_file::store(&target, &encoded))
                .await;
        match written {
            Ok(Ok(())) => {
                persisted.send_replace(version);
            }
            Ok(Err(err)) => {
                warn!(target: "ConfigStream", error = %err, path = %path.display(), "cannot persist the snapshot")
            }
            Err(err) => warn!(target: "ConfigStream", error = %err, "snapshot writer failed"),
        }
    }
}
