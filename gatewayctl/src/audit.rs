//! `gatewayctl audit …`: who changed what, and when — every admin change, from the CLI, gRPC
//! or the console.

use std::io::Write;

use clap::{Args, Subcommand};
use gateway_proto::v1;

use crate::{
    CliError, Client,
    output::{Table, print_json},
};

/// Audit commands.
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Admin changes, newest first.
    List(AuditList),
}

/// `audit list`.
#[derive(Debug, Args)]
pub struct AuditList {
    /// RFC 3339: only changes made at or after it.
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Continue after a page: the cursor the previous page printed on stderr.
    #[arg(long)]
    pub cursor: Option<String>,
}

/// Runs one audit command.
pub(crate) async fn run(
    client: &mut Client,
    cmd: AuditCmd,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let AuditCmd::List(args) = cmd;
    let page = client
        .list_audit(v1::ListAuditRequest {
            limit: Some(args.limit),
            cursor: args.cursor,
            since: args.since,
        })
        .await?
        .into_inner();
    if let Some(next) = &page.next_cursor {
        eprintln!("more: add --cursor {next}");
    }
    if json {
        return print_json(out, &page.entries);
    }
    let mut t = Table::new(&[
        "TIME", "WHO", "FROM", "ACTION", "TARGET", "VERSION", "CHANGED",
    ]);
    for e in page.entries {
        t.row(vec![
            e.at,
            e.principal,
            e.source,
            e.action,
            e.target,
            e.config_version
                .map_or_else(|| "-".into(), |v| v.to_string()),
            e.detail,
        ]);
    }
    Ok(t.write(out)?)
}
