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
    /// List keys.
    List {
        #[arg(long)]
        user: Option<UserId>,
    },
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
        KeyCmd::List { user } => return list(client, user, json, out).await,
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
    ]
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
    user: Option<UserId>,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let list = client
        .list_keys(v1::ListKeysRequest {
            user_id: user.map(UserId::get),
        })
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
    /// Requests per minute (0 = unlimited).
    #[arg(long)]
    pub rpm: Option<u32>,
    /// Concurrent streams (0 = unlimited).
    #[arg(long)]
    pub concurrency: Option<u32>,
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
                user: Some(UserId(3))
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
    }
}
