//! Config discovery: streams the latest snapshot to each subscribed data plane, latest-wins,
//! and records each node's acknowledgements and rejections.

use std::pin::Pin;

use gateway_proto::v1::{
    DiscoveryRequest, Snapshot, config_discovery_server::ConfigDiscovery, discovery_request::Kind,
};
use tokio::sync::mpsc;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::snapshot::SnapshotRx;

/// Implementation of `ConfigDiscovery`.
#[derive(Debug, Clone)]
pub struct Discovery {
    snapshots: SnapshotRx,
    shutdown: CancellationToken,
    /// Each subscriber's stream task, so shutdown can wait for them.
    tasks: TaskTracker,
}

impl Discovery {
    /// Serves the snapshots published on `snapshots` until `shutdown`, each subscriber's
    /// stream on `tasks`.
    pub fn new(snapshots: SnapshotRx, shutdown: CancellationToken, tasks: TaskTracker) -> Self {
        Self {
            snapshots,
            shutdown,
            tasks,
        }
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<Snapshot, Status>> + Send>>;

#[tonic::async_trait]
impl ConfigDiscovery for Discovery {
    type StreamConfigStream = SnapshotStream;

    async fn stream_config(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamConfigStream>, Status> {
        let mut inbound = request.into_inner();
        let subscribe = match inbound.message().await?.and_then(|m| m.kind) {
            Some(Kind::Subscribe(s)) => s,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message on the config stream must be subscribe",
                ));
            }
        };
        let node = subscribe.node_id;
        info!(target: "ConfigStream", node = %node, last_version = subscribe.last_version, "data plane subscribed");

        let (tx, rx) = mpsc::channel(1);
        let mut snapshots = self.snapshots.clone();
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            // The current snapshot goes out at once, then every newer one.
            snapshots.mark_changed();
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tx.closed() => break,
                    changed = snapshots.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let latest = snapshots.borrow_and_update().clone();
                        if let Some(snapshot) = latest {
                            debug!(target: "ConfigStream", node = %node, version = snapshot.version, "sending snapshot");
                            if tx.send(Ok(Snapshot::clone(&snapshot))).await.is_err() {
                                break;
                            }
                        }
                    }
                    message = inbound.message() => match message {
                        Ok(Some(DiscoveryRequest { kind: Some(Kind::Ack(ack)) })) => {
                            debug!(target: "ConfigStream", node = %node, version = ack.version, "snapshot acknowledged");
                        }
                        Ok(Some(DiscoveryRequest { kind: Some(Kind::Nack(nack)) })) => {
                            warn!(target: "ConfigStream", node = %node, version = nack.version, reason = %nack.reason, "snapshot rejected by data plane");
                        }
                        Ok(Some(_)) => {
                            warn!(target: "ConfigStream", node = %node, "unexpected message on config stream");
                        }
                        Ok(None) | Err(_) => break,
                    },
                }
            }
            info!(target: "ConfigStream", node = %node, "data plane unsubscribed");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
