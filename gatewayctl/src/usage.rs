//! `gatewayctl usage …`: the usage ledger — events and their totals, selected by one shared
//! set of filters.

use std::io::Write;

use clap::{Args, Subcommand, ValueEnum};
use gateway_proto::v1;

use crate::{
    CliError, Client,
    money::format_amount,
    output::{Table, print_json},
};

/// Usage commands.
#[derive(Debug, Subcommand)]
pub enum UsageCmd {
    /// Usage events, newest first.
    List(UsageList),
    /// Totals grouped by user, model, upstream or UTC day.
    Summary(UsageSummary),
}

/// Runs one usage command.
pub(crate) async fn run(
    client: &mut Client,
    cmd: UsageCmd,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    match cmd {
        UsageCmd::List(args) => args.run(client, json, out).await,
        UsageCmd::Summary(args) => args.run(client, json, out).await,
    }
}

/// Which usage events a command covers; every usage command flattens this in, so each
/// accepts the same filters with the same meaning.
#[derive(Debug, Args)]
pub struct UsageFilter {
    #[arg(long)]
    pub user: Option<i64>,
    #[arg(long)]
    pub key: Option<i64>,
    #[arg(long)]
    pub upstream: Option<i64>,
    #[arg(long)]
    pub model: Option<String>,
    /// RFC 3339.
    #[arg(long)]
    pub since: Option<String>,
    /// RFC 3339, exclusive.
    #[arg(long)]
    pub until: Option<String>,
}

/// `usage list`.
#[derive(Debug, Args)]
pub struct UsageList {
    #[command(flatten)]
    pub filter: UsageFilter,
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

impl UsageList {
    async fn run(
        self,
        client: &mut Client,
        json: bool,
        out: &mut (dyn Write + Send),
    ) -> Result<(), CliError> {
        let UsageFilter {
            user,
            key,
            upstream,
            model,
            since,
            until,
        } = self.filter;
        let events = client
            .list_usage(v1::ListUsageRequest {
                user_id: user,
                key_id: key,
                upstream_id: upstream,
                model,
                since,
                until,
                limit: self.limit,
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
}

/// Grouping of `usage summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SummaryBy {
    User,
    Model,
    Upstream,
    Day,
}

impl SummaryBy {
    /// The grouping as the admin API names it: the same word `--by` takes, so the names are
    /// written once (by the `ValueEnum` derive).
    fn name(self) -> String {
        // Every variant has a value; none is skipped.
        self.to_possible_value()
            .map(|value| value.get_name().to_owned())
            .unwrap_or_default()
    }
}

/// `usage summary`.
#[derive(Debug, Args)]
pub struct UsageSummary {
    #[arg(long, value_enum, default_value_t = SummaryBy::User)]
    pub by: SummaryBy,
    #[command(flatten)]
    pub filter: UsageFilter,
}

impl UsageSummary {
    async fn run(
        self,
        client: &mut Client,
        json: bool,
        out: &mut (dyn Write + Send),
    ) -> Result<(), CliError> {
        let by = self.by.name();
        let UsageFilter {
            user,
            key,
            upstream,
            model,
            since,
            until,
        } = self.filter;
        let summary = client
            .summarize_usage(v1::SummarizeUsageRequest {
                by: by.clone(),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_groupings_carry_the_names_the_admin_api_takes() {
        let names: Vec<String> = SummaryBy::value_variants()
            .iter()
            .map(|by| by.name())
            .collect();
        assert_eq!(names, ["user", "model", "upstream", "day"]);
    }
}
