//! `gatewayctl`: the admin CLI over the control plane's gRPC API. Human tables by default;
//! `-o json` prints exactly one JSON document (an object for one item, an array for a list).
//!
//! One module per resource (and the audit log), each holding its commands' arguments beside their handlers. This
//! file keeps what every command shares: the top-level parser and its global flags, the
//! errors, the authenticated client, and the dispatch.

pub mod audit;
mod entry;
pub mod key;
mod output;
pub mod price;
pub mod standalone;
pub mod upstream;
pub mod usage;
pub mod user;

use std::io::Write;

use clap::{Parser, Subcommand};
use gateway_proto::{
    auth::{BearerAuth, Secret},
    v1::admin_service_client::AdminServiceClient,
};
use tonic::{
    Status,
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};

pub use crate::{entry::main, output::Output};

/// Admin CLI for Codex Gateway.
#[derive(Debug, Parser)]
#[command(name = "gatewayctl", version, about)]
pub struct Cli {
    /// Control plane gRPC endpoint.
    #[arg(
        long,
        global = true,
        env = "GATEWAY_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub endpoint: String,

    /// Admin token.
    #[arg(
        long,
        global = true,
        env = "GATEWAY_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<Secret>,

    /// Output format: `-o json` prints one JSON document for scripts. (`--output` and
    /// `--format` belong to `usage export`, so the long form is `--output-format`.)
    #[arg(short = 'o', long = "output-format", global = true, value_enum, default_value_t = Output::Table)]
    pub format: Output,

    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upstream account pools.
    #[command(subcommand)]
    Upstream(upstream::UpstreamCmd),
    /// Users and balances.
    #[command(subcommand)]
    User(user::UserCmd),
    /// Gateway keys.
    #[command(subcommand)]
    Key(key::KeyCmd),
    /// Model prices (per 1M tokens, in currency units).
    #[command(subcommand)]
    Price(price::PriceCmd),
    /// The usage ledger.
    #[command(subcommand)]
    Usage(usage::UsageCmd),
    /// Who changed what, and when.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Run a complete single-node gateway: control plane on embedded SQLite, data plane on
    /// 127.0.0.1:12321, admin API on 127.0.0.1:50051, no Postgres or Redis needed.
    Standalone(standalone::StandaloneArgs),
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the control plane at {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{}", describe(.0))]
    Rpc(#[from] Status),
    #[error("cannot write output: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot encode output: {0}")]
    Json(#[from] serde_json::Error),
}

fn describe(status: &Status) -> String {
    match status.code() {
        tonic::Code::Unauthenticated => format!(
            "{} (set --token or GATEWAY_ADMIN_TOKEN to the control plane's ADMIN_TOKEN)",
            status.message()
        ),
        tonic::Code::Unavailable if status.message().is_empty() => {
            "the control plane is unavailable".to_owned()
        }
        _ => status.message().to_owned(),
    }
}

/// The admin API, with the admin token (if one was given) on every call.
pub(crate) type Client = AdminServiceClient<InterceptedService<Channel, BearerAuth>>;

async fn connect(cli: &Cli) -> Result<Client, CliError> {
    let endpoint = Endpoint::from_shared(cli.endpoint.clone())
        .map_err(|_| CliError::Usage(format!("{:?} is not a valid endpoint URL", cli.endpoint)))?
        .connect_timeout(std::time::Duration::from_secs(5));
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| CliError::Connect {
            endpoint: cli.endpoint.clone(),
            source,
        })?;
    // Without a token the call still goes out: the control plane's refusal, with the hint
    // `describe` adds, tells the operator what to set.
    let auth =
        BearerAuth::optional(cli.token.as_ref()).map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(AdminServiceClient::with_interceptor(channel, auth))
}

/// Runs one command, writing its output to `out`. `standalone` runs until `shutdown`.
pub fn run_until<'a>(
    cli: Cli,
    out: &'a mut (dyn Write + Send),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), CliError>> + Send + 'a>> {
    // Boxed here so the whole CLI is compiled in this crate, once, not in the binary.
    Box::pin(run_until_boxed(cli, out, Box::pin(shutdown)))
}

async fn run_until_boxed(
    cli: Cli,
    out: &mut (dyn Write + Send),
    shutdown: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> Result<(), CliError> {
    match cli.command {
        Command::Standalone(args) => standalone::run(args, cli.token, out, shutdown).await,
        _ => run(cli, out).await,
    }
}

/// Runs one admin command, writing its output to `out`.
pub async fn run(cli: Cli, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    if matches!(cli.command, Command::Standalone(_)) {
        return Err(CliError::Usage(
            "standalone runs until stopped: use run_until".into(),
        ));
    }
    let mut client = connect(&cli).await?;
    let json = cli.format == Output::Json;
    match cli.command {
        Command::Upstream(cmd) => upstream::run(&mut client, cmd, json, out).await,
        Command::User(cmd) => user::run(&mut client, cmd, json, out).await,
        Command::Key(cmd) => key::run(&mut client, cmd, json, out).await,
        Command::Price(cmd) => price::run(&mut client, cmd, json, out).await,
        Command::Usage(cmd) => usage::run(&mut client, cmd, json, out).await,
        Command::Audit(cmd) => audit::run(&mut client, cmd, json, out).await,
        Command::Standalone(_) => Ok(()),
    }
}
