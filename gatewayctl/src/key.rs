//! `gatewayctl key …`: gateway keys, their secrets (shown once) and their limits.

use std::io::Write;

use clap::{Args, Subcommand};
use gateway_proto::{
    ids::{KeyId, UserId},
    v1,
};
use serde::Serialize;
use tonic::Status;

use crate::{
    CliError, Client,
    output::{Table, print_json, write_fields},
};

/// Key commands.
#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Create a key; prints its secret once.
    Create(KeyCreate),
    /// List keys by id, a page at a time.
    List {
        #[arg(long)]
        user: Option<UserId>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Continue after a page: the cursor the previous page printed on stderr.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one key, with what it has spent against each of its caps.
    Get { id: KeyId },
    /// Revoke a key (refused fleet-wide within a second).
    Revoke { id: KeyId },
    /// Change a key's limits.
    Update(KeyUpdate),
}

/// Runs one key command.
pub(crate) async fn run(
    client: &mut Client,
    cmd: KeyCmd,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let key = match cmd {
        KeyCmd::Create(args) => return args.run(client, json, out).await,
        KeyCmd::List {
            user,
            limit,
            cursor,
        } => {
            let request = v1::ListKeysRequest {
                user_id: user.map(UserId::get),
                limit: Some(limit),
                cursor,
            };
            return list(client, request, json, out).await;
        }
        KeyCmd::Get { id } => client
            .get_key(v1::GetKeyRequest { id: id.get() })
            .await?
            .into_inner(),
        KeyCmd::Revoke { id } => client
            .revoke_key(v1::RevokeKeyRequest { id: id.get() })
            .await?
            .into_inner(),
        KeyCmd::Update(args) => args.send(client).await?,
    };
    if json {
        return print_json(out, &key);
    }
    Ok(write_fields(out, &key_fields(&key))?)
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
        ("spend_limits", spend_limits(&k.spend_limits, true)),
    ]
}

/// `5.00/day: 1.25 spent, 3.75 left (room frees at …)` per cap, or `none`.
fn spend_limits(caps: &[v1::SpendState], when: bool) -> String {
    if caps.is_empty() {
        return "none".into();
    }
    caps.iter()
        .map(|c| {
            let frees = chrono::DateTime::from_timestamp_millis(c.frees_at_ms)
                .filter(|_| when && c.frees_at_ms > 0)
                .map(|t| {
                    format!(
                        " (room frees at {})",
                        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    )
                })
                .unwrap_or_default();
            format!("{c}{frees}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn list_or_all(items: &[String]) -> String {
    if items.is_empty() {
        "all".into()
    } else {
        items.join(",")
    }
}

/// `key create`.
#[derive(Debug, Args)]
pub struct KeyCreate {
    #[arg(long)]
    pub user: UserId,
    #[arg(long, default_value = "")]
    pub name: String,
    /// Expiry, RFC 3339 (e.g. 2027-01-31T00:00:00Z).
    #[arg(long)]
    pub expires: Option<String>,
    /// Allowed models, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    /// Allowed client IPs or CIDR blocks, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub ip_allow: Vec<String>,
    /// Requests per minute.
    #[arg(long)]
    pub rpm: Option<u32>,
    /// Concurrent streams.
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// A spending cap: AMOUNT for the key's lifetime, AMOUNT/WINDOW over a rolling window
    /// (5h, day, week, month). Repeat for several windows, e.g. --spend-limit 50.00
    /// --spend-limit 5.00/day.
    #[arg(long = "spend-limit", value_name = "AMOUNT[/WINDOW]")]
    pub spend_limits: Vec<v1::SpendLimit>,
}

/// What `key create -o json` prints: the key's fields and, this once, its secret.
#[derive(Serialize)]
struct CreatedKey {
    #[serde(flatten)]
    key: v1::Key,
    secret: String,
}

impl KeyCreate {
    async fn run(
        self,
        client: &mut Client,
        json: bool,
        out: &mut (dyn Write + Send),
    ) -> Result<(), CliError> {
        let created = client
            .create_key(v1::CreateKeyRequest {
                user_id: self.user.get(),
                name: self.name,
                expires_at: self.expires,
                models: self.models,
                ip_allow: self.ip_allow,
                rpm: self.rpm,
                concurrency: self.concurrency,
                spend_limits: self.spend_limits,
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
}

async fn list(
    client: &mut Client,
    request: v1::ListKeysRequest,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let page = client.list_keys(request).await?.into_inner();
    if let Some(next) = &page.next_cursor {
        eprintln!("more: add --cursor {next}");
    }
    let list = page.keys;
    if json {
        return print_json(out, &list);
    }
    let mut t = Table::new(&[
        "ID",
        "USER",
        "NAME",
        "PREFIX",
        "REVOKED",
        "EXPIRES",
        "MODELS",
        "SPEND LIMITS",
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
            spend_limits(&k.spend_limits, false),
        ]);
    }
    Ok(t.write(out)?)
}

/// `key update`.
#[derive(Debug, Args)]
pub struct KeyUpdate {
    pub id: KeyId,
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
    /// Requests per minute (at least 1).
    #[arg(long, conflicts_with = "no_rpm_limit")]
    pub rpm: Option<u32>,
    /// Remove the requests-per-minute limit.
    #[arg(long)]
    pub no_rpm_limit: bool,
    /// Concurrent streams (at least 1).
    #[arg(long, conflicts_with = "no_concurrency_limit")]
    pub concurrency: Option<u32>,
    /// Remove the concurrent-stream limit.
    #[arg(long)]
    pub no_concurrency_limit: bool,
    /// Replace every spending cap with these (AMOUNT or AMOUNT/WINDOW, repeatable).
    #[arg(
        long = "spend-limit",
        value_name = "AMOUNT[/WINDOW]",
        conflicts_with = "no_spend_limit"
    )]
    pub spend_limits: Vec<v1::SpendLimit>,
    /// Remove every spending cap.
    #[arg(long)]
    pub no_spend_limit: bool,
}

impl KeyUpdate {
    async fn send(self, client: &mut Client) -> Result<v1::Key, CliError> {
        // An empty list on the wire means "no restriction"; an absent one means "unchanged".
        let list = |values: Option<Vec<String>>, clear: bool| {
            if clear {
                Some(v1::StringList { values: vec![] })
            } else {
                values.map(|values| v1::StringList { values })
            }
        };
        let request = v1::UpdateKeyRequest {
            id: self.id.get(),
            name: self.name,
            // An empty expiry removes it.
            expires_at: if self.no_expiry {
                Some(String::new())
            } else {
                self.expires
            },
            models: list(self.models, self.all_models),
            ip_allow: list(self.ip_allow, self.any_ip),
            rpm: self.rpm,
            concurrency: self.concurrency,
            clear_rpm: self.no_rpm_limit,
            clear_concurrency: self.no_concurrency_limit,
            spend_limits: (self.no_spend_limit || !self.spend_limits.is_empty()).then_some(
                v1::SpendLimits {
                    limits: self.spend_limits,
                },
            ),
        };
        Ok(client.update_key(request).await?.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    fn key(args: &[&str]) -> Result<KeyCmd, clap::Error> {
        let argv = ["gatewayctl", "key"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Key(cmd) => Ok(cmd),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn ids_are_typed() {
        assert!(matches!(
            key(&["list", "--user", "3"]),
            Ok(KeyCmd::List {
                user: Some(UserId(3)),
                limit: 100,
                cursor: None,
            })
        ));
        assert!(matches!(
            key(&["revoke", "9"]),
            Ok(KeyCmd::Revoke { id: KeyId(9) })
        ));
        assert!(matches!(
            key(&["update", "9", "--rpm", "60"]),
            Ok(KeyCmd::Update(KeyUpdate { id: KeyId(9), .. }))
        ));
        let err = key(&["create", "--user", "0"]).unwrap_err().to_string();
        assert!(err.contains("--user"), "{err}");
        assert!(err.contains("not a valid user id"), "{err}");
        let err = key(&["revoke", "abc"]).unwrap_err().to_string();
        assert!(err.contains("not a valid key id"), "{err}");
        assert!(matches!(
            key(&["get", "4"]),
            Ok(KeyCmd::Get { id: KeyId(4) })
        ));
    }

    #[test]
    fn spend_limits_parse_per_window() {
        let Ok(KeyCmd::Create(create)) = key(&[
            "create",
            "--user",
            "1",
            "--spend-limit",
            "50.00",
            "--spend-limit",
            "5.00/day",
        ]) else {
            panic!("create parses");
        };
        let caps: Vec<String> = create
            .spend_limits
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(caps, ["50.00", "5.00/day"]);
        let err = key(&["create", "--user", "1", "--spend-limit", "5/fortnight"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"fortnight\" is not a spend window"), "{err}");
        let err = key(&["create", "--user", "1", "--spend-limit", "0"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be above zero"), "{err}");
        let err = key(&["update", "1", "--spend-limit", "1", "--no-spend-limit"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot be used with"), "{err}");
        let Ok(KeyCmd::Update(clear)) = key(&["update", "1", "--no-spend-limit"]) else {
            panic!("update parses");
        };
        assert!(clear.no_spend_limit && clear.spend_limits.is_empty());
    }
}
