//! Rows as the store reads and writes them, mapped once for both backends.

use chrono::{DateTime, Utc};
use gateway_proto::{
    ids::{KeyId, UpstreamId, UserId},
    money::Micros,
    v1::{SpendState, SpendWindow, SummaryBy, UpstreamHealth, UsageStatus},
};
use sqlx::{
    Database, Decode, Encode, Postgres, Sqlite, Type, encode::IsNull, error::BoxDynError,
    types::Json,
};
use uuid::Uuid;

/// An upstream account pool.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UpstreamRow {
    pub id: UpstreamId,
    pub name: String,
    pub base_url: String,
    pub api_key_hint: String,
    pub priority: i32,
    pub weight: i32,
    pub max_retries: i32,
    pub timeout_ms: i32,
    pub enabled: bool,
    pub health: UpstreamHealth,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub probe_path: String,
    pub health_error: String,
    pub health_checked_at: Option<DateTime<Utc>>,
    /// The models it serves; empty means every model.
    #[sqlx(try_from = "TextList")]
    pub models: Vec<String>,
}

/// An upstream with its encrypted API key, as the snapshot needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UpstreamSecretRow {
    #[sqlx(flatten)]
    pub upstream: UpstreamRow,
    pub api_key_enc: Vec<u8>,
}

/// A new upstream; the key is already encrypted (and never in its audit detail).
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewUpstream {
    pub name: String,
    pub base_url: String,
    #[serde(skip)]
    pub api_key_enc: Vec<u8>,
    pub api_key_hint: String,
    pub priority: i32,
    pub weight: i32,
    pub max_retries: i32,
    pub timeout_ms: i32,
    pub enabled: bool,
    pub probe_path: String,
    /// The models it serves; empty means every model.
    pub models: Vec<String>,
}

/// Changes to an upstream; `None` leaves a field as it is. Its audit detail names the fields
/// set, and a new API key only by its hint.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UpstreamPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The encrypted key and its hint.
    #[serde(rename = "api_key_hint", serialize_with = "hint_only")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<(Vec<u8>, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_path: Option<String>,
    /// Replaces the models it serves; `Some(vec![])` means every model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UserPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multiplier_ppm: Option<i64>,
}

/// Changes to a key; `None` leaves a field as it is, `Some(None)` clears it (`null` in its
/// audit detail).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct KeyPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Option<DateTime<Utc>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_allow: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm: Option<Option<i32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Option<i32>>,
    /// Replaces every cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caps: Option<SpendCaps>,
}

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

/// The result of one health probe, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthUpdate {
    pub upstream_id: UpstreamId,
    /// Healthy or unhealthy (a probe always has an outcome).
    pub health: UpstreamHealth,
    pub error: String,
    /// Whether routing changes, so data planes need a new snapshot.
    pub bump: bool,
}

/// A user and their balance.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: UserId,
    pub name: String,
    pub balance_micros: Micros,
    pub multiplier_ppm: i64,
    pub created_at: DateTime<Utc>,
}

/// A gateway key (never its secret).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub id: KeyId,
    pub user_id: UserId,
    pub name: String,
    pub prefix: String,
    pub digest: Vec<u8>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    #[sqlx(try_from = "TextList")]
    pub models: Vec<String>,
    #[sqlx(try_from = "TextList")]
    pub ip_allow: Vec<String>,
    pub rpm: Option<i32>,
    pub concurrency: Option<i32>,
    pub created_at: DateTime<Utc>,
    #[sqlx(flatten)]
    pub caps: SpendCaps,
}

/// A key's spending caps, one column per window; `None` = no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct SpendCaps {
    #[sqlx(rename = "spend_limit_micros")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<Micros>,
    #[sqlx(rename = "spend_limit_5h_micros")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub five_hours: Option<Micros>,
    #[sqlx(rename = "spend_limit_day_micros")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<Micros>,
    #[sqlx(rename = "spend_limit_week_micros")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub week: Option<Micros>,
    #[sqlx(rename = "spend_limit_month_micros")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub month: Option<Micros>,
}

impl SpendCaps {
    /// The caps set, by window, in the order of [`SpendWindow`].
    pub fn iter(&self) -> impl Iterator<Item = (SpendWindow, Micros)> + '_ {
        [
            (SpendWindow::Lifetime, self.lifetime),
            (SpendWindow::FiveHours, self.five_hours),
            (SpendWindow::Day, self.day),
            (SpendWindow::Week, self.week),
            (SpendWindow::Month, self.month),
        ]
        .into_iter()
        .filter_map(|(w, cap)| cap.map(|c| (w, c)))
    }

    /// The cap of `window`, to set.
    pub fn slot(&mut self, window: SpendWindow) -> Option<&mut Option<Micros>> {
        Some(match window {
            SpendWindow::Unspecified => return None,
            SpendWindow::Lifetime => &mut self.lifetime,
            SpendWindow::FiveHours => &mut self.five_hours,
            SpendWindow::Day => &mut self.day,
            SpendWindow::Week => &mut self.week,
            SpendWindow::Month => &mut self.month,
        })
    }

    /// Whether any cap is set.
    pub fn any(&self) -> bool {
        self.iter().next().is_some()
    }

    /// Each cap with what `spend` says was spent in its window, and when room frees.
    pub fn states(&self, spend: Option<&KeySpend>) -> Vec<SpendState> {
        self.iter()
            .map(|(window, limit)| {
                let (spent, oldest) = spend.map_or((Micros::ZERO, None), |s| s.window(window));
                let frees_at = oldest
                    .and_then(|h| window.leaves_at_ms(h.timestamp_millis()))
                    .unwrap_or(0);
                SpendState::new(window, limit, spent, frees_at)
            })
            .collect()
    }
}

/// What a key has spent in every window ending at one moment, and per rolling window the
/// oldest hour with spend in it (when room frees next).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KeySpend {
    pub key_id: KeyId,
    pub lifetime: Micros,
    pub five_hours: Micros,
    pub day: Micros,
    pub week: Micros,
    pub month: Micros,
    pub five_hours_oldest: Option<DateTime<Utc>>,
    pub day_oldest: Option<DateTime<Utc>>,
    pub week_oldest: Option<DateTime<Utc>>,
    pub month_oldest: Option<DateTime<Utc>>,
}

impl KeySpend {
    /// Spent in `window`, and the oldest hour of it (none for the lifetime).
    pub fn window(&self, window: SpendWindow) -> (Micros, Option<DateTime<Utc>>) {
        match window {
            SpendWindow::Unspecified => (Micros::ZERO, None),
            SpendWindow::Lifetime => (self.lifetime, None),
            SpendWindow::FiveHours => (self.five_hours, self.five_hours_oldest),
            SpendWindow::Day => (self.day, self.day_oldest),
            SpendWindow::Week => (self.week, self.week_oldest),
            SpendWindow::Month => (self.month, self.month_oldest),
        }
    }
}

/// A list of strings as a column: `TEXT[]` on Postgres, JSON text on SQLite (which has no
/// arrays), so one query binds and reads it on both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TextList(pub(super) Vec<String>);

impl From<TextList> for Vec<String> {
    fn from(list: TextList) -> Self {
        list.0
    }
}

impl Type<Postgres> for TextList {
    fn type_info() -> <Postgres as Database>::TypeInfo {
        <Vec<String> as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &<Postgres as Database>::TypeInfo) -> bool {
        <Vec<String> as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for TextList {
    fn encode_by_ref(
        &self,
        buf: &mut <Postgres as Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        <Vec<String> as Encode<'_, Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for TextList {
    fn decode(value: <Postgres as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        <Vec<String> as Decode<'r, Postgres>>::decode(value).map(Self)
    }
}

impl Type<Sqlite> for TextList {
    fn type_info() -> <Sqlite as Database>::TypeInfo {
        <Json<Vec<String>> as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &<Sqlite as Database>::TypeInfo) -> bool {
        <Json<Vec<String>> as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for TextList {
    fn encode_by_ref(
        &self,
        buf: &mut <Sqlite as Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        <Json<&Vec<String>> as Encode<'_, Sqlite>>::encode_by_ref(&Json(&self.0), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for TextList {
    fn decode(value: <Sqlite as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        <Json<Vec<String>> as Decode<'r, Sqlite>>::decode(value).map(|list| Self(list.0))
    }
}

/// A new gateway key (its digest is never in its audit detail).
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewKey {
    pub user_id: UserId,
    pub name: String,
    pub prefix: String,
    #[serde(skip)]
    pub digest: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    pub models: Vec<String>,
    pub ip_allow: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<i32>,
    pub caps: SpendCaps,
}

/// Price of a model per 1M tokens, in micro-units.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct PriceRow {
    pub model: String,
    pub input_micros: Micros,
    pub cached_input_micros: Micros,
    pub output_micros: Micros,
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

/// One admin change as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub principal: String,
    pub source: String,
    /// What was done: `upstream.create`, `key.revoke`, …
    pub action: String,
    /// To what: `upstream 3`, `price gpt-5`.
    pub target: String,
    /// The fields it set, as JSON (never a secret).
    pub detail: String,
    /// The config version it produced, if any.
    pub config_version: Option<i64>,
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
pub(super) enum Grain {
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
    pub(super) fn grain(self) -> Grain {
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

/// Everything a snapshot is built from, read in one consistent transaction.
#[derive(Debug, Clone)]
pub struct SnapshotState {
    pub version: i64,
    pub upstreams: Vec<UpstreamSecretRow>,
    pub keys: Vec<KeyRow>,
    /// What each capped key has spent, as of `read_at`.
    pub key_spend: std::collections::HashMap<KeyId, KeySpend>,
    pub read_at: DateTime<Utc>,
    pub users: Vec<UserRow>,
    pub prices: Vec<PriceRow>,
}

/// An upstream patch's new key as its hint alone.
fn hint_only<S: serde::Serializer>(
    key: &Option<(Vec<u8>, String)>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_some(&key.as_ref().map(|(_, hint)| hint))
}
