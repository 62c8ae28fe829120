//! `gatewayctl standalone`: a complete single-node gateway in one process, with no external
//! services — the control plane on an embedded SQLite file, its gRPC API on loopback, the data
//! plane on :12321, and usage delivered to the ledger over the `ReportUsage` RPC instead of
//! Redis. Tokens, the encryption key, the database and the last snapshot live in the data
//! directory, so everything survives a restart.

use std::{
    ffi::{OsStr, OsString},
    fs,
    future::Future,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use clap::{
    Args,
    error::{ContextKind, ContextValue},
};
use control_plane::{ControlPlane, crypto::EncryptionKey};
use data_plane::DataPlane;
use gateway_proto::auth::Secret;
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

/// Both planes' configs, parsed from their own flags as their binaries parse them: every
/// value not set here is the default the binary documents. Only what one loopback node needs
/// differs — SQLite in the data directory, no Redis (usage goes over `ReportUsage`), the
/// listeners standalone bound, metrics on an ephemeral loopback port, human-readable logs.
fn plane_configs(
    dir: &Path,
    admin_token: &Secret,
    data_plane_token: &Secret,
    encryption_key: &EncryptionKey,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
) -> Result<(control_plane::Config, data_plane::Config), CliError> {
    let control_plane = control_plane::Config::from_flags([
        flag(
            "database-url",
            format!("sqlite://{}", dir.join("gateway.db").display()),
        ),
        flag("admin-token", admin_token.expose()),
        flag("data-plane-token", data_plane_token.expose()),
        flag("encryption-key", encryption_key.to_hex()),
        flag("grpc-addr", grpc_addr.to_string()),
        flag("consumer-name", "standalone"),
        flag("metrics-addr", "127.0.0.1:0"),
        // The console is served on the data plane's port (below); its own listener stays on
        // loopback.
        flag("console-addr", "127.0.0.1:0"),
        flag("log-format", "text"),
    ])
    .map_err(|e| refused("control plane", &e))?;
    let data_plane = data_plane::Config::from_flags([
        flag("listen-addr", http_addr.to_string()),
        flag("control-plane-url", format!("http://{grpc_addr}")),
        flag("data-plane-token", data_plane_token.expose()),
        flag("node-id", "standalone"),
        flag("state-dir", dir),
        flag("log-format", "text"),
    ])
    .map_err(|e| refused("data plane", &e))?;
    Ok((control_plane, data_plane))
}

/// `--name=value`: with the `=`, a value that starts with `-` is still a value.
fn flag(name: &str, value: impl AsRef<OsStr>) -> OsString {
    let mut flag = OsString::from(format!("--{name}="));
    flag.push(value);
    flag
}

/// A plane refused a setting: name the flag and the reason, never the value (it may be a
/// token).
fn refused(plane: &str, err: &clap::Error) -> CliError {
    let flag = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(flag)) => flag.as_str(),
        _ => "a setting",
    };
    let reason =
        std::error::Error::source(err).map_or_else(|| err.kind().to_string(), ToString::to_string);
    // The admin token is the one of these values a person hands standalone: say where from.
    let origin = if flag.starts_with("--admin-token") {
        " (standalone's admin token comes from --token, GATEWAY_ADMIN_TOKEN or \
         the data directory's admin-token file)"
    } else {
        ""
    };
    CliError::Usage(format!("the {plane} refuses {flag}: {reason}{origin}"))
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

    let (control_plane_config, data_plane_config) = plane_configs(
        &dir,
        &admin_token,
        &data_plane_token,
        &encryption_key,
        grpc_addr,
        http_addr,
    )?;
    let control_plane = ControlPlane::start(control_plane_config)
        .await
        .map_err(|e| start_error("cannot start the control plane", format!("{e:#}")))?;
    let console = control_plane.console();
    let (cp_stop, cp_stopped) = oneshot::channel::<()>();
    let cp_task = tokio::spawn(control_plane.serve(grpc, async {
        let _ = cp_stopped.await;
    }));

    let site = data_plane::proxy::Site::new(move |request, peer| {
        control_plane::console::answer(&console, request, peer)
    });
    let data_plane = DataPlane::start_with_site(data_plane_config, site)
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
         \x20 web console:                 http://{http_addr}/admin/  (sign in with the admin token)\n\
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

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(admin_token: &str) -> Result<(control_plane::Config, data_plane::Config), CliError> {
        plane_configs(
            Path::new("/var/lib/gw"),
            &Secret::new(admin_token),
            &Secret::new("dp-token-0123456789abcdef"),
            &EncryptionKey::generate(),
            "127.0.0.1:50051".parse().unwrap(),
            "127.0.0.1:12321".parse().unwrap(),
        )
    }

    #[test]
    fn one_loopback_node_without_redis_keeps_its_state_in_the_data_directory() {
        let (cp, dp) = configs("admin-token-0123456789").unwrap();
        assert_eq!(cp.database_url.expose(), "sqlite:///var/lib/gw/gateway.db");
        assert!(cp.redis_url.is_none() && dp.redis_url.is_none());
        assert_eq!(cp.admin_token.expose(), "admin-token-0123456789");
        assert_eq!(cp.data_plane_token, dp.data_plane_token);
        assert_eq!(cp.metrics_addr, "127.0.0.1:0".parse().unwrap());
        assert_eq!(cp.usage_stream, dp.usage_stream);
        assert_eq!(dp.control_plane_url, "http://127.0.0.1:50051");
        assert_eq!(dp.listen_addr, "127.0.0.1:12321".parse().unwrap());
        let state = dp.state_paths();
        assert_eq!(state.snapshot, Path::new("/var/lib/gw/snapshot.bin"));
        assert_eq!(state.spool, Path::new("/var/lib/gw/usage.spool"));
        assert_eq!(cp.telemetry.log_format, gateway_telemetry::LogFormat::Text);
        assert_eq!(dp.telemetry.log_format, gateway_telemetry::LogFormat::Text);
    }

    #[test]
    fn a_refused_token_is_named_but_never_shown() {
        let err = configs("hunter2").unwrap_err().to_string();
        assert!(err.contains("--admin-token"), "{err}");
        assert!(err.contains("at least 16 characters"), "{err}");
        assert!(err.contains("GATEWAY_ADMIN_TOKEN"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
