//! `control-plane` binary: parse configuration, start, serve until SIGTERM/SIGINT.

use anyhow::Context;
use clap::Parser;
use control_plane::{Config, ControlPlane};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = gateway_telemetry::init(&config.telemetry, "codex-gateway-control-plane")?;
    if config.migrate_only {
        control_plane::store::Store::connect(config.database_url.expose())
            .await
            .context("migrating the database (DATABASE_URL)")?;
        tracing::info!("database migrations applied");
        return Ok(());
    }
    let listener = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding GRPC_ADDR {}", config.grpc_addr))?;
    let control_plane = ControlPlane::start(config).await?;
    let served = control_plane.serve(listener, shutdown_signal()).await;
    // Spans of the last batches go out before the process ends.
    drop(telemetry);
    served
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
