//! Codex Gateway data plane: authenticates gateway keys against an in-memory snapshot, routes
//! each user to the same upstream by weighted consistent hashing, streams answers back
//! unbuffered and meters usage into a Redis stream.

pub mod admin;
pub mod config;
pub mod discovery;
mod json_scan;
pub mod metering;
pub mod metrics;
pub mod proxy;
pub mod routing;
pub mod snapshot;
pub mod snapshot_file;
pub mod sse;
pub mod upstream;

use std::{future::Future, pin::Pin, sync::Arc};

use anyhow::Context;
use arc_swap::ArcSwapOption;
use gateway_proto::auth::BearerAuth;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{
    net::TcpListener,
    sync::watch,
    task::{JoinHandle, JoinSet},
};
use tokio_util::sync::CancellationToken;
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};
use tracing::{debug, info, warn};

pub use config::Config;

use crate::{
    admin::Admin,
    discovery::Discovery,
    metering::spool::Spool,
    metering::{Drains, PublisherSettings, spawn_publisher},
    metrics::Metrics,
    proxy::{Proxy, ProxySettings},
};

/// Snapshots are megabytes: default 64 KiB HTTP/2 windows would stall them.
/// A future boxed by the crate that wrote it.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

const CONTROL_PLANE_WINDOW: u32 = 16 * 1024 * 1024;

/// The data plane's one channel to its control plane (config stream, usage reports, key
/// usage), with the data-plane token on every call. Connected on first use and re-established
/// by tonic after a failure.
pub type ControlPlane = InterceptedService<Channel, BearerAuth>;

fn control_plane_channel(config: &Config) -> anyhow::Result<ControlPlane> {
    let auth = BearerAuth::new(&config.data_plane_token)
        .context("DATA_PLANE_TOKEN cannot be sent as gRPC metadata")?;
    let channel = Endpoint::from_shared(config.control_plane_url.clone())
        .context("CONTROL_PLANE_URL is not a valid URL")?
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(std::time::Duration::from_secs(20))
        .keep_alive_timeout(std::time::Duration::from_secs(10))
        .initial_stream_window_size(CONTROL_PLANE_WINDOW)
        .initial_connection_window_size(CONTROL_PLANE_WINDOW)
        .connect_lazy();
    Ok(InterceptedService::new(channel, auth))
}

/// A started data plane: config stream and usage publisher running, not yet serving.
#[derive(Debug)]
pub struct DataPlane {
    config: Config,
    proxy: Proxy,
    admin: Arc<Admin>,
    drains: Drains,
    applied: watch::Receiver<u64>,
    persisted: watch::Receiver<u64>,
    discovery: JoinHandle<()>,
    discovery_cancel: CancellationToken,
    publisher: JoinHandle<()>,
    publisher_cancel: CancellationToken,
}

impl DataPlane {
    /// Starts following the control plane and the usage publisher.
    ///
    /// The future is boxed here, so its body is compiled once, in this crate, not again in
    /// every binary that awaits it (a cold release build's longest step otherwise).
    pub fn start(config: Config) -> BoxFuture<anyhow::Result<Self>> {
        Box::pin(Self::started(config, None))
    }

    /// [`DataPlane::start`], also serving `site`'s pages beside the API (standalone's console).
    pub fn start_with_site(config: Config, site: proxy::Site) -> BoxFuture<anyhow::Result<Self>> {
        Box::pin(Self::started(config, Some(site)))
    }

    async fn started(config: Config, site: Option<proxy::Site>) -> anyhow::Result<Self> {
        let table = Arc::new(ArcSwapOption::empty());
        let metrics = Arc::new(Metrics::new());
        let state = config.state_paths();
        create_state_dir(&state.dir)?;
        let channel = control_plane_channel(&config)?;
        let report = PublisherSettings::ControlPlane {
            channel: channel.clone(),
        };
        let publisher_cancel = CancellationToken::new();
        let (usage, publisher) =
            spawn_publisher(
                match &config.redis_url {
                    Some(url) => PublisherSettings::Redis {
                        url: url.expose().to_owned(),
                        stream: config.usage_stream.clone(),
                    },
                    None => report.clone(),
                },
                config.redis_url.is_some().then_some(report),
                publisher_cancel.clone(),
                metrics.clone(),
                Some(Spool::open(&state.spool).with_context(|| {
                    format!("opening the usage spool {}", state.spool.display())
                })?),
            );
        let drains = usage.drains().clone();
        let admin = Arc::new(Admin::new(table.clone(), metrics.clone()));
        let proxy = Proxy::new(
            table.clone(),
            usage,
            admin.clone(),
            ProxySettings {
                node_id: Arc::from(config.node_id.as_str()),
                max_body_bytes: config.max_body_bytes,
                body_timeout: config.client_body_timeout.0,
                trusted_proxies: config.trusted_proxies.clone(),
                metrics: metrics.clone(),
                control_plane: channel.clone(),
                site,
            },
        )
        .context("building the upstream HTTP client")?;
        let (discovery, applied) = Discovery::new(
            channel,
            config.node_id.clone(),
            table,
            state.snapshot.clone(),
            metrics,
        );
        let persisted = discovery.persisted_version();
        let discovery_cancel = CancellationToken::new();
        let discovery = tokio::spawn(discovery.run(discovery_cancel.clone()));
        Ok(Self {
            config,
            proxy,
            admin,
            drains,
            applied,
            persisted,
            discovery,
            discovery_cancel,
            publisher,
            publisher_cancel,
        })
    }

    /// The after-disconnect drains in progress (shutdown waits for them).
    pub fn drains(&self) -> Drains {
        self.drains.clone()
    }

    /// The version of the applied snapshot (0 until the first).
    pub fn applied_version(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    /// The version last written to `SNAPSHOT_PATH` (0 if none).
    pub fn persisted_version(&self) -> watch::Receiver<u64> {
        self.persisted.clone()
    }

    /// Serves HTTP on `listener` until `shutdown` resolves, then drains.
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
        info!(addr = %listener.local_addr()?, node = %self.config.node_id, "data plane serving HTTP");
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.config.client_header_timeout.0);
        let graceful = GracefulShutdown::new();
        // Every connection task is kept (and reaped as it ends), so those still open when the
        // grace period is over can be closed, and the metering of their streams runs before the
        // usage publisher stops. Aborting costs nothing per request, unlike a cancellation
        // future polled beside every connection.
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(err) => {
                            warn!(error = %err, "accept failed");
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let proxy = self.proxy.clone();
                    let service = hyper::service::service_fn(move |request| {
                        proxy.clone().handle(request, peer)
                    });
                    let builder = builder.clone();
                    let watcher = graceful.watcher();
                    let first_byte = self.config.client_header_timeout.0;
                    connections.spawn(async move {
                        // hyper's head timeout starts at the first byte: a client that connects
                        // and sends nothing is dropped here instead of holding a socket forever.
                        let mut probe = [0u8; 1];
                        if tokio::time::timeout(first_byte, stream.peek(&mut probe)).await.is_err() {
                            debug!(peer = %peer, "client sent nothing; closing");
                            return;
                        }
                        let connection = builder.serve_connection(TokioIo::new(stream), service);
                        if let Err(err) = watcher.watch(connection.into_owned()).await {
                            debug!(error = %err, "connection ended with an error");
                        }
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                () = &mut shutdown => break,
            }
        }

        // Shutdown, in order: not ready → stop accepting → let open streams finish within the
        // grace period → close what is left (its streams are billed as they drop) → let the
        // after-disconnect drains finish within the same grace period (past it they bill what
        // they read) → close the config stream → flush the usage queue → exit.
        self.admin.set_draining();
        drop(listener);
        let grace = self.config.shutdown_grace.0;
        let deadline = tokio::time::Instant::now() + grace;
        info!(grace_secs = grace.as_secs(), "draining open requests");
        if tokio::time::timeout_at(deadline, graceful.shutdown())
            .await
            .is_err()
        {
            warn!("grace period over; closing the remaining connections");
        }
        connections.abort_all();
        while connections.join_next().await.is_some() {}
        if !self.drains.is_empty() {
            info!(
                drains = self.drains.len(),
                "waiting for abandoned streams to report their usage"
            );
        }
        self.drains.finish(deadline).await;
        self.discovery_cancel.cancel();
        let _ = self.discovery.await;
        self.publisher_cancel.cancel();
        let _ = self.publisher.await;
        info!("data plane stopped");
        Ok(())
    }
}

/// Creates the state directory (0700: the snapshot in it holds upstream keys) if missing.
fn create_state_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating the state directory {} (STATE_DIR)", dir.display()))
}
