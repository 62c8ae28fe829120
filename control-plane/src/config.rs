//! Command-line flags and their environment twins, parsed into typed, validated values.

use std::{ffi::OsString, net::SocketAddr};

pub use gateway_telemetry::{LogFormat, TelemetryArgs};

use clap::{CommandFactory, FromArgMatches, Parser};
use gateway_proto::{DEFAULT_USAGE_STREAM, auth::Secret};

use crate::crypto::EncryptionKey;

/// Control plane: admin gRPC API, config discovery, usage ledger.
#[derive(Debug, Clone, Parser)]
#[command(name = "control-plane", version, about)]
pub struct Config {
    /// Postgres URL of the source of truth.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Secret,

    /// Redis URL of the usage stream. Without it, usage arrives only over the `ReportUsage`
    /// RPC (standalone).
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<Secret>,

    /// Token that admin callers (gatewayctl) present as `Bearer`.
    #[arg(long, env = "ADMIN_TOKEN", value_parser = parse_token)]
    pub admin_token: Secret,

    /// Token that data planes present to subscribe to config.
    #[arg(long, env = "DATA_PLANE_TOKEN", value_parser = parse_token)]
    pub data_plane_token: Secret,

    /// 32-byte key (64 hex characters) that encrypts upstream API keys at rest.
    /// Generate one with `openssl rand -hex 32`.
    #[arg(long, env = "ENCRYPTION_KEY")]
    pub encryption_key: EncryptionKey,

    /// Address of the gRPC server (admin API and config discovery).
    #[arg(long, env = "GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,

    /// Address of the HTTP server for `/metrics` (Prometheus), `/healthz` and `/readyz`.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,

    /// Address of the web console (`/admin/`): sign in with the admin token.
    #[arg(long, env = "CONSOLE_ADDR", default_value = "0.0.0.0:8080")]
    pub console_addr: SocketAddr,

    /// Apply the database migrations and exit (a deployment's migration step).
    #[arg(long, env = "MIGRATE_ONLY")]
    pub migrate_only: bool,

    /// Redis stream that data planes publish usage events to.
    #[arg(long, env = "USAGE_STREAM", default_value = DEFAULT_USAGE_STREAM)]
    pub usage_stream: String,

    /// Consumer group of the usage ledger on that stream.
    #[arg(long, env = "USAGE_GROUP", default_value = "ledger")]
    pub usage_group: String,

    /// Name of this replica within the consumer group; keep it stable across restarts so
    /// the replica resumes its own pending entries.
    #[arg(long, env = "CONSUMER_NAME", default_value = "control-plane")]
    pub consumer_name: String,

    /// Seconds between housekeeping rounds of the usage consumer: claiming entries of dead
    /// consumers and trimming the stream below what every group acknowledged.
    #[arg(long, env = "USAGE_HOUSEKEEPING_SECS", default_value_t = 30)]
    pub usage_housekeeping_secs: u64,

    /// Seconds a consumer of the ledger's group may sit idle with nothing pending before
    /// housekeeping deletes it (replicas named after pods leave one behind per rollout).
    #[arg(long, env = "USAGE_STALE_CONSUMER_SECS", default_value_t = 3600)]
    pub usage_stale_consumer_secs: u64,

    /// Days raw usage events are kept in the ledger, or `never` to keep them forever. Older
    /// events are deleted in small batches by one replica at a time; the per-hour and per-day
    /// rollups that summaries, spending caps and dashboards read are kept.
    #[arg(long = "usage-retention-days", env = "USAGE_RETENTION_DAYS", default_value = "90", value_parser = parse_retention)]
    pub usage_retention: Retention,

    /// Seconds between usage retention passes.
    #[arg(long, env = "USAGE_RETENTION_INTERVAL_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub usage_retention_interval_secs: u64,

    /// What keeps a client on the same upstream: the user, or the user and session.
    #[arg(long, env = "AFFINITY", value_enum, default_value_t = Affinity::User)]
    pub affinity: Affinity,

    /// Seed of the hash rings. Changing it reshuffles every user: leave it alone.
    #[arg(long, env = "RING_SEED", default_value_t = DEFAULT_RING_SEED)]
    pub ring_seed: u64,

    /// Milliseconds between active health-check rounds; 0 disables them.
    #[arg(long, env = "HEALTH_INTERVAL_MS", default_value_t = 15_000)]
    pub health_interval_ms: u64,

    /// Milliseconds one health probe may take.
    #[arg(long, env = "HEALTH_TIMEOUT_MS", default_value_t = 5_000)]
    pub health_timeout_ms: u64,

    /// Consecutive failed probes that mark an upstream unhealthy.
    #[arg(long, env = "HEALTH_UNHEALTHY_AFTER", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub health_unhealthy_after: u32,

    /// Consecutive good probes that mark an unhealthy upstream healthy again.
    #[arg(long, env = "HEALTH_HEALTHY_AFTER", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub health_healthy_after: u32,

    /// Logs and traces.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// How long raw usage events are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    Days(std::num::NonZeroU32),
    Never,
}

fn parse_retention(text: &str) -> Result<Retention, String> {
    if text == "never" {
        return Ok(Retention::Never);
    }
    text.parse::<std::num::NonZeroU32>()
        .map(Retention::Days)
        .map_err(|_| format!("{text:?} is not a number of days (1 or more) or `never`"))
}

impl Config {
    /// Parses `flags` (the command line without the program name) exactly as the binary
    /// does, except that no value comes from the environment. Every flag not given takes the
    /// binary's default, so an embedder (`gatewayctl standalone`, the test harness) passes
    /// only what it must set and never restates a default; a stray `GRPC_ADDR` or
    /// `DATABASE_URL` in the embedding process cannot change what it asked for.
    pub fn from_flags<I, T>(flags: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let mut command = embedded_command();
        let program = OsString::from(command.get_name());
        let argv = std::iter::once(program).chain(flags.into_iter().map(Into::into));
        let mut matches = command.try_get_matches_from_mut(argv)?;
        Self::from_arg_matches_mut(&mut matches).map_err(|err| err.format(&mut command))
    }
}

/// The binary's command with every `env =` twin removed (the data plane's config does the
/// same).
fn embedded_command() -> clap::Command {
    Config::command().mut_args(|arg| arg.env(None))
}

/// Default ring seed ("codexgw!").
pub const DEFAULT_RING_SEED: u64 = 0x636f_6465_7867_7721;

/// Affinity key used by data planes: the wire's own enum (`user`, `user-session`).
pub use gateway_proto::v1::AffinityMode as Affinity;

fn parse_token(value: &str) -> Result<Secret, String> {
    if value.len() < 16 {
        return Err(
            "must be at least 16 characters (generate one with `openssl rand -hex 24`)".into(),
        );
    }
    Ok(Secret::new(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn required() -> Vec<String> {
        vec![
            "--database-url=postgres://localhost/gateway".into(),
            "--admin-token=admin-token-0123456789".into(),
            "--data-plane-token=dp-token-0123456789".into(),
            format!("--encryption-key={}", "ab".repeat(32)),
        ]
    }

    #[test]
    fn embedded_parsing_reads_no_environment() {
        assert!(
            Config::command()
                .get_arguments()
                .any(|a| a.get_env().is_some())
        );
        assert!(
            embedded_command()
                .get_arguments()
                .all(|a| a.get_env().is_none())
        );
    }

    #[test]
    fn flags_not_given_take_the_binary_defaults() {
        let config = Config::from_flags(required()).unwrap();
        assert_eq!(config.grpc_addr, "0.0.0.0:50051".parse().unwrap());
        assert_eq!(config.usage_group, "ledger");
        assert_eq!(config.ring_seed, DEFAULT_RING_SEED);
        assert_eq!(config.affinity, Affinity::User);
        assert!(config.redis_url.is_none());
        assert!(!config.migrate_only);
        assert_eq!(config.telemetry.log_format, LogFormat::Json);
        assert_eq!(
            config.usage_retention,
            Retention::Days(std::num::NonZeroU32::new(90).unwrap())
        );

        let mut flags = required();
        flags.push("--usage-retention-days=never".into());
        assert_eq!(
            Config::from_flags(flags).unwrap().usage_retention,
            Retention::Never
        );
        for bad in ["0", "-1", "forever"] {
            let mut flags = required();
            flags.push(format!("--usage-retention-days={bad}"));
            let err = Config::from_flags(flags).unwrap_err().to_string();
            assert!(err.contains("or `never`"), "{bad}: {err}");
        }

        let mut flags = required();
        flags.push("--grpc-addr=127.0.0.1:0".into());
        let config = Config::from_flags(flags).unwrap();
        assert_eq!(config.grpc_addr, "127.0.0.1:0".parse().unwrap());
    }

    #[test]
    fn embedded_parsing_validates_like_the_binary() {
        let mut flags = required();
        flags[1] = "--admin-token=short".into();
        let err = Config::from_flags(flags).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        let err = Config::from_flags(["--grpc-addr=127.0.0.1:0"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }
}
