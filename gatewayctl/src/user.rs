//! `gatewayctl user …`: users, their balances and price multipliers.

use std::io::Write;

use clap::{Args, Subcommand};
use gateway_proto::{ids::UserId, money::Micros, v1};

use crate::{
    CliError, Client,
    output::{Table, print_json, write_fields},
};

/// User commands.
#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create a user.
    Create(UserCreate),
    /// List users by id, a page at a time.
    List(UserList),
    /// Show one user.
    Get { id: UserId },
    /// Rename a user or change their price multiplier.
    Update(UserUpdate),
    /// Add to a user's balance (currency units, e.g. 10.00).
    Topup(UserTopup),
}

/// Runs one user command.
pub(crate) async fn run(
    client: &mut Client,
    cmd: UserCmd,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let one = match cmd {
        UserCmd::Create(args) => args.send(client).await?,
        UserCmd::List(args) => return list(client, args, json, out).await,
        UserCmd::Get { id } => client
            .get_user(v1::GetUserRequest { id: id.get() })
            .await?
            .into_inner(),
        UserCmd::Update(args) => args.send(client).await?,
        UserCmd::Topup(args) => args.send(client).await?,
    };
    if json {
        return print_json(out, &one);
    }
    Ok(write_fields(
        out,
        &[
            ("id", one.id.to_string()),
            ("name", one.name),
            ("balance", Micros(one.balance_micros).to_string()),
            ("multiplier", format_multiplier(one.multiplier_ppm)),
            ("created_at", one.created_at),
        ],
    )?)
}

// A multiplier has the same shape as an amount, so it is written and printed as one: 1.5 is
// 1_500_000 parts per million as 1.50 is 1_500_000 micro-units.

/// `--multiplier`: a positive factor such as `1.5`, in parts per million.
fn parse_multiplier(text: &str) -> Result<u64, String> {
    let ppm = text
        .parse::<Micros>()
        .map_err(|_| format!("{text:?} is not a multiplier (expected e.g. 1.5)"))?;
    u64::try_from(ppm.get())
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| "multiplier must be positive".to_owned())
}

fn format_multiplier(ppm: u64) -> String {
    Micros(i64::try_from(ppm).unwrap_or(i64::MAX)).to_string()
}

/// `user create`.
#[derive(Debug, Args)]
pub struct UserCreate {
    #[arg(long)]
    pub name: String,
    /// Initial balance in currency units (e.g. 10.00).
    #[arg(long, default_value = "0")]
    pub balance: Micros,
    /// Price multiplier (e.g. 1.5).
    #[arg(long, value_parser = parse_multiplier)]
    pub multiplier: Option<u64>,
}

impl UserCreate {
    async fn send(self, client: &mut Client) -> Result<v1::User, CliError> {
        let request = v1::CreateUserRequest {
            name: self.name,
            balance_micros: self.balance.get(),
            // None: the control plane's default multiplier.
            multiplier_ppm: self.multiplier,
        };
        Ok(client.create_user(request).await?.into_inner())
    }
}

/// `user list`.
#[derive(Debug, Args)]
pub struct UserList {
    /// Only users whose name contains this (any case).
    #[arg(long)]
    pub search: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Continue after a page: the cursor the previous page printed on stderr.
    #[arg(long)]
    pub cursor: Option<String>,
}

async fn list(
    client: &mut Client,
    args: UserList,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let page = client
        .list_users(v1::ListUsersRequest {
            limit: Some(args.limit),
            cursor: args.cursor,
            search: args.search,
        })
        .await?
        .into_inner();
    if let Some(next) = &page.next_cursor {
        eprintln!("more: add --cursor {next}");
    }
    let list = page.users;
    if json {
        return print_json(out, &list);
    }
    let mut t = Table::new(&["ID", "NAME", "BALANCE", "MULTIPLIER", "CREATED"]);
    for u in list {
        t.row(vec![
            u.id.to_string(),
            u.name,
            Micros(u.balance_micros).to_string(),
            format_multiplier(u.multiplier_ppm),
            u.created_at,
        ]);
    }
    Ok(t.write(out)?)
}

/// `user update`.
#[derive(Debug, Args)]
pub struct UserUpdate {
    pub id: UserId,
    #[arg(long)]
    pub name: Option<String>,
    /// Price multiplier (e.g. 1.5).
    #[arg(long, value_parser = parse_multiplier)]
    pub multiplier: Option<u64>,
}

impl UserUpdate {
    async fn send(self, client: &mut Client) -> Result<v1::User, CliError> {
        let request = v1::UpdateUserRequest {
            id: self.id.get(),
            name: self.name,
            multiplier_ppm: self.multiplier,
        };
        Ok(client.update_user(request).await?.into_inner())
    }
}

/// `user topup`.
#[derive(Debug, Args)]
pub struct UserTopup {
    pub id: UserId,
    pub amount: Micros,
    #[arg(long, default_value = "")]
    pub reason: String,
}

impl UserTopup {
    async fn send(self, client: &mut Client) -> Result<v1::User, CliError> {
        if !self.amount.is_positive() {
            return Err(CliError::Usage("a top-up amount must be positive".into()));
        }
        let request = v1::AdjustBalanceRequest {
            user_id: self.id.get(),
            amount_micros: self.amount.get(),
            reason: self.reason,
        };
        Ok(client.adjust_balance(request).await?.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    fn user(args: &[&str]) -> Result<UserCmd, clap::Error> {
        let argv = ["gatewayctl", "user"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::User(cmd) => Ok(cmd),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn amounts_and_multipliers_are_parsed_exactly() {
        let Ok(UserCmd::Create(created)) = user(&["create", "--name", "a"]) else {
            panic!("not a create");
        };
        assert_eq!((created.balance, created.multiplier), (Micros::ZERO, None));
        let Ok(UserCmd::Create(created)) = user(&[
            "create",
            "--name",
            "a",
            "--balance",
            "10.00",
            "--multiplier",
            "1.5",
        ]) else {
            panic!("not a create");
        };
        assert_eq!(created.balance, Micros(10_000_000));
        assert_eq!(created.multiplier, Some(1_500_000));
        let Ok(UserCmd::Topup(topup)) = user(&["topup", "7", "2.50"]) else {
            panic!("not a topup");
        };
        assert_eq!((topup.id, topup.amount), (UserId(7), Micros(2_500_000)));
        assert_eq!(format_multiplier(1_500_000), "1.50");
    }

    #[test]
    fn bad_values_are_refused_naming_the_argument() {
        for (args, needle) in [
            (
                &["create", "--name", "a", "--balance", "1.0000001"][..],
                "is not an amount",
            ),
            (&["topup", "7", "ten"], "is not an amount"),
            (&["topup", "0", "1"], "not a valid user id"),
            (&["update", "7", "--multiplier", "x"], "is not a multiplier"),
            (
                &["update", "7", "--multiplier", "0"],
                "multiplier must be positive",
            ),
            (
                &["create", "--name", "a", "--multiplier=-1"],
                "multiplier must be positive",
            ),
        ] {
            let err = user(args).unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }
}
