//! The usage ledger and its rollups: rows, filters, and which table answers a summary.

use chrono::{DateTime, Utc};
use gateway_proto::{
    ids::{KeyId, UpstreamId, UserId},
    money::Micros,
    v1::{SummaryBy, UsageStatus},
};
use uuid::Uuid;

/// What a group of usage events adds up to: the counters every rollup and summary keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Totals {
    pub requests: i64,
    pub input_tokens: i64,
    pub cached_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost_micros: Micros,
    pub estimated: i64,
    /// Events whose status was neither completed nor incomplete.
    pub errors: i64,
}

/// One group of a usage summary.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SummaryRow {
    pub grp: String,
    #[sqlx(flatten)]
    pub totals: Totals,
}

/// One day of one user's usage of one model.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DailyRow {
    pub day: String,
    pub user_id: UserId,
    pub model: String,
    #[sqlx(flatten)]
    pub totals: Totals,
}

/// One UTC hour (from `hour`) of a key's usage of a model through an upstream (or none).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HourlyRow {
    pub hour: DateTime<Utc>,
    pub key_id: KeyId,
    pub user_id: UserId,
    pub model: String,
    pub upstream_id: Option<UpstreamId>,
    #[sqlx(flatten)]
    pub totals: Totals,
}

/// One usage event in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UsageRow {
    pub id: Uuid,
    pub request_id: String,
    pub key_id: KeyId,
    pub user_id: UserId,
    pub upstream_id: Option<UpstreamId>,
    pub model: String,
    pub endpoint: String,
    pub input_tokens: i64,
    pub cached_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost_micros: Micros,
    pub status: UsageStatus,
    pub stream: bool,
    pub estimated: bool,
    pub ttfb_ms: i32,
    pub duration_ms: i32,
    pub node_id: String,
    pub started_at: DateTime<Utc>,
}

/// A usage entry the ledger set aside, with why.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeadLetterRow {
    pub stream_id: String,
    /// The protobuf `UsageEvent` as it arrived, if there was one.
    pub payload: Option<Vec<u8>>,
    pub error: String,
    pub created_at: DateTime<Utc>,
}

/// Filters for listing usage.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub user_id: Option<UserId>,
    pub key_id: Option<KeyId>,
    pub upstream_id: Option<UpstreamId>,
    pub model: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Only events that ended so (the rollups do not keep it).
    pub status: Option<UsageStatus>,
    pub limit: i64,
    /// Only events after this one in the listing order (newest first): keyset paging by
    /// start time and id.
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

impl UsageFilter {
    /// Where a summary of this filter grouped `by` is read from: the smallest table that keeps
    /// the grouping, every column the filter names and its time window (a window on whole UTC
    /// days can be read from the daily rollups, one on whole hours from the hourly ones; any
    /// other, or a status, needs the ledger).
    pub fn source(&self, by: SummaryBy) -> UsageSource {
        let group = match by {
            SummaryBy::User => "user_id",
            SummaryBy::Model => "model",
            SummaryBy::Upstream => "upstream_id",
            SummaryBy::Day | SummaryBy::Unspecified => "day",
            SummaryBy::Key => "key_id",
            SummaryBy::Hour => "hour",
        };
        let filtered = [
            (self.user_id.is_some(), "user_id"),
            (self.key_id.is_some(), "key_id"),
            (self.upstream_id.is_some(), "upstream_id"),
            (self.model.is_some(), "model"),
        ];
        let window = self.window();
        let keeps = |source: UsageSource| {
            let columns = source.columns();
            window >= source.grain()
                && columns.contains(&group)
                && filtered.iter().all(|&(on, c)| !on || columns.contains(&c))
        };
        if self.status.is_some() {
            return UsageSource::Ledger;
        }
        [
            UsageSource::ByDay,
            UsageSource::ByUser,
            UsageSource::Daily,
            UsageSource::ByHour,
            UsageSource::Hourly,
        ]
        .into_iter()
        .find(|&s| keeps(s))
        .unwrap_or(UsageSource::Ledger)
    }

    /// Whether a rollup holds exactly the totals this summary asks for.
    pub fn rollups_answer(&self, by: SummaryBy) -> bool {
        self.source(by) != UsageSource::Ledger
    }

    /// The coarsest grain both time bounds fall on.
    fn window(&self) -> Grain {
        [self.since, self.until]
            .into_iter()
            .flatten()
            .map(|t| {
                if t.timestamp_subsec_nanos() != 0 || t.timestamp().rem_euclid(3600) != 0 {
                    Grain::Instant
                } else if t.timestamp().rem_euclid(86_400) != 0 {
                    Grain::Hour
                } else {
                    Grain::Day
                }
            })
            .min()
            .unwrap_or(Grain::All)
    }
}

/// How finely a table keeps time, or how coarsely a filter's bounds fall, finest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(in crate::store) enum Grain {
    /// Each event's own start.
    Instant,
    /// Whole UTC hours.
    Hour,
    /// Whole UTC days.
    Day,
    /// No time at all (totals over all time).
    All,
}

/// A table usage summaries read: a rollup written with the ledger, or the ledger itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageSource {
    /// `usage_by_day`: each UTC day per model and upstream, over all users.
    ByDay,
    /// `usage_by_user`: each user per model, all time.
    ByUser,
    /// `usage_daily`: each UTC day per user and model.
    Daily,
    /// `usage_by_hour`: each UTC hour per model and upstream, over all users.
    ByHour,
    /// `usage_hourly`: each UTC hour per key, user, model and upstream.
    Hourly,
    /// `usage_events`: one row per event.
    Ledger,
}

impl UsageSource {
    /// Its table.
    pub fn table(self) -> &'static str {
        match self {
            Self::ByDay => "usage_by_day",
            Self::ByUser => "usage_by_user",
            Self::Daily => "usage_daily",
            Self::ByHour => "usage_by_hour",
            Self::Hourly => "usage_hourly",
            Self::Ledger => "usage_events",
        }
    }

    /// The finest time it keeps: a window on anything finer needs another table.
    pub(in crate::store) fn grain(self) -> Grain {
        match self {
            Self::ByUser => Grain::All,
            Self::ByDay | Self::Daily => Grain::Day,
            Self::ByHour | Self::Hourly => Grain::Hour,
            Self::Ledger => Grain::Instant,
        }
    }

    /// The columns it can group or filter by (`day` and `hour` are the UTC day and hour,
    /// which the ledger and the hourly rollups compute).
    fn columns(self) -> &'static [&'static str] {
        match self {
            Self::ByDay => &["day", "model", "upstream_id"],
            Self::ByUser => &["user_id", "model"],
            Self::Daily => &["day", "user_id", "model"],
            Self::ByHour => &["day", "hour", "model", "upstream_id"],
            Self::Hourly => &["day", "hour", "key_id", "user_id", "model", "upstream_id"],
            Self::Ledger => &["day", "hour", "key_id", "user_id", "model", "upstream_id"],
        }
    }
}

/// What one ingest transaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Events newly written (duplicates are not counted).
    pub inserted: u64,
    /// Users whose balance went from positive to zero or below.
    pub exhausted_users: Vec<UserId>,
    /// Keys that reached a spending cap.
    pub capped_keys: Vec<KeyId>,
    /// The config version bumped for them, if any.
    pub version: Option<i64>,
}
