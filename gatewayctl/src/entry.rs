//! The `gatewayctl` binary's body, compiled here with the rest of the CLI (a binary crate
//! would compile every generic it instantiates again, the longest step of a cold build).

use std::{io::Write, process::ExitCode};

use clap::Parser;

use crate::Cli;

/// The `gatewayctl` binary: parse arguments, run one command, report errors on stderr.
#[tokio::main]
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, crate::Command::Standalone(_)) {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let mut stdout = std::io::stdout();
    match crate::run_until(cli, &mut stdout, shutdown_signal()).await {
        Ok(()) => {
            let _ = stdout.flush();
            ExitCode::SUCCESS
        }
        Err(err) => {
            let _ = stdout.flush();
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
