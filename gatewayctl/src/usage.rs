//! `gatewayctl usage …`: the usage ledger — events and their totals, selected by one shared
//! set of filters.

use std::io::Write;

use clap::{Args, Subcommand};
use gateway_proto::{
    ids::{KeyId, UpstreamId, UserId},
    money::Micros,
    names::{self, Named},
    v1,
};

use crate::{
    CliError, Client,
    output::{Table, print_json},
};

/// Usage commands.
#[derive(Debug, Subcommand)]
pub enum UsageCmd {
    /// Usage events, newest first.
    List(UsageList),
    /// Totals grouped by user, model, upstream or UTC day.
    Summary(UsageSummary),
    /// Every event the filters select, as CSV or JSON lines, page by page (progress on
    /// stderr).
    Export(UsageExport),
    /// Entries the ledger set aside: list them, bill them again once fixed, or drop them.
    #[command(subcommand)]
    DeadLetters(DeadLettersCmd),
}

/// `usage dead-letters …`.
#[derive(Debug, Subcommand)]
pub enum DeadLettersCmd {
    /// Dead letters, newest first.
    List {
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Bill a dead letter's event (never twice: by its event id) and remove the entry.
    Redrive { id: String },
    /// Remove a dead letter without billing it.
    Drop { id: String },
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
        UsageCmd::Export(args) => args.run(client, out).await,
        UsageCmd::DeadLetters(cmd) => dead_letters(client, cmd, json, out).await,
    }
}

async fn dead_letters(
    client: &mut Client,
    cmd: DeadLettersCmd,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    match cmd {
        DeadLettersCmd::List { limit } => {
            let letters = client
                .list_dead_letters(v1::ListDeadLettersRequest { limit: Some(limit) })
                .await?
                .into_inner()
                .dead_letters;
            if json {
                return print_json(out, &letters);
            }
            let mut t = Table::new(&["ID", "TIME", "EVENT", "USER", "COST", "ERROR"]);
            for d in letters {
                let (event, user, cost) = d.event.map_or_else(
                    || ("-".into(), "-".into(), "-".into()),
                    |e| {
                        (
                            e.id,
                            e.user_id.to_string(),
                            Micros(e.cost_micros).to_string(),
                        )
                    },
                );
                t.row(vec![d.id, d.created_at, event, user, cost, d.error]);
            }
            Ok(t.write(out)?)
        }
        DeadLettersCmd::Redrive { id } => {
            let done = client
                .redrive_dead_letter(v1::DeadLetterRequest { id })
                .await?
                .into_inner();
            if json {
                return print_json(out, &done);
            }
            let what = if done.inserted {
                "billed"
            } else {
                "already in the ledger; not billed again"
            };
            writeln!(
                out,
                "dead letter {} redriven: event {} {what}",
                done.id, done.event_id
            )?;
            Ok(())
        }
        DeadLettersCmd::Drop { id } => {
            let dropped = client
                .drop_dead_letter(v1::DeadLetterRequest { id })
                .await?
                .into_inner();
            if json {
                return print_json(out, &dropped);
            }
            writeln!(
                out,
                "dead letter {} dropped ({})",
                dropped.id, dropped.error
            )?;
            Ok(())
        }
    }
}

/// Which usage events a command covers; every usage command flattens this in, so each
/// accepts the same filters with the same meaning.
#[derive(Debug, Args)]
pub struct UsageFilter {
    #[arg(long)]
    pub user: Option<UserId>,
    #[arg(long)]
    pub key: Option<KeyId>,
    #[arg(long)]
    pub upstream: Option<UpstreamId>,
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
    /// Continue after a page: the cursor the previous page printed on stderr.
    #[arg(long)]
    pub cursor: Option<String>,
}

impl UsageFilter {
    /// A `ListUsage` request of these filters.
    fn request(&self, limit: u32, cursor: Option<String>) -> v1::ListUsageRequest {
        v1::ListUsageRequest {
            user_id: self.user.map(UserId::get),
            key_id: self.key.map(KeyId::get),
            upstream_id: self.upstream.map(UpstreamId::get),
            model: self.model.clone(),
            since: self.since.clone(),
            until: self.until.clone(),
            limit: Some(limit),
            cursor,
            // The console filters by status; the CLI's filters are the summary's too, and
            // summaries are not kept by status.
            status: None,
        }
    }
}

impl UsageList {
    async fn run(
        self,
        client: &mut Client,
        json: bool,
        out: &mut (dyn Write + Send),
    ) -> Result<(), CliError> {
        let page = client
            .list_usage(self.filter.request(self.limit, self.cursor))
            .await?
            .into_inner();
        if let Some(next) = &page.next_cursor {
            eprintln!("more: add --cursor {next}");
        }
        let events = page.events;
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
                Micros(e.cost_micros).to_string(),
                names::name_of::<v1::UsageStatus>(e.status).to_owned(),
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

/// `usage export`.
#[derive(Debug, Args)]
pub struct UsageExport {
    #[command(flatten)]
    pub filter: UsageFilter,
    #[arg(long = "format", id = "export_format", value_enum, default_value_t = ExportFormat::Csv)]
    pub format: ExportFormat,
    /// Write here instead of stdout.
    #[arg(long = "output", id = "export_output")]
    pub output: Option<std::path::PathBuf>,
}

/// How `usage export` writes events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// A header line of the `usage list -o json` names, then one row per event.
    Csv,
    /// One `usage list -o json` object per line.
    Jsonl,
}

/// Events per page of an export (the API's largest).
const EXPORT_PAGE: u32 = 10_000;

impl UsageExport {
    async fn run(self, client: &mut Client, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
        let mut file = match &self.output {
            Some(path) => Some(std::io::BufWriter::new(
                std::fs::File::create(path).map_err(|e| {
                    CliError::Usage(format!("cannot write {}: {e}", path.display()))
                })?,
            )),
            None => None,
        };
        let sink: &mut (dyn Write + Send) = match file.as_mut() {
            Some(f) => f,
            None => out,
        };
        let columns = gateway_proto::csv::usage_columns();
        if self.format == ExportFormat::Csv {
            writeln!(sink, "{}", columns.join(","))?;
        }
        let started = std::time::Instant::now();
        let (mut rows, mut cursor) = (0u64, None);
        loop {
            let page = client
                .list_usage(self.filter.request(EXPORT_PAGE, cursor))
                .await?
                .into_inner();
            for event in &page.events {
                let value = serde_json::to_value(event)?;
                match self.format {
                    ExportFormat::Jsonl => writeln!(sink, "{value}")?,
                    ExportFormat::Csv => {
                        writeln!(sink, "{}", gateway_proto::csv::row(&columns, &value))?
                    }
                }
            }
            rows += page.events.len() as u64;
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
            eprintln!(
                "exported {rows} events ({:.0} s)…",
                started.elapsed().as_secs_f64()
            );
        }
        sink.flush()?;
        let to = self
            .output
            .as_ref()
            .map_or_else(|| "stdout".into(), |p| p.display().to_string());
        eprintln!(
            "exported {rows} events to {to} in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

/// `usage summary`.
#[derive(Debug, Args)]
pub struct UsageSummary {
    // The words `--by` takes are the groupings' names in `names::Named`; the unspecified
    // value has none, so it cannot be asked for.
    #[arg(long, value_enum, default_value_t = v1::SummaryBy::User)]
    pub by: v1::SummaryBy,
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
                by: i32::from(self.by),
                user_id: user.map(UserId::get),
                key_id: key.map(KeyId::get),
                upstream_id: upstream.map(UpstreamId::get),
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
            &self.by.name().to_uppercase(),
            "REQUESTS",
            "IN",
            "CACHED",
            "OUT",
            "REASONING",
            "COST",
            "ESTIMATED",
            "ERRORS",
        ]);
        for r in summary.rows {
            t.row(vec![
                r.group,
                r.requests.to_string(),
                r.input_tokens.to_string(),
                r.cached_tokens.to_string(),
                r.output_tokens.to_string(),
                r.reasoning_tokens.to_string(),
                Micros(r.cost_micros).to_string(),
                r.estimated.to_string(),
                r.errors.to_string(),
            ]);
        }
        Ok(t.write(out)?)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    fn summary(args: &[&str]) -> Result<UsageSummary, clap::Error> {
        let argv = ["gatewayctl", "usage", "summary"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Usage(UsageCmd::Summary(summary)) => Ok(summary),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn by_takes_the_groupings_names_and_defaults_to_user() {
        assert_eq!(summary(&[]).unwrap().by, v1::SummaryBy::User);
        for (word, by) in [
            ("user", v1::SummaryBy::User),
            ("model", v1::SummaryBy::Model),
            ("upstream", v1::SummaryBy::Upstream),
            ("day", v1::SummaryBy::Day),
            ("key", v1::SummaryBy::Key),
            ("hour", v1::SummaryBy::Hour),
        ] {
            assert_eq!(summary(&["--by", word]).unwrap().by, by);
        }
        for refused in ["unspecified", "week", "USER"] {
            let err = summary(&["--by", refused]).unwrap_err().to_string();
            assert!(
                err.contains("[possible values: user, model, upstream, day, key, hour]"),
                "{err}"
            );
        }
    }

    #[test]
    fn filters_take_typed_ids() {
        let filter = summary(&["--user", "3", "--key", "4", "--upstream", "5"])
            .unwrap()
            .filter;
        assert_eq!(filter.user, Some(UserId(3)));
        assert_eq!(filter.key, Some(KeyId(4)));
        assert_eq!(filter.upstream, Some(UpstreamId(5)));
        let err = summary(&["--key", "0"]).unwrap_err().to_string();
        assert!(err.contains("--key"), "{err}");
        assert!(err.contains("not a valid key id"), "{err}");
    }
}
