//! `gatewayctl user …`: users, their balances and price multipliers.

use std::io::Write;

use clap::{Args, Subcommand};
use gateway_proto::v1;

use crate::{
    CliError, Client,
    money::{format_amount, parse_amount},
    output::{Table, print_json, write_fields},
};

/// User commands.
#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create a user.
    Create(UserCreate),
    /// List users.
    List,
    /// Show one user.
    Get { id: i64 },
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
        UserCmd::List => return list(client, json, out).await,
        UserCmd::Get { id } => client
            .get_user(v1::GetUserRequest { id })
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
            ("balance", format_amount(one.balance_micros)),
            ("multiplier", format_multiplier(one.multiplier_ppm)),
            ("created_at", one.created_at),
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

fn format_multiplier(ppm: u64) -> String {
    format_amount(i64::try_from(ppm).unwrap_or(i64::MAX))
}

/// `user create`.
#[derive(Debug, Args)]
pub struct UserCreate {
    #[arg(long)]
    pub name: String,
    /// Initial balance in currency units (e.g. 10.00).
    #[arg(long, default_value = "0")]
    pub balance: String,
    /// Price multiplier (e.g. 1.5).
    #[arg(long)]
    pub multiplier: Option<String>,
}

impl UserCreate {
    async fn send(self, client: &mut Client) -> Result<v1::User, CliError> {
        let balance_micros = parse_amount(&self.balance).map_err(CliError::Usage)?;
        let multiplier_ppm = self
            .multiplier
            .as_deref()
            .map(parse_multiplier)
            .transpose()?;
        let request = v1::CreateUserRequest {
            name: self.name,
            balance_micros,
            multiplier_ppm: multiplier_ppm.unwrap_or(0),
        };
        Ok(client.create_user(request).await?.into_inner())
    }
}

async fn list(
    client: &mut Client,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
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
            format_multiplier(u.multiplier_ppm),
            u.created_at,
        ]);
    }
    Ok(t.write(out)?)
}

/// `user update`.
#[derive(Debug, Args)]
pub struct UserUpdate {
    pub id: i64,
    #[arg(long)]
    pub name: Option<String>,
    /// Price multiplier (e.g. 1.5).
    #[arg(long)]
    pub multiplier: Option<String>,
}

impl UserUpdate {
    async fn send(self, client: &mut Client) -> Result<v1::User, CliError> {
        let request = v1::UpdateUserRequest {
            id: self.id,
            name: self.name,
            multiplier_ppm: self
                .multiplier
                .as_deref()
                .map(parse_multiplier)
                .transpose()?,
        };
        Ok(client.update_user(request).await?.into_inner())
    }
}

/// `user topup`.
#[derive(Debug, Args)]
pub struct UserTopup {
    pub id: i64,
    pub amount: String,
    #[arg(long, default_value = "")]
    pub reason: String,
}

impl UserTopup {
    async fn send(self, client: &mut Client) -> Result<v1::User, CliError> {
        let amount_micros = parse_amount(&self.amount).map_err(CliError::Usage)?;
        if amount_micros <= 0 {
            return Err(CliError::Usage("a top-up amount must be positive".into()));
        }
        let request = v1::AdjustBalanceRequest {
            user_id: self.id,
            amount_micros,
            reason: self.reason,
        };
        Ok(client.adjust_balance(request).await?.into_inner())
    }
}
