//! `data-plane` binary: parse configuration, start, serve until SIGTERM/SIGINT.

use anyhow::Context;
use clap::Parser;
use data_plane::{Config, DataPlane};
use tokio::net::TcpListener;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    // Sized to the CPUs the process may use: a runtime with more threads than cores only
    // makes them queue for one. One thread needs no work stealing at all.
    let threads = config.worker_threads();
    let mut runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    runtime
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let telemetry = gateway_telemetry::init(&config.telemetry, "codex-gateway-data-plane")?;
    tracing::info!(target: "ProxyHandler", worker_threads = config.worker_threads(), "runtime started");
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("binding LISTEN_ADDR {}", config.listen_addr))?;
    let data_plane = DataPlane::start(config).await?;
    let served = data_plane.serve(listener, shutdown_signal()).await;
    // Spans of the last requests go out before the process ends.
    drop(telemetry);
    served
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
