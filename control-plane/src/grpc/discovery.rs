//! Config discovery: streams the latest snapshot to each subscribed data plane, latest-wins,
//! and records each node's acknowledgements and rejections.

use std::pin::Pin;

use std::sync::Arc;

use gateway_proto::v1::{
    DiscoveryRequest, KeyUsageRequest, KeyUsageResponse, ReportUsageRequest, ReportUsageResponse,
    Snapshot, config_discovery_server::ConfigDiscovery, discovery_request::Kind,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::{
    snapshot::SnapshotRx,
    store::{Store, UsageFilter},
    usage::row_from_event,
};

/// Implementation of `ConfigDiscovery`.
#[derive(Debug, Clone)]
pub struct Discovery {
    snapshots: SnapshotRx,
    shutdown: CancellationToken,
    store: Store,
    ingested: Arc<watch::Sender<u64>>,
}

impl Discovery {
    /// Serves the snapshots published on `snapshots` until `shutdown`; reported usage goes
    /// to `store`.
    pub fn new(
        snapshots: SnapshotRx,
        shutdown: CancellationToken,
        store: Store,
        ingested: Arc<watch::Sender<u64>>,
    ) -> Self {
        Self {
            snapshots,
            shutdown,
            store,
            ingested,
        }
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<Snapshot, Status>> + Send>>;

#[tonic::async_trait]
impl ConfigDiscovery for Discovery {
    type StreamConfigStream = SnapshotStream;

    async fn key_usage(
        &self,
        request: Request<KeyUsageRequest>,
    ) -> Result<Response<KeyUsageResponse>, Status> {
        let r = request.into_inner();
        let limit = match r.limit {
            0 => 20,
            n => n.min(100),
        };
        let unavailable = |e: crate::store::StoreError| {
            warn!(error = %e, "key usage query failed");
            Status::unavailable("the ledger is unavailable; retry")
        };
        let user = self.store.get_user(r.user_id).await.map_err(unavailable)?;
        let events = self
            .store
            .list_usage(&UsageFilter {
                key_id: Some(r.key_id),
                limit: i64::from(limit),
                ..UsageFilter::default()
            })
            .await
            .map_err(unavailable)?;
        Ok(Response::new(KeyUsageResponse {
            balance_micros: user.balance_micros,
            events: events.into_iter().map(Into::into).collect(),
        }))
    }

    async fn report_usage(
        &self,
        request: Request<ReportUsageRequest>,
    ) -> Result<Response<ReportUsageResponse>, Status> {
        let events = request.into_inner().events;
        let mut rows = Vec::with_capacity(events.len());
        for event in events {
            let id = event.id.clone();
            match row_from_event(event) {
                Ok(row) => rows.push(row),
                Err(reason) => {
                    warn!(target: "UsageConsumer", event_id = %id, reason = %reason, "reported usage event moved to dead letters");
                    self.store
                        .dead_letter(&format!("report:{id}"), None, &reason)
                        .await
                        .map_err(|e| Status::unavailable(e.to_string()))?;
                }
            }
        }
        let outcome = self.store.ingest_usage(&rows).await.map_err(|e| {
            warn!(target: "UsageConsumer", error = %e, "ingesting reported usage failed");
            Status::unavailable("the ledger is unavailable; retry")
        })?;
        self.ingested.send_modify(|n| *n += outcome.inserted);
        Ok(Response::new(ReportUsageResponse {
            inserted: outcome.inserted,
        }))
    }

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
        tokio::spawn(async move {
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
