//! What capped keys have spent per window, read from the hourly rollups: for the snapshot
//! (data planes enforce caps from it), for the admin API and `GET /v1/usage`, and in the
//! ingest transaction to see a key reach a cap. Rolling windows are whole UTC hours
//! ([`SpendWindow::start_ms`]); an event counts for the hour it started in.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use gateway_proto::{ids::KeyId, v1::SpendWindow};
use sqlx::QueryBuilder;

use super::{KeySpend, SpendCaps, Store, StoreError, Tx, UsageRow};

impl Store {
    /// What each of `keys` has spent in every window ending at `now`; keys that never spent
    /// are left out.
    pub async fn key_spend(
        &self,
        keys: &[KeyId],
        now: DateTime<Utc>,
    ) -> Result<HashMap<KeyId, KeySpend>, StoreError> {
        let mut tx = self.db.begin().await?;
        let spend = key_spend_in(&mut tx, keys, now).await?;
        tx.commit().await?;
        Ok(spend)
    }

    /// At the start of each UTC hour spend leaves the rolling windows with no event to say
    /// so: bumps the config version once for `now`'s hour (whichever replica gets there
    /// first) when some key has a rolling cap, so snapshots recount them. The new version,
    /// if this call bumped it.
    pub async fn roll_spend_windows(&self, now: DateTime<Utc>) -> Result<Option<i64>, StoreError> {
        let hour = now.timestamp().div_euclid(3600);
        let rolled = self
            .mutate(async |tx| {
                let rolled = db_run!(tx(tx), |c| sqlx::query(
                    "UPDATE config_state SET windows_rolled_hour = $1 \
                     WHERE windows_rolled_hour < $1 AND EXISTS (SELECT 1 FROM api_keys \
                     WHERE revoked_at IS NULL AND (spend_limit_5h_micros IS NOT NULL \
                     OR spend_limit_day_micros IS NOT NULL OR spend_limit_week_micros IS NOT NULL \
                     OR spend_limit_month_micros IS NOT NULL))"
                )
                .bind(hour)
                .execute(c)
                .await?
                .rows_affected());
                Ok(((), rolled > 0))
            })
            .await?;
        Ok(rolled.version)
    }
}

/// [`Store::key_spend`] inside a transaction.
pub(super) async fn key_spend_in(
    tx: &mut Tx,
    keys: &[KeyId],
    now: DateTime<Utc>,
) -> Result<HashMap<KeyId, KeySpend>, StoreError> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let now_ms = now.timestamp_millis();
    let start = |w: SpendWindow| {
        w.start_ms(now_ms)
            .and_then(DateTime::from_timestamp_millis)
            .ok_or_else(|| StoreError::Invalid(format!("no {w:?} window ends at {now}")))
    };
    let windows = [
        ("five_hours", start(SpendWindow::FiveHours)?),
        ("day", start(SpendWindow::Day)?),
        ("week", start(SpendWindow::Week)?),
        ("month", start(SpendWindow::Month)?),
    ];
    let mut spend = HashMap::new();
    // Bounded statements: a bind per key, and SQLite allows some thousands per statement.
    for chunk in keys.chunks(KEYS_PER_QUERY) {
        spend.extend(
            spend_of(tx, chunk, &windows)
                .await?
                .into_iter()
                .map(|r| (r.key_id, r)),
        );
    }
    Ok(spend)
}

/// Keys per spend query.
const KEYS_PER_QUERY: usize = 1_000;

async fn spend_of(
    tx: &mut Tx,
    keys: &[KeyId],
    windows: &[(&str, DateTime<Utc>); 4],
) -> Result<Vec<KeySpend>, StoreError> {
    Ok(db_run!(tx(tx), |c| {
        let mut q =
            QueryBuilder::new("SELECT key_id, CAST(SUM(cost_micros) AS BIGINT) AS lifetime");
        for &(name, since) in windows {
            q.push(", CAST(SUM(CASE WHEN hour >= ")
                .push_bind(since)
                .push(" THEN cost_micros ELSE 0 END) AS BIGINT) AS ")
                .push(name);
        }
        for &(name, since) in windows {
            q.push(", MIN(CASE WHEN cost_micros > 0 AND hour >= ")
                .push_bind(since)
                .push(" THEN hour END) AS ")
                .push(name)
                .push("_oldest");
        }
        q.push(" FROM usage_hourly WHERE key_id IN (");
        let mut ids = q.separated(", ");
        keys.iter().for_each(|k| _ = ids.push_bind(*k));
        q.push(") GROUP BY key_id");
        q.build_query_as().fetch_all(c).await?
    }))
}

/// Keys of `rows` whose new spend took them to one of their caps, given what they have spent
/// after it. A key counts as reaching a cap when its spend less the whole batch's cost for
/// it was below the cap and its spend now is not: an event already in the ledger (a
/// redelivery) or one outside the window can only make this say yes more often, never miss a
/// crossing.
pub(super) async fn capped_by(
    tx: &mut Tx,
    rows: &[UsageRow],
    now: DateTime<Utc>,
) -> Result<Vec<KeyId>, StoreError> {
    let mut batch: HashMap<KeyId, i64> = HashMap::new();
    for row in rows.iter().filter(|r| r.cost_micros.is_positive()) {
        let cost = batch.entry(row.key_id).or_default();
        *cost = cost.saturating_add(row.cost_micros.get());
    }
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let capped: Vec<(KeyId, SpendCaps)> = db_run!(tx(tx), |c| {
        let mut q = QueryBuilder::new(
            "SELECT id, spend_limit_micros, spend_limit_5h_micros, spend_limit_day_micros, \
             spend_limit_week_micros, spend_limit_month_micros FROM api_keys WHERE id IN (",
        );
        let mut ids = q.separated(", ");
        batch.keys().for_each(|k| _ = ids.push_bind(*k));
        q.push(
            ") AND (spend_limit_micros IS NOT NULL OR spend_limit_5h_micros IS NOT NULL \
             OR spend_limit_day_micros IS NOT NULL OR spend_limit_week_micros IS NOT NULL \
             OR spend_limit_month_micros IS NOT NULL) ORDER BY id",
        );
        let rows: Vec<CappedRow> = q.build_query_as().fetch_all(c).await?;
        rows.into_iter().map(|r| (r.id, r.caps)).collect()
    });
    if capped.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<KeyId> = capped.iter().map(|(id, _)| *id).collect();
    let spend = key_spend_in(tx, &ids, now).await?;
    Ok(capped
        .into_iter()
        .filter(|(id, caps)| {
            let added = batch.get(id).copied().unwrap_or(0);
            let spent = spend.get(id);
            caps.iter().any(|(window, limit)| {
                let after = spent.map_or(0, |s| s.window(window).0.get());
                after >= limit.get() && after.saturating_sub(added) < limit.get()
            })
        })
        .map(|(id, _)| id)
        .collect())
}

#[derive(sqlx::FromRow)]
struct CappedRow {
    id: KeyId,
    #[sqlx(flatten)]
    caps: SpendCaps,
}
