//! A stand-in control plane for the config stream, used where a test must send a data plane
//! snapshots the real control plane would never build (a bad ring checksum, a stale version).
//! It is a real gRPC server on port 0 speaking the real protocol.

use std::{net::SocketAddr, pin::Pin};

use gateway_proto::{
    digest::KeyDigest,
    ring::{self, Ring, RingMember},
    v1::{
        self, DiscoveryRequest, Snapshot,
        config_discovery_server::{ConfigDiscovery, ConfigDiscoveryServer},
        discovery_request::Kind,
    },
};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_stream::{
    Stream,
    wrappers::{ReceiverStream, TcpListenerStream},
};
use tonic::{Request, Response, Status, Streaming};

/// What a data plane answered about a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ack(u64),
    Nack(u64, String),
}

/// The fake control plane: snapshots pushed into `snapshots` go to the (single) subscriber.
#[derive(Debug)]
pub struct FakeControlPlane {
    pub addr: SocketAddr,
    pub snapshots: mpsc::Sender<Snapshot>,
    pub replies: mpsc::Receiver<Reply>,
}

struct Service {
    snapshots: std::sync::Mutex<Option<mpsc::Receiver<Snapshot>>>,
    replies: mpsc::Sender<Reply>,
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<Snapshot, Status>> + Send>>;

#[tonic::async_trait]
impl ConfigDiscovery for Service {
    type StreamConfigStream = SnapshotStream;

    async fn stream_config(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamConfigStream>, Status> {
        let snapshots = self
            .snapshots
            .lock()
            .expect("lock")
            .take()
            .ok_or_else(|| Status::unavailable("one subscriber only"))?;
        let mut inbound = request.into_inner();
        let replies = self.replies.clone();
        tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                let reply = match message.kind {
                    Some(Kind::Ack(a)) => Reply::Ack(a.version),
                    Some(Kind::Nack(n)) => Reply::Nack(n.version, n.reason),
                    _ => continue,
                };
                if replies.send(reply).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::map(
            ReceiverStream::new(snapshots),
            Ok,
        ))))
    }
}

impl FakeControlPlane {
    /// Starts the fake on 127.0.0.1, port 0 (no token check: it is not under test).
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
        let addr = listener.local_addr().expect("addr");
        let (snap_tx, snap_rx) = mpsc::channel(8);
        let (reply_tx, reply_rx) = mpsc::channel(8);
        let service = Service {
            snapshots: std::sync::Mutex::new(Some(snap_rx)),
            replies: reply_tx,
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ConfigDiscoveryServer::new(service))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        Self {
            addr,
            snapshots: snap_tx,
            replies: reply_rx,
        }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next reply from the data plane.
    pub async fn reply(&mut self) -> Reply {
        tokio::time::timeout(crate::EVENT_DEADLINE, self.replies.recv())
            .await
            .expect("data plane replies in time")
            .expect("stream open")
    }
}

/// A valid snapshot with one upstream at `base_url` and one user with one key per secret.
pub fn snapshot(version: u64, base_url: &str, secrets: &[&str]) -> Snapshot {
    let members = [RingMember { id: 1, weight: 1 }];
    let ring = Ring::new(7, members).expect("ring");
    Snapshot {
        version,
        upstreams: vec![v1::SnapshotUpstream {
            id: 1,
            name: "pool".into(),
            base_url: base_url.into(),
            api_key: "sk-upstream-pool".into(),
            priority: 0,
            weight: 1,
            max_retries: 0,
            timeout_ms: 5_000,
            healthy: true,
            models: vec![],
        }],
        keys: secrets
            .iter()
            .enumerate()
            .map(|(i, s)| v1::SnapshotKey {
                digest: KeyDigest::of_secret(s).as_bytes().to_vec(),
                id: i as i64 + 1,
                user_id: 1,
                ..Default::default()
            })
            .collect(),
        users: vec![v1::SnapshotUser {
            id: 1,
            balance_micros: 1_000_000,
            multiplier_ppm: 1_000_000,
        }],
        prices: vec![],
        rings: vec![v1::HashRing {
            priority: 0,
            algorithm: ring::ALGORITHM.into(),
            seed: 7,
            members: vec![v1::RingMember {
                upstream_id: 1,
                weight: 1,
            }],
            checksum: ring.checksum(),
        }],
        affinity: 0,
        built_at_ms: 0,
    }
}
