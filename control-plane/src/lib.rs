//! Codex Gateway control plane: owns upstreams, users, keys and prices in Postgres, serves the
//! admin gRPC API, streams versioned snapshots to data planes, and turns the usage stream into
//! the ledger.

pub mod config;
pub mod console;
pub mod crypto;
pub mod grpc;
pub mod health;
pub mod metrics;
pub mod retention;
pub mod snapshot;
pub mod store;
pub mod usage;

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{net::TcpListener, sync::watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::info;

pub use config::Config;

use crate::{
    crypto::Cipher,
    health::{HealthChecker, HealthSettings, Prober, SharedProber},
    metrics::Metrics,
    retention::{RetentionSettings, UsageRetention},
    snapshot::{BuildSettings, SnapshotCache, SnapshotRx},
    store::Store,
    usage::{ConsumerSettings, UsageConsumer},
};

/// A future boxed by the crate that wrote it.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

const SNAPSHOT_WINDOW: u32 = 16 * 1024 * 1024;

/// A started control plane: store migrated, first snapshot built, background tasks running.
#[derive(Debug)]
pub struct ControlPlane {
    config: Config,
    store: Store,
    cipher: Cipher,
    cache: Arc<SnapshotCache>,
    ingested: Arc<watch::Sender<u64>>,
    health_leader: watch::Receiver<bool>,
    prober: SharedProber,
    metrics_addr: SocketAddr,
    console_addr: SocketAddr,
    console: Arc<console::Console>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl ControlPlane {
    /// Connects to Postgres (applying migrations), builds the first snapshot and starts the
    /// snapshot follower and the usage consumer.
    ///
    /// The future is boxed here, so its body is compiled once, in this crate, not again in
    /// every binary that awaits it (a cold release build's longest step otherwise).
    pub fn start(config: Config) -> BoxFuture<anyhow::Result<Self>> {
        Box::pin(Self::started(config))
    }

    async fn started(config: Config) -> anyhow::Result<Self> {
        let store = Store::connect(config.database_url.expose())
            .await
            .context("connecting to Postgres (DATABASE_URL)")?;
        let cipher = Cipher::new(&config.encryption_key);
        let cache = Arc::new(SnapshotCache::new(
            store.clone(),
            cipher.clone(),
            BuildSettings {
                ring_seed: config.ring_seed,
                affinity: config.affinity,
            },
        ));
        cache
            .refresh()
            .await
            .context("building the first snapshot (is ENCRYPTION_KEY the one the upstreams were stored with?)")?;

        let tasks = TaskTracker::new();
        let cancel = CancellationToken::new();
        tasks.spawn(cache.clone().run(cancel.clone()));
        tasks.spawn(snapshot::roll::run(store.clone(), cancel.clone()));
        let ingested = Arc::new(watch::Sender::new(0));
        let metrics = Arc::new(Metrics::new());
        metrics
            .migrations_applied
            .inc_by(store.migrations_applied());
        if let Some(redis_url) = &config.redis_url {
            let consumer = UsageConsumer::new(
                store.clone(),
                ConsumerSettings {
                    redis_url: redis_url.expose().to_owned(),
                    stream: config.usage_stream.clone(),
                    group: config.usage_group.clone(),
                    consumer: config.consumer_name.clone(),
                    housekeeping: Duration::from_secs(config.usage_housekeeping_secs.max(1)),
                    stale_consumer_after: Duration::from_secs(config.usage_stale_consumer_secs),
                },
                ingested.clone(),
                metrics.clone(),
            );
            tasks.spawn(consumer.run(cancel.clone()));
        }
        tasks.spawn(
            UsageRetention::new(
                store.clone(),
                RetentionSettings {
                    keep: config.usage_retention,
                    interval: Duration::from_secs(config.usage_retention_interval_secs),
                },
                metrics.clone(),
            )
            .run(cancel.clone()),
        );
        let prober = Arc::new(
            Prober::new(Duration::from_millis(config.health_timeout_ms))
                .context("building the health-check HTTP client")?,
        );
        let (checker, health_leader) = HealthChecker::new(
            store.clone(),
            cipher.clone(),
            Prober::clone(&prober),
            HealthSettings {
                interval: Duration::from_millis(config.health_interval_ms),
                timeout: Duration::from_millis(config.health_timeout_ms),
                unhealthy_after: config.health_unhealthy_after,
                healthy_after: config.health_healthy_after,
            },
        );
        tasks.spawn(checker.run(cancel.clone()));
        let metrics_listener = TcpListener::bind(config.metrics_addr)
            .await
            .with_context(|| format!("binding METRICS_ADDR {}", config.metrics_addr))?;
        let metrics_addr = metrics_listener.local_addr()?;
        tasks.spawn(metrics::serve(
            metrics_listener,
            metrics::Endpoints {
                metrics: metrics.clone(),
                snapshots: cache.subscribe(),
                leader: health_leader.clone(),
                ingested: ingested.subscribe(),
                store: store.clone(),
            },
            cancel.clone(),
        ));
        let console_listener = TcpListener::bind(config.console_addr)
            .await
            .with_context(|| format!("binding CONSOLE_ADDR {}", config.console_addr))?;
        let console_addr = console_listener.local_addr()?;
        let console = console::Console::new(
            grpc::Admin::new(store.clone(), cipher.clone(), prober.clone()),
            grpc::Usage::new(store.clone(), ingested.clone()),
            store.clone(),
            config.admin_token.clone(),
        );
        let console_cancel = cancel.clone();
        let served = console.clone();
        tasks.spawn(async move {
            if let Err(e) = console::serve(console_listener, served, console_cancel).await {
                tracing::error!(error = %e, "the console server failed");
            }
        });
        Ok(Self {
            config,
            store,
            cipher,
            cache,
            ingested,
            health_leader,
            prober,
            metrics_addr,
            console_addr,
            console,
            tasks,
            cancel,
        })
    }

    /// Count of usage events written to the ledger by this process.
    pub fn ingested(&self) -> watch::Receiver<u64> {
        self.ingested.subscribe()
    }

    /// Where the web console is served.
    pub fn console_addr(&self) -> SocketAddr {
        self.console_addr
    }

    /// The console, to serve on another server's port too (standalone's data plane).
    pub fn console(&self) -> Arc<console::Console> {
        self.console.clone()
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Whether this replica currently runs the health checks.
    pub fn health_leader(&self) -> watch::Receiver<bool> {
        self.health_leader.clone()
    }

    /// The published snapshots.
    pub fn snapshots(&self) -> SnapshotRx {
        self.cache.subscribe()
    }

    /// Serves gRPC on `listener` until `shutdown` resolves.
    ///
    /// Shutdown order: config streams and background tasks are told to stop first (so open
    /// streams do not hold the server), then the server stops accepting and drains in-flight
    /// calls, then the usage consumer finishes its current batch and everything is awaited.
    pub fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> BoxFuture<anyhow::Result<()>> {
        // Boxed here, like `start`: the server is compiled once, in this crate.
        Box::pin(self.serve_until(listener, Box::pin(shutdown)))
    }

    async fn serve_until(
        self,
        listener: TcpListener,
        shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> anyhow::Result<()> {
        let routes = grpc::routes(
            grpc::Admin::new(self.store.clone(), self.cipher.clone(), self.prober.clone()),
            grpc::Discovery::new(
                self.cache.subscribe(),
                self.cancel.clone(),
                self.tasks.clone(),
            ),
            grpc::Usage::new(self.store.clone(), self.ingested.clone()),
            self.config.admin_token.clone(),
            self.config.data_plane_token.clone(),
        )
        .await?;
        info!(addr = %listener.local_addr()?, "control plane serving gRPC");
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let cancel = self.cancel.clone();
        let result = tonic::transport::Server::builder()
            // Snapshots are megabytes: default 64 KiB HTTP/2 windows would stall them.
            .initial_stream_window_size(SNAPSHOT_WINDOW)
            .initial_connection_window_size(SNAPSHOT_WINDOW)
            .add_routes(routes)
            // Without TCP_NODELAY a small answer waits on the peer's delayed ACK: 40 ms a call.
            .serve_with_incoming_shutdown(incoming, async move {
                shutdown.await;
                cancel.cancel();
            })
            .await;
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        info!("control plane stopped");
        result.context("gRPC server failed")
    }
}
