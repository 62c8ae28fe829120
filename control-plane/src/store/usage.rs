//! The usage ledger: idempotent ingest with the balance debit in the same transaction (the
//! write itself is per backend), dead letters, and the reads and summaries over the ledger and
//! its rollups (per user and day, per hour, per user, per day and per hour over all users).

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use gateway_proto::{
    ids::{KeyId, UpstreamId, UserId},
    money::Micros,
    names::Named,
    v1::SummaryBy,
};
use sqlx::{Database, Encode, QueryBuilder, Type};

use super::{
    DailyRow, Db, DeadLetterRow, HourlyRow, IngestOutcome, Store, StoreError, SummaryRow, Tx,
    UsageFilter, UsageRow, UsageSource, audit::Change, not_found, postgres, spend, sqlite,
};

/// What ingest did to one user with new events: their id, how many events were new, their
/// balance after the debit (`None` if no such user) and the amount debited.
pub(super) type Debit = (UserId, i64, Option<Micros>, Micros);

/// The totals every summary reports, over the rollups, which hold counts of requests and of
/// estimated events…
const ROLLUP_SUMS: &str = " AS grp, CAST(SUM(requests) AS BIGINT) AS requests, \
     CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, \
     CAST(SUM(cached_tokens) AS BIGINT) AS cached_tokens, \
     CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, \
     CAST(SUM(reasoning_tokens) AS BIGINT) AS reasoning_tokens, \
     CAST(SUM(cost_micros) AS BIGINT) AS cost_micros, \
     CAST(SUM(estimated) AS BIGINT) AS estimated, CAST(SUM(errors) AS BIGINT) AS errors FROM ";
/// …and over the ledger, which holds one row per event.
const LEDGER_SUMS: &str = " AS grp, COUNT(*) AS requests, \
     CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, \
     CAST(SUM(cached_tokens) AS BIGINT) AS cached_tokens, \
     CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, \
     CAST(SUM(reasoning_tokens) AS BIGINT) AS reasoning_tokens, \
     CAST(SUM(cost_micros) AS BIGINT) AS cost_micros, \
     CAST(SUM(CASE WHEN estimated THEN 1 ELSE 0 END) AS BIGINT) AS estimated, \
     CAST(SUM(CASE WHEN status IN ('completed', 'incomplete') THEN 0 ELSE 1 END) AS BIGINT) \
     AS errors FROM ";

impl Store {
    /// Writes a batch of events and debits each user by the cost of the events that were new,
    /// in one transaction. Events already in the ledger are skipped, so redelivery is harmless.
    /// When a user's balance crosses from positive to zero or below, or a key reaches one of
    /// its spending caps, the config version is bumped so every data plane refuses them.
    pub async fn ingest_usage(&self, rows: &[UsageRow]) -> Result<IngestOutcome, StoreError> {
        if rows.is_empty() {
            return Ok(IngestOutcome::default());
        }
        let ingested = self
            .mutate(async |tx| {
                let debits = match tx {
                    Tx::Postgres(tx) => postgres::ingest(tx, rows).await?,
                    Tx::Sqlite(tx) => sqlite::ingest(tx, rows).await?,
                };
                let mut outcome = IngestOutcome::default();
                for (user_id, inserted, after, total) in debits {
                    outcome.inserted += u64::try_from(inserted).unwrap_or(0);
                    if let Some(after) = after
                        && !after.is_positive()
                        && after.saturating_add(total).is_positive()
                    {
                        outcome.exhausted_users.push(user_id);
                    }
                }
                outcome.capped_keys = spend::capped_by(tx, rows, Utc::now()).await?;
                let crossed =
                    !outcome.exhausted_users.is_empty() || !outcome.capped_keys.is_empty();
                Ok((outcome, crossed))
            })
            .await?;
        Ok(IngestOutcome {
            version: ingested.version,
            ..ingested.value
        })
    }

    /// Keeps a stream entry that cannot be ingested, with the reason.
    pub async fn dead_letter(
        &self,
        stream_id: &str,
        payload: Option<&[u8]>,
        error: &str,
    ) -> Result<(), StoreError> {
        db_run!(pool(&self.db), |c| {
            sqlx::query(
                "INSERT INTO usage_dead_letters (stream_id, payload, error, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (stream_id) DO NOTHING",
            )
            .bind(stream_id)
            .bind(payload)
            .bind(error)
            .bind(Utc::now())
            .execute(c)
            .await?;
        });
        Ok(())
    }

    /// Deletes up to `batch` ledger events that started before `before`, oldest first, in one
    /// short statement (it locks only the rows it deletes, so ingest goes on); how many. The
    /// rollups are left as they are.
    pub async fn delete_usage_before(
        &self,
        before: DateTime<Utc>,
        batch: i64,
    ) -> Result<u64, StoreError> {
        Ok(db_run!(pool(&self.db), |c| sqlx::query(
            "DELETE FROM usage_events WHERE id IN (SELECT id FROM usage_events \
             WHERE started_at < $1 ORDER BY started_at LIMIT $2)",
        )
        .bind(before)
        .bind(batch)
        .execute(c)
        .await?
        .rows_affected()))
    }

    /// The newest `limit` dead letters.
    pub async fn list_dead_letters(&self, limit: i64) -> Result<Vec<DeadLetterRow>, StoreError> {
        Ok(db_run!(pool(&self.db), |c| sqlx::query_as(
            "SELECT stream_id, payload, error, created_at FROM usage_dead_letters \
             ORDER BY created_at DESC, stream_id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(c)
        .await?))
    }

    /// One dead letter.
    pub async fn get_dead_letter(&self, stream_id: &str) -> Result<DeadLetterRow, StoreError> {
        db_run!(pool(&self.db), |c| sqlx::query_as(
            "SELECT stream_id, payload, error, created_at FROM usage_dead_letters \
             WHERE stream_id = $1",
        )
        .bind(stream_id)
        .fetch_optional(c)
        .await?)
        .ok_or_else(|| not_found("dead letter", stream_id))
    }

    /// Removes a dead letter (`redriven`: because it was just billed) and records who did;
    /// returns it as it was.
    pub async fn drop_dead_letter(
        &self,
        stream_id: &str,
        redriven: bool,
    ) -> Result<DeadLetterRow, StoreError> {
        let mut tx = self.db.begin().await?;
        let row: DeadLetterRow = db_run!(tx(&mut tx), |c| sqlx::query_as(
            "DELETE FROM usage_dead_letters WHERE stream_id = $1 \
             RETURNING stream_id, payload, error, created_at",
        )
        .bind(stream_id)
        .fetch_optional(c)
        .await?)
        .ok_or_else(|| not_found("dead letter", stream_id))?;
        let action = if redriven {
            "dead_letter.redrive"
        } else {
            "dead_letter.drop"
        };
        let detail = serde_json::json!({ "error": row.error });
        Change::new(action, format!("dead letter {stream_id}"), &detail)
            .record(&mut tx, &self.actor, None)
            .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Per-day rollups, newest day first, optionally of one user.
    pub async fn daily_usage(&self, user_id: Option<UserId>) -> Result<Vec<DailyRow>, StoreError> {
        Ok(db_run!(pool(&self.db), |c| sqlx::query_as(
            "SELECT day, user_id, model, requests, input_tokens, cached_tokens, output_tokens, \
             reasoning_tokens, cost_micros, estimated, errors FROM usage_daily \
             WHERE (CAST($1 AS BIGINT) IS NULL OR user_id = $1) ORDER BY day DESC, user_id, model",
        )
        .bind(user_id)
        .fetch_all(c)
        .await?))
    }

    /// Per-hour rollups of the hours from `since`'s on, oldest first.
    pub async fn hourly_usage(&self, since: DateTime<Utc>) -> Result<Vec<HourlyRow>, StoreError> {
        Ok(db_run!(pool(&self.db), |c| sqlx::query_as(
            "SELECT hour, key_id, user_id, model, upstream_id, requests, input_tokens, \
             cached_tokens, output_tokens, reasoning_tokens, cost_micros, estimated, errors \
             FROM usage_hourly WHERE hour >= $1 \
             ORDER BY hour, key_id, user_id, model, COALESCE(upstream_id, 0)",
        )
        .bind(hour_of(since)?)
        .fetch_all(c)
        .await?))
    }

    /// Usage events, newest first.
    pub async fn list_usage(&self, filter: &UsageFilter) -> Result<Vec<UsageRow>, StoreError> {
        Ok(db_run!(pool(&self.db), |c| {
            let mut q = QueryBuilder::new(concat!(
                "SELECT ",
                usage_columns!(),
                " FROM usage_events WHERE 1 = 1"
            ));
            push_filters(&mut q, filter, UsageSource::Ledger);
            if let Some((t, id)) = filter.after {
                q.push(" AND (started_at < ")
                    .push_bind(t)
                    .push(" OR (started_at = ")
                    .push_bind(t)
                    .push(" AND id < ")
                    .push_bind(id)
                    .push("))");
            }
            q.push(" ORDER BY started_at DESC, id DESC LIMIT ")
                .push_bind(filter.limit);
            q.build_query_as().fetch_all(c).await?
        }))
    }

    /// Totals per user, model, upstream, UTC day, key or UTC hour, largest cost first. The rollups hold the
    /// same totals in far fewer rows than the ledger, so the smallest that can answer does
    /// ([`UsageFilter::source`]). An unspecified grouping is refused.
    pub async fn summarize_usage(
        &self,
        by: SummaryBy,
        filter: &UsageFilter,
    ) -> Result<Vec<SummaryRow>, StoreError> {
        let source = filter.source(by);
        let sqlite = matches!(self.db, Db::Sqlite(..));
        // Grouped by the column itself, turned into text once per group rather than once
        // per row (a third of a summary's time over a quarter million rollup rows).
        let (group, key) = match (by, source) {
            (SummaryBy::Unspecified, _) => {
                return Err(StoreError::Invalid(
                    "a usage summary needs a grouping (user, model, upstream or day)".into(),
                ));
            }
            (SummaryBy::User, _) => ("CAST(user_id AS TEXT)", "user_id"),
            (SummaryBy::Model, _) => ("model", "model"),
            (SummaryBy::Upstream, _) => ("COALESCE(CAST(upstream_id AS TEXT), '-')", "upstream_id"),
            // The one spot the dialects differ: SQLite keeps timestamps as UTC RFC 3339 text,
            // whose first ten characters are the day.
            (SummaryBy::Day, UsageSource::Ledger) if sqlite => ("substr(started_at, 1, 10)", "grp"),
            (SummaryBy::Day, UsageSource::Ledger) => (
                "to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
                "grp",
            ),
            (SummaryBy::Day, UsageSource::Hourly | UsageSource::ByHour) if sqlite => {
                ("substr(hour, 1, 10)", "grp")
            }
            (SummaryBy::Day, UsageSource::Hourly | UsageSource::ByHour) => {
                ("to_char(hour AT TIME ZONE 'UTC', 'YYYY-MM-DD')", "grp")
            }
            (SummaryBy::Day, _) => ("day", "day"),
            (SummaryBy::Key, _) => ("CAST(key_id AS TEXT)", "key_id"),
            (SummaryBy::Hour, UsageSource::Ledger) if sqlite => {
                ("substr(started_at, 1, 13) || ':00:00Z'", "grp")
            }
            (SummaryBy::Hour, UsageSource::Ledger) => (
                "to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24\":00:00Z\"')",
                "grp",
            ),
            (SummaryBy::Hour, _) if sqlite => ("substr(hour, 1, 13) || ':00:00Z'", "grp"),
            (SummaryBy::Hour, _) => (
                "to_char(hour AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24\":00:00Z\"')",
                "grp",
            ),
        };
        let sums = match source {
            UsageSource::Ledger => LEDGER_SUMS,
            _ => ROLLUP_SUMS,
        };
        Ok(db_run!(pool(&self.db), |c| {
            let mut q = QueryBuilder::new("SELECT ");
            q.push(group)
                .push(sums)
                .push(source.table())
                .push(" WHERE 1 = 1");
            push_filters(&mut q, filter, source);
            q.push(" GROUP BY ")
                .push(key)
                .push(" ORDER BY cost_micros DESC, grp");
            q.build_query_as().fetch_all(c).await?
        }))
    }
}

/// The start of `t`'s UTC hour.
pub(super) fn hour_of(t: DateTime<Utc>) -> Result<DateTime<Utc>, StoreError> {
    t.duration_trunc(TimeDelta::hours(1))
        .map_err(|e| StoreError::Invalid(format!("no hour for {t}: {e}")))
}

/// Appends the filter's conditions on `source`, which keeps every column it names and its
/// time window ([`UsageFilter::source`]): on a rollup the bounds are whole hours or days, so
/// comparing the rollup's hour or day gives exactly the events between them.
fn push_filters<DB: Database>(q: &mut QueryBuilder<DB>, filter: &UsageFilter, source: UsageSource)
where
    for<'t> UserId: Encode<'t, DB> + Type<DB>,
    for<'t> KeyId: Encode<'t, DB> + Type<DB>,
    for<'t> UpstreamId: Encode<'t, DB> + Type<DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> DateTime<Utc>: Encode<'t, DB> + Type<DB>,
{
    if let Some(user_id) = filter.user_id {
        q.push(" AND user_id = ").push_bind(user_id);
    }
    if let Some(key_id) = filter.key_id {
        q.push(" AND key_id = ").push_bind(key_id);
    }
    if let Some(upstream_id) = filter.upstream_id {
        q.push(" AND upstream_id = ").push_bind(upstream_id);
    }
    if let Some(model) = &filter.model {
        q.push(" AND model = ").push_bind(model.clone());
    }
    for (bound, op) in [(filter.since, " >= "), (filter.until, " < ")] {
        let Some(t) = bound else { continue };
        match source {
            UsageSource::Ledger => q.push(" AND started_at").push(op).push_bind(t),
            UsageSource::Hourly | UsageSource::ByHour => q.push(" AND hour").push(op).push_bind(t),
            // (`usage_by_user` keeps no time, so it is never asked with a window.)
            UsageSource::ByDay | UsageSource::Daily | UsageSource::ByUser => q
                .push(" AND day")
                .push(op)
                .push_bind(t.format("%Y-%m-%d").to_string()),
        };
    }
    if let Some(status) = filter.status {
        q.push(" AND status = ").push_bind(status.name().to_owned());
    }
}
