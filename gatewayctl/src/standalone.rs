//! `gatewayctl standalone`: a complete single-node gateway in one process, with no external
//! services — the control plane on an embedded SQLite file, its gRPC API on loopback, the data
//! plane on :12321, and usage delivered to the ledger over the `ReportUsage` RPC instead of
//! Redis. Tokens, the encryption key, the database and the last snapshot live in the data
//! directory, so everything survives a restart.

use std::{
    fs,
    future::Future,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::Args;
use control_plane::{
    ControlPlane,
    config::{Affinity, DEFAULT_RING_SEED},
    crypto::EncryptionKey,
};
use data_plane::{DataPlane, config::DurationSecs};
use gateway_proto::{DEFAULT_USAGE_STREAM, auth::Secret};
use rand::{Rng, distr::Alphanumeric};
use tokio::{net::TcpListener, sync::oneshot};

use crate::CliError;

/// `gatewayctl standalone`.
#[derive(Debug, Args)]
pub struct StandaloneArgs {
    /// Where the database, tokens, encryption key and last snapshot live
    /// (default: ~/.codex-gateway).
    #[arg(long, env = "GATEWAY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the gRPC admin API.
    #[arg(long, env = "GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// Address of the OpenAI-compatible endpoint.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:12321")]
    pub listen_addr: SocketAddr,
    /// Home directory, for the default data directory.
    #[arg(long, env = "HOME", hide = true)]
    pub home: Option<PathBuf>,
}

fn start_error(what: &str, err: impl std::fmt::Display) -> CliError {
    CliError::Usage(format!("{what}: {err}"))
}

/// A secret kept in `path` (mode 0600), created with `make` on first start.
fn persistent(path: &Path, make: impl FnOnce() -> String) -> Result<String, CliError> {
    match fs::read_to_string(path) {
        Ok(value) if !value.trim().is_empty() => return Ok(value.trim().to_owned()),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(start_error(&format!("cannot read {}", path.display()), err)),
    }
    let value = make();
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| start_error(&format!("cannot write {}", path.display()), e))?;
    writeln!(file, "{value}")
        .map_err(|e| start_error(&format!("cannot write {}", path.display()), e))?;
    Ok(value)
}

fn random_token() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect()
}

/// Runs the gateway until `shutdown`; `admin_token` overrides the one kept on disk.
pub async fn run(
    args: StandaloneArgs,
    admin_token: Option<Secret>,
    out: &mut (dyn Write + Send),
    shutdown: impl Future<Output = ()>,
) -> Result<(), CliError> {
    let dir = match (&args.data_dir, &args.home) {
        (Some(dir), _) => dir.clone(),
        (None, Some(home)) => home.join(".codex-gateway"),
        (None, None) => PathBuf::from(".codex-gateway"),
    };
    fs::create_dir_all(&dir)
        .map_err(|e| start_error(&format!("cannot create {}", dir.display()), e))?;
    let admin_token = match admin_token {
        Some(t) if !t.is_empty() => t,
        _ => Secret::new(persistent(&dir.join("admin-token"), random_token)?),
    };
    let data_plane_token = Secret::new(persistent(&dir.join("data-plane-token"), random_token)?);
    let encryption_key: EncryptionKey = persistent(&dir.join("encryption-key"), || {
        EncryptionKey::generate().to_hex()
    })?
    .parse()
    .map_err(|e: String| start_error("the stored encryption key is invalid", e))?;

    let grpc = TcpListener::bind(args.grpc_addr)
        .await
        .map_err(|e| start_error(&format!("cannot listen on {}", args.grpc_addr), e))?;
    let grpc_addr = grpc
        .local_addr()
        .map_err(|e| start_error("grpc address", e))?;
    let http = TcpListener::bind(args.listen_addr)
        .await
        .map_err(|e| start_error(&format!("cannot listen on {}", args.listen_addr), e))?;
    let http_addr = http
        .local_addr()
        .map_err(|e| start_error("listen address", e))?;

    let control_plane = ControlPlane::start(control_plane::Config {
        database_url: Secret::new(format!("sqlite://{}", dir.join("gateway.db").display())),
        redis_url: None,
        admin_token: admin_token.clone(),
        data_plane_token: data_plane_token.clone(),
        encryption_key,
        grpc_addr,
        usage_stream: DEFAULT_USAGE_STREAM.to_owned(),
        usage_group: "ledger".to_owned(),
        consumer_name: "standalone".to_owned(),
        usage_housekeeping_secs: 30,
        usage_stale_consumer_secs: 3600,
        affinity: Affinity::User,
        ring_seed: DEFAULT_RING_SEED,
        health_interval_ms: 15_000,
        health_timeout_ms: 5_000,
        health_unhealthy_after: 3,
        health_healthy_after: 2,
        metrics_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        migrate_only: false,
        telemetry: gateway_telemetry::TelemetryArgs::text(),
    })
    .await
    .map_err(|e| start_error("cannot start the control plane", format!("{e:#}")))?;
    let (cp_stop, cp_stopped) = oneshot::channel::<()>();
    let cp_task = tokio::spawn(control_plane.serve(grpc, async {
        let _ = cp_stopped.await;
    }));

    let data_plane = DataPlane::start(data_plane::Config {
        listen_addr: http_addr,
        control_plane_url: format!("http://{grpc_addr}"),
        data_plane_token,
        redis_url: None,
        usage_stream: DEFAULT_USAGE_STREAM.to_owned(),
        node_id: "standalone".to_owned(),
        max_body_bytes: 32 * 1024 * 1024,
        client_header_timeout: DurationSecs(Duration::from_secs(30)),
        client_body_timeout: DurationSecs(Duration::from_secs(60)),
        trusted_proxies: Vec::new(),
        shutdown_grace: DurationSecs(Duration::from_secs(30)),
        snapshot_path: Some(dir.join("snapshot.pb")),
        spool_path: dir.join("usage.spool"),
        telemetry: gateway_telemetry::TelemetryArgs::text(),
    })
    .await
    .map_err(|e| start_error("cannot start the data plane", format!("{e:#}")))?;
    let (dp_stop, dp_stopped) = oneshot::channel::<()>();
    let dp_task = tokio::spawn(data_plane.serve(http, async {
        let _ = dp_stopped.await;
    }));

    let endpoint_hint = if grpc_addr.to_string() == "127.0.0.1:50051" {
        String::new()
    } else {
        format!(" GATEWAY_ENDPOINT=http://{grpc_addr}")
    };
    let _ = writeln!(
        out,
        "Codex Gateway (standalone) is running.\n\
         \x20 OpenAI-compatible endpoint:  http://{http_addr}/v1\n\
         \x20 admin API (gRPC):            http://{grpc_addr}\n\
         \x20 data directory:              {}\n\
         \x20 admin token:                 {}\n\
         \n\
         Next, in another shell:\n\
         \x20 export GATEWAY_ADMIN_TOKEN={}{endpoint_hint}\n\
         \x20 gatewayctl upstream add --name pool --base-url https://pool.example.com/openai --api-key sk-...\n\
         \x20 gatewayctl user create --name me --balance 10.00\n\
         \x20 gatewayctl key create --user 1\n\
         \x20 gatewayctl price set --model '*' --input 1.25 --cached-input 0.125 --output 10\n\
         Then point Codex at http://{http_addr}/v1 with the key (see the README).",
        dir.display(),
        admin_token.expose(),
        admin_token.expose(),
    );
    let _ = out.flush();

    shutdown.await;
    // The data plane goes first: it drains open streams and flushes their usage to the
    // control plane, which must still be there to take it.
    let _ = dp_stop.send(());
    let dp_result = dp_task.await;
    let _ = cp_stop.send(());
    let cp_result = cp_task.await;
    for (what, result) in [("data plane", dp_result), ("control plane", cp_result)] {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(start_error(what, format!("{e:#}"))),
            Err(e) => return Err(start_error(what, e)),
        }
    }
    Ok(())
}
