//! `gatewayctl`: the admin CLI over the control plane's gRPC API. Human tables by default;
//! `-o json` prints exactly one JSON document (an object for one item, an array for a list).

pub mod money;
pub mod standalone;
mod table;

use std::io::Write;

use clap::{Args, Parser, Subcommand, ValueEnum};
use gateway_proto::{
    auth::Secret,
    v1::{self, admin_service_client::AdminServiceClient},
};
use serde::Serialize;
use tonic::{
    Request, Status,
    metadata::AsciiMetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

use crate::{
    money::{format_amount, parse_amount},
    table::{Table, write_fields},
};

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

    /// Output format: `-o json` prints one JSON document for scripts. (`--output` is taken
    /// by `price set`, so the long form is `--format`.)
    #[arg(short = 'o', long = "format", global = true, value_enum, default_value_t = Output::Table)]
    pub format: Output,

    #[command(subcommand)]
    pub command: Command,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// One JSON document for scripts.
    Json,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upstream account pools.
    #[command(subcommand)]
    Upstream(UpstreamCmd),
    /// Users and balances.
    #[command(subcommand)]
    User(UserCmd),
    /// Gateway keys.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Model prices (per 1M tokens, in currency units).
    #[command(subcommand)]
    Price(PriceCmd),
    /// The usage ledger.
    #[command(subcommand)]
    Usage(UsageCmd),
    /// Run a complete single-node gateway: control plane on embedded SQLite, data plane on
    /// 127.0.0.1:12321, admin API on 127.0.0.1:50051, no Postgres or Redis needed.
    Standalone(standalone::StandaloneArgs),
}

/// Upstream commands.
#[derive(Debug, Subcommand)]
pub enum UpstreamCmd {
    /// Add an upstream.
    Add(UpstreamAdd),
    /// List upstreams.
    List,
    /// Show one upstream.
    Get { id: i64 },
    /// Change an upstream's settings.
    Update(UpstreamUpdate),
    /// Route traffic to an upstream again.
    Enable { id: i64 },
    /// Stop routing traffic to an upstream (its users move to their next choice).
    Disable { id: i64 },
    /// Delete an upstream.
    Delete { id: i64 },
    /// Run one health probe now and show status, latency and error.
    Test { id: i64 },
}

/// `upstream add`.
#[derive(Debug, Args)]
pub struct UpstreamAdd {
    #[arg(long)]
    pub name: String,
    /// Base URL without `/v1` (e.g. https://pool.example.com/openai).
    #[arg(long)]
    pub base_url: String,
    /// The upstream's API key (write-only: never shown again).
    #[arg(long)]
    pub api_key: String,
    /// Priority tier: lower number = preferred, 0 is the best tier.
    #[arg(long, default_value_t = 0)]
    pub priority: i32,
    /// Relative share of users within its tier.
    #[arg(long, default_value_t = 1)]
    pub weight: u32,
    /// Retries on this upstream before failing over.
    #[arg(long, default_value_t = 3)]
    pub max_retries: u32,
    /// Seconds to wait for the response head and between stream chunks.
    #[arg(long, default_value_t = 120)]
    pub timeout: u32,
    /// Create it disabled.
    #[arg(long)]
    pub disabled: bool,
    /// Path probed by active health checks (default /v1/models; '' disables them).
    #[arg(long)]
    pub probe_path: Option<String>,
}

/// `upstream update`.
#[derive(Debug, Args)]
pub struct UpstreamUpdate {
    pub id: i64,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub base_url: Option<String>,
    #[arg(long)]
    pub api_key: Option<String>,
    /// Priority tier: lower number = preferred, 0 is the best tier.
    #[arg(long)]
    pub priority: Option<i32>,
    #[arg(long)]
    pub weight: Option<u32>,
    #[arg(long)]
    pub max_retries: Option<u32>,
    /// Seconds.
    #[arg(long)]
    pub timeout: Option<u32>,
    /// Path probed by active health checks ('' disables them).
    #[arg(long)]
    pub probe_path: Option<String>,
}

/// User commands.
#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create a user.
    Create {
        #[arg(long)]
        name: String,
        /// Initial balance in currency units (e.g. 10.00).
        #[arg(long, default_value = "0")]
        balance: String,
        /// Price multiplier (e.g. 1.5).
        #[arg(long)]
        multiplier: Option<String>,
    },
    /// List users.
    List,
    /// Show one user.
    Get { id: i64 },
    /// Rename a user or change their price multiplier.
    Update {
        id: i64,
        #[arg(long)]
        name: Option<String>,
        /// Price multiplier (e.g. 1.5).
        #[arg(long)]
        multiplier: Option<String>,
    },
    /// Add to a user's balance (currency units, e.g. 10.00).
    Topup {
        id: i64,
        amount: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// Key commands.
#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Create a key; prints its secret once.
    Create {
        #[arg(long)]
        user: i64,
        #[arg(long, default_value = "")]
        name: String,
        /// Expiry, RFC 3339 (e.g. 2027-01-31T00:00:00Z).
        #[arg(long)]
        expires: Option<String>,
        /// Allowed models, comma-separated (default: all).
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Allowed client IPs or CIDR blocks, comma-separated (default: all).
        #[arg(long, value_delimiter = ',')]
        ip_allow: Vec<String>,
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<u32>,
        /// Concurrent streams.
        #[arg(long)]
        concurrency: Option<u32>,
    },
    /// List keys.
    List {
        #[arg(long)]
        user: Option<i64>,
    },
    /// Revoke a key (refused fleet-wide within a second).
    Revoke { id: i64 },
    /// Change a key's limits.
    Update(KeyUpdate),
}

/// `key update`.
#[derive(Debug, Args)]
pub struct KeyUpdate {
    pub id: i64,
    #[arg(long)]
    pub name: Option<String>,
    /// New expiry, RFC 3339.
    #[arg(long, conflicts_with = "no_expiry")]
    pub expires: Option<String>,
    /// Remove the expiry.
    #[arg(long)]
    pub no_expiry: bool,
    /// Allowed models, comma-separated.
    #[arg(long, value_delimiter = ',', conflicts_with = "all_models")]
    pub models: Option<Vec<String>>,
    /// Allow every model.
    #[arg(long)]
    pub all_models: bool,
    /// Allowed client IPs or CIDR blocks, comma-separated.
    #[arg(long, value_delimiter = ',', conflicts_with = "any_ip")]
    pub ip_allow: Option<Vec<String>>,
    /// Allow every client address.
    #[arg(long)]
    pub any_ip: bool,
    /// Requests per minute (0 = unlimited).
    #[arg(long)]
    pub rpm: Option<u32>,
    /// Concurrent streams (0 = unlimited).
    #[arg(long)]
    pub concurrency: Option<u32>,
}

/// Price commands.
#[derive(Debug, Subcommand)]
pub enum PriceCmd {
    /// Set a model's price per 1M tokens (`--model '*'` is the default).
    Set {
        #[arg(long)]
        model: String,
        #[arg(long)]
        input: String,
        #[arg(long)]
        cached_input: String,
        #[arg(long)]
        output: String,
    },
    /// List prices.
    List,
}

/// Usage commands.
#[derive(Debug, Subcommand)]
pub enum UsageCmd {
    /// Usage events, newest first.
    List {
        #[arg(long)]
        user: Option<i64>,
        #[arg(long)]
        key: Option<i64>,
        #[arg(long)]
        upstream: Option<i64>,
        #[arg(long)]
        model: Option<String>,
        /// RFC 3339.
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339, exclusive.
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Totals grouped by user, model, upstream or UTC day.
    Summary {
        #[arg(long, value_enum, default_value_t = SummaryBy::User)]
        by: SummaryBy,
        #[arg(long)]
        user: Option<i64>,
        #[arg(long)]
        key: Option<i64>,
        #[arg(long)]
        upstream: Option<i64>,
        #[arg(long)]
        model: Option<String>,
        /// RFC 3339.
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339.
        #[arg(long)]
        until: Option<String>,
    },
}

/// Grouping of `usage summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SummaryBy {
    User,
    Model,
    Upstream,
    Day,
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

#[derive(Clone)]
struct Bearer(Option<AsciiMetadataValue>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Client = AdminServiceClient<InterceptedService<Channel, Bearer>>;

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
    let bearer = match &cli.token {
        Some(t) => Some(t.bearer().map_err(|e| CliError::Usage(e.to_string()))?),
        None => None,
    };
    Ok(AdminServiceClient::with_interceptor(
        channel,
        Bearer(bearer),
    ))
}

/// Runs one command, writing its output to `out`. `standalone` runs until `shutdown`.
pub async fn run_until(
    cli: Cli,
    out: &mut (dyn Write + Send),
    shutdown: impl std::future::Future<Output = ()>,
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
        Command::Upstream(cmd) => upstream(&mut client, cmd, json, out).await,
        Command::User(cmd) => user(&mut client, cmd, json, out).await,
        Command::Key(cmd) => key(&mut client, cmd, json, out).await,
        Command::Price(cmd) => price(&mut client, cmd, json, out).await,
        Command::Usage(cmd) => usage(&mut client, cmd, json, out).await,
        Command::Standalone(_) => Ok(()),
    }
}

fn print_json(out: &mut (dyn Write + Send), value: &impl Serialize) -> Result<(), CliError> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

fn seconds_to_ms(secs: u32) -> Result<u32, CliError> {
    secs.checked_mul(1000)
        .ok_or_else(|| CliError::Usage("timeout is too large".into()))
}

async fn upstream(
    client: &mut Client,
    cmd: UpstreamCmd,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let one = match cmd {
        UpstreamCmd::Add(a) => {
            client
                .create_upstream(v1::CreateUpstreamRequest {
                    name: a.name,
                    base_url: a.base_url,
                    api_key: a.api_key,
                    priority: a.priority,
                    weight: a.weight,
                    max_retries: Some(a.max_retries),
                    timeout_ms: seconds_to_ms(a.timeout)?,
                    disabled: a.disabled,
                    probe_path: a.probe_path,
                })
                .await?
        }
        UpstreamCmd::List => {
            let list = client
                .list_upstreams(v1::ListUpstreamsRequest {})
                .await?
                .into_inner()
                .upstreams;
            if json {
                return print_json(out, &list);
            }
            let mut t = Table::new(&[
                "ID",
                "NAME",
                "BASE URL",
                "PRIORITY (0=best)",
                "WEIGHT",
                "ENABLED",
                "HEALTH",
                "KEY",
            ]);
            for u in list {
                t.row(vec![
                    u.id.to_string(),
                    u.name,
                    u.base_url,
                    u.priority.to_string(),
                    u.weight.to_string(),
                    u.enabled.to_string(),
                    u.health,
                    u.api_key_hint,
                ]);
            }
            return Ok(t.write(out)?);
        }
        UpstreamCmd::Get { id } => client.get_upstream(v1::GetUpstreamRequest { id }).await?,
        UpstreamCmd::Update(u) => {
            client
                .update_upstream(v1::UpdateUpstreamRequest {
                    id: u.id,
                    name: u.name,
                    base_url: u.base_url,
                    api_key: u.api_key,
                    priority: u.priority,
                    weight: u.weight,
                    max_retries: u.max_retries,
                    timeout_ms: u.timeout.map(seconds_to_ms).transpose()?,
                    enabled: None,
                    probe_path: u.probe_path,
                })
                .await?
        }
        UpstreamCmd::Enable { id } | UpstreamCmd::Disable { id } => {
            let enabled = matches!(cmd, UpstreamCmd::Enable { .. });
            client
                .update_upstream(v1::UpdateUpstreamRequest {
                    id,
                    enabled: Some(enabled),
                    ..Default::default()
                })
                .await?
        }
        UpstreamCmd::Delete { id } => {
            let deleted = client
                .delete_upstream(v1::DeleteUpstreamRequest { id })
                .await?
                .into_inner();
            if json {
                return print_json(out, &deleted);
            }
            writeln!(out, "deleted upstream {}", deleted.id)?;
            return Ok(());
        }
        UpstreamCmd::Test { id } => {
            let probe = client
                .test_upstream(v1::TestUpstreamRequest { id })
                .await?
                .into_inner();
            if json {
                return print_json(out, &probe);
            }
            return Ok(write_fields(
                out,
                &[
                    ("upstream", probe.upstream_id.to_string()),
                    ("url", probe.url),
                    (
                        "status",
                        if probe.healthy {
                            "healthy".into()
                        } else {
                            "unhealthy".into()
                        },
                    ),
                    (
                        "http_status",
                        if probe.status_code == 0 {
                            "-".into()
                        } else {
                            probe.status_code.to_string()
                        },
                    ),
                    ("latency", format!("{} ms", probe.latency_ms)),
                    ("error", probe.error),
                ],
            )?);
        }
    }
    .into_inner();
    if json {
        return print_json(out, &one);
    }
    Ok(write_fields(
        out,
        &[
            ("id", one.id.to_string()),
            ("name", one.name),
            ("base_url", one.base_url),
            ("api_key", one.api_key_hint),
            (
                "priority",
                format!("{} (lower = preferred, 0 is the best tier)", one.priority),
            ),
            ("weight", one.weight.to_string()),
            ("max_retries", one.max_retries.to_string()),
            ("timeout", format!("{} s", one.timeout_ms / 1000)),
            ("enabled", one.enabled.to_string()),
            ("health", one.health),
            ("health_error", one.health_error),
            ("probe_path", one.probe_path),
            ("updated_at", one.updated_at),
        ],
    )?)
}

fn parse_multiplier(text: &str) -> Result<u64, CliError> {
    // A multiplier has the same shape as an amount: 1.5 → 1_500_000 parts per million.
    let ppm = parse_amount(text).map_err(|_| {
        CliError::Usage(format!("{text:?} is not a multiplier (expected e.g. 1.5)"))
    })?;
    u64::try_from(ppm)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| CliError::Usage("multiplier must be positive".into()))
}

async fn user(
    client: &mut Client,
    cmd: UserCmd,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let one = match cmd {
        UserCmd::Create {
            name,
            balance,
            multiplier,
        } => {
            let balance_micros = parse_amount(&balance).map_err(CliError::Usage)?;
            let multiplier_ppm = multiplier.as_deref().map(parse_multiplier).transpose()?;
            client
                .create_user(v1::CreateUserRequest {
                    name,
                    balance_micros,
                    multiplier_ppm: multiplier_ppm.unwrap_or(0),
                })
                .await?
        }
        UserCmd::List => {
            let list = client
                .list_users(v1::ListUsersRequest {})
                .await?
                .into_inner()
                .users;
            if json {
                return print_json(out, &list);
            }
            let mut t = Table::new(&["ID", "NAME", "BALANCE", "MULTIPLIER", "CREATED"]);
            for u in list {
                t.row(vec![
                    u.id.to_string(),
                    u.name,
                    format_amount(u.balance_micros),
                    format_amount(i64::try_from(u.multiplier_ppm).unwrap_or(i64::MAX)),
                    u.created_at,
                ]);
            }
            return Ok(t.write(out)?);
        }
        UserCmd::Get { id } => client.get_user(v1::GetUserRequest { id }).await?,
        UserCmd::Update {
            id,
            name,
            multiplier,
        } => {
            client
                .update_user(v1::UpdateUserRequest {
                    id,
                    name,
                    multiplier_ppm: multiplier.as_deref().map(parse_multiplier).transpose()?,
                })
                .await?
        }
        UserCmd::Topup { id, amount, reason } => {
            let amount_micros = parse_amount(&amount).map_err(CliError::Usage)?;
            if amount_micros <= 0 {
                return Err(CliError::Usage("a top-up amount must be positive".into()));
            }
            client
                .adjust_balance(v1::AdjustBalanceRequest {
                    user_id: id,
                    amount_micros,
                    reason,
                })
                .await?
        }
    }
    .into_inner();
    if json {
        return print_json(out, &one);
    }
    Ok(write_fields(
        out,
        &[
            ("id", one.id.to_string()),
            ("name", one.name),
            ("balance", format_amount(one.balance_micros)),
            (
                "multiplier",
                format_amount(i64::try_from(one.multiplier_ppm).unwrap_or(i64::MAX)),
            ),
            ("created_at", one.created_at),
        ],
    )?)
}

/// What `key create -o json` prints: the key's fields and, this once, its secret.
#[derive(Serialize)]
struct CreatedKey {
    #[serde(flatten)]
    key: v1::Key,
    secret: String,
}

fn key_fields(k: &v1::Key) -> Vec<(&'static str, String)> {
    vec![
        ("id", k.id.to_string()),
        ("user", k.user_id.to_string()),
        ("name", k.name.clone()),
        ("prefix", k.prefix.clone()),
        ("revoked", k.revoked.to_string()),
        (
            "expires_at",
            k.expires_at.clone().unwrap_or_else(|| "never".into()),
        ),
        ("models", list_or_all(&k.models)),
        ("ip_allow", list_or_all(&k.ip_allow)),
        (
            "rpm",
            k.rpm.map_or_else(|| "unlimited".into(), |v| v.to_string()),
        ),
        (
            "concurrency",
            k.concurrency
                .map_or_else(|| "unlimited".into(), |v| v.to_string()),
        ),
    ]
}

fn list_or_all(items: &[String]) -> String {
    if items.is_empty() {
        "all".into()
    } else {
        items.join(",")
    }
}

async fn key(
    client: &mut Client,
    cmd: KeyCmd,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    match cmd {
        KeyCmd::Create {
            user,
            name,
            expires,
            models,
            ip_allow,
            rpm,
            concurrency,
        } => {
            let created = client
                .create_key(v1::CreateKeyRequest {
                    user_id: user,
                    name,
                    expires_at: expires,
                    models,
                    ip_allow,
                    rpm,
                    concurrency,
                })
                .await?
                .into_inner();
            let key = created
                .key
                .ok_or_else(|| Status::internal("control plane returned no key"))?;
            if json {
                return print_json(
                    out,
                    &CreatedKey {
                        key,
                        secret: created.secret,
                    },
                );
            }
            let mut fields = key_fields(&key);
            fields.push(("secret", created.secret));
            write_fields(out, &fields)?;
            writeln!(out, "\nstore the secret now: it is not shown again")?;
            Ok(())
        }
        KeyCmd::List { user } => {
            let list = client
                .list_keys(v1::ListKeysRequest { user_id: user })
                .await?
                .into_inner()
                .keys;
            if json {
                return print_json(out, &list);
            }
            let mut t = Table::new(&[
                "ID", "USER", "NAME", "PREFIX", "REVOKED", "EXPIRES", "MODELS",
            ]);
            for k in list {
                t.row(vec![
                    k.id.to_string(),
                    k.user_id.to_string(),
                    k.name,
                    k.prefix,
                    k.revoked.to_string(),
                    k.expires_at.unwrap_or_else(|| "never".into()),
                    list_or_all(&k.models),
                ]);
            }
            Ok(t.write(out)?)
        }
        KeyCmd::Update(u) => {
            let list = |values: Option<Vec<String>>, clear: bool| {
                if clear {
                    Some(v1::StringList { values: vec![] })
                } else {
                    values.map(|values| v1::StringList { values })
                }
            };
            let key = client
                .update_key(v1::UpdateKeyRequest {
                    id: u.id,
                    name: u.name,
                    expires_at: if u.no_expiry {
                        Some(String::new())
                    } else {
                        u.expires
                    },
                    models: list(u.models, u.all_models),
                    ip_allow: list(u.ip_allow, u.any_ip),
                    rpm: u.rpm,
                    concurrency: u.concurrency,
                })
                .await?
                .into_inner();
            if json {
                return print_json(out, &key);
            }
            Ok(write_fields(out, &key_fields(&key))?)
        }
        KeyCmd::Revoke { id } => {
            let key = client
                .revoke_key(v1::RevokeKeyRequest { id })
                .await?
                .into_inner();
            if json {
                return print_json(out, &key);
            }
            Ok(write_fields(out, &key_fields(&key))?)
        }
    }
}

async fn price(
    client: &mut Client,
    cmd: PriceCmd,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let prices = match cmd {
        PriceCmd::Set {
            model,
            input,
            cached_input,
            output,
        } => {
            let price = v1::Price {
                model,
                input_micros: parse_amount(&input).map_err(CliError::Usage)?,
                cached_input_micros: parse_amount(&cached_input).map_err(CliError::Usage)?,
                output_micros: parse_amount(&output).map_err(CliError::Usage)?,
            };
            let set = client
                .set_price(v1::SetPriceRequest { price: Some(price) })
                .await?
                .into_inner();
            if json {
                return print_json(out, &set);
            }
            vec![set]
        }
        PriceCmd::List => {
            let list = client
                .list_prices(v1::ListPricesRequest {})
                .await?
                .into_inner()
                .prices;
            if json {
                return print_json(out, &list);
            }
            list
        }
    };
    let mut t = Table::new(&["MODEL", "INPUT /1M", "CACHED INPUT /1M", "OUTPUT /1M"]);
    for p in prices {
        t.row(vec![
            p.model,
            format_amount(p.input_micros),
            format_amount(p.cached_input_micros),
            format_amount(p.output_micros),
        ]);
    }
    Ok(t.write(out)?)
}

async fn usage(
    client: &mut Client,
    cmd: UsageCmd,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let (user, key, upstream, model, since, until, limit) = match cmd {
        UsageCmd::List {
            user,
            key,
            upstream,
            model,
            since,
            until,
            limit,
        } => (user, key, upstream, model, since, until, limit),
        UsageCmd::Summary {
            by,
            user,
            key,
            upstream,
            model,
            since,
            until,
        } => {
            return usage_summary(
                client,
                by,
                (user, key, upstream, model, since, until),
                json,
                out,
            )
            .await;
        }
    };
    let events = client
        .list_usage(v1::ListUsageRequest {
            user_id: user,
            key_id: key,
            upstream_id: upstream,
            model,
            since,
            until,
            limit,
        })
        .await?
        .into_inner()
        .events;
    if json {
        return print_json(out, &events);
    }
    let mut t = Table::new(&[
        "TIME",
        "USER",
        "KEY",
        "UPSTREAM",
        "MODEL",
        "IN",
        "CACHED",
        "OUT",
        "REASONING",
        "COST",
        "STATUS",
        "EST",
    ]);
    for e in events {
        t.row(vec![
            e.created_at,
            e.user_id.to_string(),
            e.key_id.to_string(),
            e.upstream_id.map_or_else(|| "-".into(), |u| u.to_string()),
            e.model,
            e.input_tokens.to_string(),
            e.cached_tokens.to_string(),
            e.output_tokens.to_string(),
            e.reasoning_tokens.to_string(),
            format_amount(e.cost_micros),
            e.status,
            if e.estimated {
                "yes".into()
            } else {
                String::new()
            },
        ]);
    }
    Ok(t.write(out)?)
}

type SummaryFilters = (
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
);

async fn usage_summary(
    client: &mut Client,
    by: SummaryBy,
    (user, key, upstream, model, since, until): SummaryFilters,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let by = match by {
        SummaryBy::User => "user",
        SummaryBy::Model => "model",
        SummaryBy::Upstream => "upstream",
        SummaryBy::Day => "day",
    };
    let summary = client
        .summarize_usage(v1::SummarizeUsageRequest {
            by: by.into(),
            user_id: user,
            key_id: key,
            upstream_id: upstream,
            model,
            since,
            until,
        })
        .await?
        .into_inner();
    if json {
        return print_json(out, &summary.rows);
    }
    let mut t = Table::new(&[
        &by.to_uppercase(),
        "REQUESTS",
        "IN",
        "CACHED",
        "OUT",
        "REASONING",
        "COST",
        "ESTIMATED",
    ]);
    for r in summary.rows {
        t.row(vec![
            r.group,
            r.requests.to_string(),
            r.input_tokens.to_string(),
            r.cached_tokens.to_string(),
            r.output_tokens.to_string(),
            r.reasoning_tokens.to_string(),
            format_amount(r.cost_micros),
            r.estimated.to_string(),
        ]);
    }
    Ok(t.write(out)?)
}
