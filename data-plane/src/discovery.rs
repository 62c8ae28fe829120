//! The config stream: subscribes to the control plane, turns each snapshot into a routing
//! table, swaps it in only if it is valid and newer, and acknowledges or rejects every
//! version. Reconnects with jittered exponential backoff; while disconnected the last good
//! table keeps serving.

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwapOption;
use gateway_proto::{
    auth::Secret,
    v1::{
        Ack, DiscoveryRequest, Nack, Snapshot, Subscribe,
        config_discovery_client::ConfigDiscoveryClient, discovery_request::Kind,
    },
};
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, transport::Endpoint};
use tracing::{info, warn};

use crate::routing::{RoutingTable, SnapshotRejected};

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(15);

/// Why a config stream session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("invalid CONTROL_PLANE_URL: {0}")]
    Url(#[source] tonic::transport::Error),
    #[error("cannot connect to the control plane: {0}")]
    Connect(#[source] tonic::transport::Error),
    #[error("config stream failed: {0}")]
    Status(#[from] tonic::Status),
    #[error("DATA_PLANE_TOKEN cannot be sent as gRPC metadata")]
    Token,
}

/// Follows the control plane's snapshots into the shared routing table.
#[derive(Debug)]
pub struct Discovery {
    url: String,
    token: Secret,
    node_id: String,
    table: Arc<ArcSwapOption<RoutingTable>>,
    applied: watch::Sender<u64>,
}

impl Discovery {
    /// A follower publishing into `table`; the receiver reports the applied version.
    pub fn new(
        url: String,
        token: Secret,
        node_id: String,
        table: Arc<ArcSwapOption<RoutingTable>>,
    ) -> (Self, watch::Receiver<u64>) {
        let (applied, rx) = watch::channel(0);
        (
            Self {
                url,
                token,
                node_id,
                table,
                applied,
            },
            rx,
        )
    }

    /// Runs until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.session(&cancel).await {
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
        let channel = Endpoint::from_shared(self.url.clone())
            .map_err(SessionError::Url)?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .connect()
            .await
            .map_err(SessionError::Connect)?;
        let mut client = ConfigDiscoveryClient::new(channel);
        let (tx, rx) = mpsc::channel(8);
        let subscribe = DiscoveryRequest {
            kind: Some(Kind::Subscribe(Subscribe {
                node_id: self.node_id.clone(),
                last_version: *self.applied.borrow(),
            })),
        };
        // The receiver is alive until the request is sent, so this cannot fail.
        let _ = tx.send(subscribe).await;
        let mut request = Request::new(ReceiverStream::new(rx));
        request.metadata_mut().insert(
            "authorization",
            self.token.bearer().map_err(|_| SessionError::Token)?,
        );
        let mut inbound = client.stream_config(request).await?.into_inner();
        info!(target: "ConfigStream", url = %self.url, node = %self.node_id, "subscribed to the control plane");
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
        let table = RoutingTable::try_from(snapshot)?;
        let version = table.version;
        let keys = table.key_count();
        self.table.store(Some(Arc::new(table)));
        self.applied.send_replace(version);
        info!(target: "ConfigStream", version, keys, apply_us = started.elapsed().as_micros() as u64, "snapshot applied");
        Ok(())
    }
}
