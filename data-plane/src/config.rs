//! Command-line flags and their environment twins, parsed into typed, validated values.

use std::{
    ffi::OsString,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

pub use gateway_telemetry::{LogFormat, TelemetryArgs};

use clap::{CommandFactory, FromArgMatches, Parser};
use gateway_proto::{DEFAULT_USAGE_STREAM, auth::Secret};

/// Data plane: the authenticating, routing, metering proxy for Codex traffic.
#[derive(Debug, Clone, Parser)]
#[command(name = "data-plane", version, about)]
pub struct Config {
    /// Address the proxy listens on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:12321")]
    pub listen_addr: SocketAddr,

    /// gRPC URL of the control plane's config discovery.
    #[arg(
        long,
        env = "CONTROL_PLANE_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub control_plane_url: String,

    /// Token this data plane presents to the control plane.
    #[arg(long, env = "DATA_PLANE_TOKEN")]
    pub data_plane_token: Secret,

    /// Redis URL of the usage stream. Without it, usage goes to the control plane's
    /// `ReportUsage` RPC (standalone).
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<Secret>,

    /// Redis stream usage events are published to.
    #[arg(long, env = "USAGE_STREAM", default_value = DEFAULT_USAGE_STREAM)]
    pub usage_stream: String,

    /// Name of this node in logs, usage events and the control plane's view.
    #[arg(long, env = "NODE_ID", default_value = "data-plane")]
    pub node_id: String,

    /// Largest accepted request body in bytes (Codex resends whole histories).
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Seconds a client may take to send a request head; also how long an idle keep-alive
    /// connection stays open.
    #[arg(long = "client-header-timeout-secs", env = "CLIENT_HEADER_TIMEOUT_SECS", default_value = "30", value_parser = parse_secs)]
    pub client_header_timeout: DurationSecs,

    /// Seconds a client may take to send its whole request body (408 after).
    #[arg(long = "client-body-timeout-secs", env = "CLIENT_BODY_TIMEOUT_SECS", default_value = "60", value_parser = parse_secs)]
    pub client_body_timeout: DurationSecs,

    /// Load balancers whose `X-Forwarded-For` is believed for key IP allow-lists
    /// (comma-separated CIDRs). Other peers are taken at their address.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// How long open streams may run on after a shutdown signal, in seconds.
    #[arg(long = "shutdown-grace-secs", env = "SHUTDOWN_GRACE_SECS", default_value = "30", value_parser = parse_secs)]
    pub shutdown_grace: DurationSecs,

    /// Directory of this data plane's state: its last good snapshot (`snapshot.bin`) and its
    /// usage spool (`usage.spool`). Created (mode 0700) if missing. Keep it on disk that
    /// survives a restart. Default: `$XDG_STATE_HOME/codex-gateway`, else
    /// `$HOME/.local/state/codex-gateway`, else `./codex-gateway-state`; the images and the
    /// Helm chart use `/var/lib/codex-gateway`.
    #[arg(long, env = "STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// The user's home and XDG state directory, for the default state directory.
    #[arg(long, env = "HOME", hide = true)]
    pub home: Option<PathBuf>,
    #[arg(long, env = "XDG_STATE_HOME", hide = true)]
    pub xdg_state_home: Option<PathBuf>,

    /// File that keeps the last good snapshot, so a restart while the control plane is
    /// unreachable still serves (default: `snapshot.bin` in the state directory). It holds
    /// upstream API keys: it is written with mode 0600.
    #[arg(long, env = "SNAPSHOT_PATH")]
    pub snapshot_path: Option<PathBuf>,

    /// File where usage events wait when the sink (Redis, or the control plane) does not
    /// answer; replayed in order once it does (default: `usage.spool` in the state directory).
    #[arg(long, env = "SPOOL_PATH")]
    pub spool_path: Option<PathBuf>,

    /// Threads that serve requests. Default: as many as the CPUs this process may use (its
    /// CPU affinity and its cgroup's CPU quota), so a container limited to one CPU runs one
    /// thread and never waits for a core it does not have. With one, the proxy runs on a
    /// single-threaded runtime.
    #[arg(long, env = "WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,

    /// Logs and traces.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
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

/// Where a data plane keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePaths {
    /// The state directory (created at start).
    pub dir: PathBuf,
    pub snapshot: PathBuf,
    pub spool: PathBuf,
}

impl Config {
    /// How many threads serve requests (see `--worker-threads`).
    pub fn worker_threads(&self) -> usize {
        self.worker_threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            usize::from,
        )
    }

    /// The state directory and the files in it, with every default applied. The default
    /// directory follows the XDG base-directory rules of the user running the binary
    /// (`HOME`, `XDG_STATE_HOME`).
    pub fn state_paths(&self) -> StatePaths {
        let dir = self.state_dir.clone().unwrap_or_else(|| {
            default_state_dir(self.xdg_state_home.as_deref(), self.home.as_deref())
        });
        StatePaths {
            snapshot: self
                .snapshot_path
                .clone()
                .unwrap_or_else(|| dir.join("snapshot.bin")),
            spool: self
                .spool_path
                .clone()
                .unwrap_or_else(|| dir.join("usage.spool")),
            dir,
        }
    }
}

/// `$XDG_STATE_HOME/codex-gateway`, else `$HOME/.local/state/codex-gateway`, else
/// `./codex-gateway-state` (relative values are ignored, as the XDG rules say).
fn default_state_dir(xdg_state_home: Option<&Path>, home: Option<&Path>) -> PathBuf {
    if let Some(state) = xdg_state_home.filter(|p| p.is_absolute()) {
        return state.join("codex-gateway");
    }
    if let Some(home) = home.filter(|p| p.is_absolute()) {
        return home.join(".local/state/codex-gateway");
    }
    PathBuf::from("codex-gateway-state")
}

/// The binary's command with every `env =` twin removed (the control plane's config does the
/// same).
fn embedded_command() -> clap::Command {
    Config::command().mut_args(|arg| arg.env(None))
}

/// A whole number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationSecs(pub Duration);

fn parse_secs(value: &str) -> Result<DurationSecs, String> {
    value
        .parse::<u64>()
        .map(|s| DurationSecs(Duration::from_secs(s)))
        .map_err(|_| format!("{value:?} is not a whole number of seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn worker_threads_default_to_the_usable_cpus_and_zero_is_refused() {
        let default = Config::from_flags(["--data-plane-token=t"]).unwrap();
        let usable = std::thread::available_parallelism().unwrap().get();
        assert_eq!(default.worker_threads(), usable);
        let one = Config::from_flags(["--data-plane-token=t", "--worker-threads=1"]).unwrap();
        assert_eq!(one.worker_threads(), 1);
        let err = Config::from_flags(["--data-plane-token=t", "--worker-threads=0"]).unwrap_err();
        assert!(err.to_string().contains("worker-threads"), "{err}");
    }

    #[test]
    fn flags_not_given_take_the_binary_defaults() {
        let config = Config::from_flags(["--data-plane-token=dp-token"]).unwrap();
        assert_eq!(config.listen_addr, "0.0.0.0:12321".parse().unwrap());
        assert_eq!(config.usage_stream, DEFAULT_USAGE_STREAM);
        assert_eq!(config.max_body_bytes, 32 * 1024 * 1024);
        assert_eq!(
            config.client_body_timeout,
            DurationSecs(Duration::from_secs(60))
        );
        assert!(config.redis_url.is_none());
        // With no flags the last good snapshot and the spool live in one state directory.
        let state = Config::from_flags(["--data-plane-token=t", "--state-dir=/srv/gw"])
            .unwrap()
            .state_paths();
        assert_eq!(
            state,
            StatePaths {
                dir: "/srv/gw".into(),
                snapshot: "/srv/gw/snapshot.bin".into(),
                spool: "/srv/gw/usage.spool".into(),
            }
        );
        let moved = Config::from_flags([
            "--data-plane-token=t",
            "--state-dir=/srv/gw",
            "--spool-path=/fast/usage.spool",
        ])
        .unwrap()
        .state_paths();
        assert_eq!(moved.spool, PathBuf::from("/fast/usage.spool"));
        assert_eq!(moved.snapshot, PathBuf::from("/srv/gw/snapshot.bin"));
        assert_eq!(config.telemetry.log_format, LogFormat::Json);

        let config = Config::from_flags([
            "--data-plane-token=dp-token",
            "--shutdown-grace-secs=5",
            "--trusted-proxies=10.0.0.0/8,127.0.0.1/32",
        ])
        .unwrap();
        assert_eq!(config.shutdown_grace, DurationSecs(Duration::from_secs(5)));
        assert_eq!(config.trusted_proxies.len(), 2);
    }

    #[test]
    fn the_default_state_dir_follows_xdg() {
        let os = |s: &'static str| Some(Path::new(s));
        assert_eq!(
            default_state_dir(os("/x/state"), os("/home/op")),
            PathBuf::from("/x/state/codex-gateway")
        );
        assert_eq!(
            default_state_dir(None, os("/home/op")),
            PathBuf::from("/home/op/.local/state/codex-gateway")
        );
        assert_eq!(
            default_state_dir(os("relative"), os("/home/op")),
            PathBuf::from("/home/op/.local/state/codex-gateway")
        );
        assert_eq!(
            default_state_dir(None, None),
            PathBuf::from("codex-gateway-state")
        );
    }

    #[test]
    fn embedded_parsing_validates_like_the_binary() {
        let err =
            Config::from_flags(["--data-plane-token=t", "--shutdown-grace-secs=soon"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }
}
