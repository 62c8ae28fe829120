//! `gatewayctl upstream …`: the upstream account pools traffic is routed to.

use std::io::Write;

use clap::{Args, Subcommand};
use gateway_proto::{ids::UpstreamId, names, v1};

use crate::{
    CliError, Client,
    output::{Table, print_json, write_fields},
};

/// Upstream commands.
#[derive(Debug, Subcommand)]
pub enum UpstreamCmd {
    /// Add an upstream.
    Add(UpstreamAdd),
    /// List upstreams.
    List,
    /// Show one upstream.
    Get { id: UpstreamId },
    /// Change an upstream's settings.
    Update(UpstreamUpdate),
    /// Route traffic to an upstream again.
    Enable { id: UpstreamId },
    /// Stop routing traffic to an upstream (its users move to their next choice).
    Disable { id: UpstreamId },
    /// Delete an upstream.
    Delete { id: UpstreamId },
    /// Run one health probe now and show status, latency and error.
    Test { id: UpstreamId },
}

/// Runs one upstream command.
pub(crate) async fn run(
    client: &mut Client,
    cmd: UpstreamCmd,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let one = match cmd {
        UpstreamCmd::Add(args) => args.send(client).await?,
        UpstreamCmd::List => return list(client, json, out).await,
        UpstreamCmd::Get { id } => client
            .get_upstream(v1::GetUpstreamRequest { id: id.get() })
            .await?
            .into_inner(),
        UpstreamCmd::Update(args) => args.send(client).await?,
        UpstreamCmd::Enable { id } => set_enabled(client, id, true).await?,
        UpstreamCmd::Disable { id } => set_enabled(client, id, false).await?,
        UpstreamCmd::Delete { id } => return delete(client, id, json, out).await,
        UpstreamCmd::Test { id } => return test(client, id, json, out).await,
    };
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
            (
                "health",
                names::name_of::<v1::UpstreamHealth>(one.health).to_owned(),
            ),
            ("health_error", one.health_error),
            ("probe_path", one.probe_path),
            ("models", models_field(&one.models)),
            ("updated_at", one.updated_at),
        ],
    )?)
}

/// Widest the MODELS column of `upstream list` grows; `upstream get` shows the whole list.
const MODELS_CELL_WIDTH: usize = 40;

/// The models an upstream serves, for `upstream get`: empty means every model.
fn models_field(models: &[String]) -> String {
    if models.is_empty() {
        "* (every model)".into()
    } else {
        models.join(",")
    }
}

/// The MODELS cell of `upstream list`: `*` for every model, else as many names as fit in
/// [`MODELS_CELL_WIDTH`] and a count of the rest, so one long list cannot widen the table.
fn models_cell(models: &[String]) -> String {
    if models.is_empty() {
        return "*".into();
    }
    let full = models.join(",");
    if full.chars().count() <= MODELS_CELL_WIDTH {
        return full;
    }
    let mut cell = String::new();
    for (shown, model) in models.iter().enumerate() {
        let rest = models.len() - shown;
        let more = format!(",… (+{rest})");
        let sep = usize::from(shown > 0);
        if cell.chars().count() + sep + model.chars().count() + more.chars().count()
            > MODELS_CELL_WIDTH
        {
            if shown == 0 {
                // Not even the first name fits: cut it, and still say how many there are.
                let room = MODELS_CELL_WIDTH.saturating_sub(more.chars().count());
                cell = model.chars().take(room).collect();
            }
            cell.push_str(&more);
            return cell;
        }
        if sep == 1 {
            cell.push(',');
        }
        cell.push_str(model);
    }
    cell
}

fn seconds_to_ms(secs: u32) -> Result<u32, CliError> {
    secs.checked_mul(1000)
        .ok_or_else(|| CliError::Usage("timeout is too large".into()))
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
    /// Models it serves, comma-separated (default: every model).
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
}

impl UpstreamAdd {
    async fn send(self, client: &mut Client) -> Result<v1::Upstream, CliError> {
        let request = v1::CreateUpstreamRequest {
            name: self.name,
            base_url: self.base_url,
            api_key: self.api_key,
            priority: self.priority,
            weight: Some(self.weight),
            max_retries: Some(self.max_retries),
            timeout_ms: Some(seconds_to_ms(self.timeout)?),
            disabled: self.disabled,
            probe_path: self.probe_path,
            models: self.models,
        };
        Ok(client.create_upstream(request).await?.into_inner())
    }
}

async fn list(
    client: &mut Client,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
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
        "MODELS",
    ]);
    for u in list {
        t.row(vec![
            u.id.to_string(),
            u.name,
            u.base_url,
            u.priority.to_string(),
            u.weight.to_string(),
            u.enabled.to_string(),
            names::name_of::<v1::UpstreamHealth>(u.health).to_owned(),
            u.api_key_hint,
            models_cell(&u.models),
        ]);
    }
    Ok(t.write(out)?)
}

/// `upstream update`.
#[derive(Debug, Args)]
pub struct UpstreamUpdate {
    pub id: UpstreamId,
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
    /// Models it serves, comma-separated; replaces the current list.
    #[arg(long, value_delimiter = ',', conflicts_with = "all_models")]
    pub models: Option<Vec<String>>,
    /// Serve every model again.
    #[arg(long)]
    pub all_models: bool,
}

impl UpstreamUpdate {
    async fn send(self, client: &mut Client) -> Result<v1::Upstream, CliError> {
        let request = v1::UpdateUpstreamRequest {
            id: self.id.get(),
            name: self.name,
            base_url: self.base_url,
            api_key: self.api_key,
            priority: self.priority,
            weight: self.weight,
            max_retries: self.max_retries,
            timeout_ms: self.timeout.map(seconds_to_ms).transpose()?,
            enabled: None,
            probe_path: self.probe_path,
            // An empty list on the wire means every model; an absent one leaves it unchanged.
            models: if self.all_models {
                Some(v1::StringList { values: vec![] })
            } else {
                self.models.map(|values| v1::StringList { values })
            },
        };
        Ok(client.update_upstream(request).await?.into_inner())
    }
}

/// `upstream enable` and `upstream disable`.
async fn set_enabled(
    client: &mut Client,
    id: UpstreamId,
    enabled: bool,
) -> Result<v1::Upstream, CliError> {
    let request = v1::UpdateUpstreamRequest {
        id: id.get(),
        enabled: Some(enabled),
        ..Default::default()
    };
    Ok(client.update_upstream(request).await?.into_inner())
}

async fn delete(
    client: &mut Client,
    id: UpstreamId,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let deleted = client
        .delete_upstream(v1::DeleteUpstreamRequest { id: id.get() })
        .await?
        .into_inner();
    if json {
        return print_json(out, &deleted);
    }
    writeln!(out, "deleted upstream {}", deleted.id)?;
    Ok(())
}

/// `upstream test`: one health probe, now.
async fn test(
    client: &mut Client,
    id: UpstreamId,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let probe = client
        .test_upstream(v1::TestUpstreamRequest { id: id.get() })
        .await?
        .into_inner();
    if json {
        return print_json(out, &probe);
    }
    let status = if probe.healthy {
        "healthy"
    } else {
        "unhealthy"
    };
    let http_status = if probe.status_code == 0 {
        "-".to_owned()
    } else {
        probe.status_code.to_string()
    };
    Ok(write_fields(
        out,
        &[
            ("upstream", probe.upstream_id.to_string()),
            ("url", probe.url),
            ("status", status.to_owned()),
            ("http_status", http_status),
            ("latency", format!("{} ms", probe.latency_ms)),
            ("error", probe.error),
        ],
    )?)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    fn upstream(args: &[&str]) -> Result<UpstreamCmd, clap::Error> {
        let argv = ["gatewayctl", "upstream"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Upstream(cmd) => Ok(cmd),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn ids_are_typed() {
        assert!(matches!(
            upstream(&["get", "7"]),
            Ok(UpstreamCmd::Get { id: UpstreamId(7) })
        ));
        assert!(matches!(
            upstream(&["update", "7", "--weight", "2"]),
            Ok(UpstreamCmd::Update(UpstreamUpdate {
                id: UpstreamId(7),
                ..
            }))
        ));
        for command in ["get", "enable", "disable", "delete", "test"] {
            let err = upstream(&[command, "0"]).unwrap_err().to_string();
            assert!(err.contains("not a valid upstream id"), "{command}: {err}");
        }
    }

    #[test]
    fn models_replace_or_go_back_to_every_model() {
        let Ok(UpstreamCmd::Update(update)) = upstream(&["update", "7", "--models", "a,b"]) else {
            panic!("--models parses");
        };
        assert_eq!(
            update.models.as_deref(),
            Some(&["a".into(), "b".into()][..])
        );
        assert!(!update.all_models);
        let Ok(UpstreamCmd::Update(update)) = upstream(&["update", "7", "--all-models"]) else {
            panic!("--all-models parses");
        };
        assert!(update.all_models && update.models.is_none());
        let err = upstream(&["update", "7", "--models", "a", "--all-models"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot be used with"), "{err}");

        let add = [
            "add",
            "--name",
            "n",
            "--base-url",
            "http://x",
            "--api-key",
            "k",
        ];
        let Ok(UpstreamCmd::Add(every)) = upstream(&add) else {
            panic!("add parses");
        };
        assert!(every.models.is_empty(), "default: every model");
        let with: Vec<&str> = add
            .iter()
            .copied()
            .chain(["--models", "gpt-5,o3"])
            .collect();
        let Ok(UpstreamCmd::Add(some)) = upstream(&with) else {
            panic!("add --models parses");
        };
        assert_eq!(some.models, ["gpt-5", "o3"]);
    }

    #[test]
    fn the_models_cell_stays_narrow() {
        let names = |ns: &[&str]| ns.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        assert_eq!(models_cell(&[]), "*");
        assert_eq!(models_cell(&names(&["gpt-5", "o3"])), "gpt-5,o3");
        let many = names(&[
            "gpt-5",
            "gpt-5-codex",
            "gpt-5-mini",
            "gpt-5.1-codex-max",
            "o3",
            "o4-mini",
        ]);
        let cell = models_cell(&many);
        assert_eq!(cell, "gpt-5,gpt-5-codex,gpt-5-mini,… (+3)");
        assert!(cell.chars().count() <= MODELS_CELL_WIDTH);
        let long = names(&[&"m".repeat(100), "o3"]);
        let cell = models_cell(&long);
        assert!(cell.ends_with(",… (+2)"), "{cell}");
        assert_eq!(cell.chars().count(), MODELS_CELL_WIDTH);
        assert_eq!(models_field(&[]), "* (every model)");
        assert_eq!(models_field(&many[..2]), "gpt-5,gpt-5-codex");
    }
}
