//! What only SQLite does: the standalone store is one file owned by one process, so one
//! connection serialises every write (no locks to order, always the leader, in-process change
//! notifications), and a usage batch is ingested event by event.

use std::{collections::BTreeMap, str::FromStr, time::Duration};

use chrono::Utc;
use gateway_proto::{ids::UserId, money::Micros, names::Named};
use sqlx::{
    Sqlite, SqlitePool, Transaction,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::{StoreError, UsageRow, usage::Debit};

/// Opens (creating if needed) the database, applies pending migrations and reads the config
/// version the change feed starts from (and how many migrations it applied).
pub(super) async fn connect(url: &str) -> Result<(SqlitePool, i64, u64), StoreError> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // Money is in here: every commit is durable before it is acknowledged.
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    let migrated = super::migrations::run(&pool, super::migrations::SQLITE).await?;
    let version = sqlx::query_scalar("SELECT version FROM config_state")
        .fetch_one(&pool)
        .await?;
    Ok((pool, version, migrated))
}

/// One new event's rollup counters (the same as Postgres's bulk path, over one row; the last:
/// whether it failed).
macro_rules! one {
    () => {
        "1, input_tokens, cached_tokens, output_tokens, reasoning_tokens, cost_micros, estimated, \
         CASE WHEN status IN ('completed', 'incomplete') THEN 0 ELSE 1 END"
    };
}

/// Adds one new event, by id, to each rollup (`WHERE` lets SQLite parse the upsert).
const ROLLUPS: [&str; 5] = [
    concat!(
        "INSERT INTO usage_daily (day, user_id, model, ",
        counter_columns!(),
        ") SELECT substr(started_at, 1, 10), user_id, model, ",
        one!(),
        " FROM usage_events WHERE id = $1 ON CONFLICT (day, user_id, model) DO UPDATE SET ",
        add_counters!("usage_daily")
    ),
    concat!(
        "INSERT INTO usage_hourly (hour, key_id, user_id, model, upstream_id, ",
        counter_columns!(),
        ") SELECT substr(started_at, 1, 13) || ':00:00+00:00', key_id, user_id, model, \
         upstream_id, ",
        one!(),
        " FROM usage_events WHERE id = $1 \
         ON CONFLICT (hour, key_id, user_id, model, COALESCE(upstream_id, 0)) DO UPDATE SET ",
        add_counters!("usage_hourly")
    ),
    concat!(
        "INSERT INTO usage_by_user (user_id, model, ",
        counter_columns!(),
        ") SELECT user_id, model, ",
        one!(),
        " FROM usage_events WHERE id = $1 ON CONFLICT (user_id, model) DO UPDATE SET ",
        add_counters!("usage_by_user")
    ),
    concat!(
        "INSERT INTO usage_by_day (day, model, upstream_id, ",
        counter_columns!(),
        ") SELECT substr(started_at, 1, 10), model, upstream_id, ",
        one!(),
        " FROM usage_events WHERE id = $1 \
         ON CONFLICT (day, model, COALESCE(upstream_id, 0)) DO UPDATE SET ",
        add_counters!("usage_by_day")
    ),
    concat!(
        "INSERT INTO usage_by_hour (hour, model, upstream_id, ",
        counter_columns!(),
        ") SELECT substr(started_at, 1, 13) || ':00:00+00:00', model, upstream_id, ",
        one!(),
        " FROM usage_events WHERE id = $1 \
         ON CONFLICT (hour, model, COALESCE(upstream_id, 0)) DO UPDATE SET ",
        add_counters!("usage_by_hour")
    ),
];

/// Writes the events not yet in the ledger, rolls them up and debits their
/// users: one row per user with new events, in user id order.
pub(super) async fn ingest(
    tx: &mut Transaction<'static, Sqlite>,
    rows: &[UsageRow],
) -> Result<Vec<Debit>, StoreError> {
    let now = Utc::now();
    let mut per_user: BTreeMap<UserId, (i64, Micros)> = BTreeMap::new();
    for r in rows {
        let inserted = sqlx::query(concat!(
            "INSERT INTO usage_events (",
            usage_columns!(),
            ", ingested_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
             $14, $15, $16, $17, $18, $19, $20) ON CONFLICT (id) DO NOTHING"
        ))
        .bind(r.id)
        .bind(&r.request_id)
        .bind(r.key_id)
        .bind(r.user_id)
        .bind(r.upstream_id)
        .bind(&r.model)
        .bind(&r.endpoint)
        .bind(r.input_tokens)
        .bind(r.cached_tokens)
        .bind(r.output_tokens)
        .bind(r.reasoning_tokens)
        .bind(r.cost_micros)
        .bind(r.status.name())
        .bind(r.stream)
        .bind(r.estimated)
        .bind(r.ttfb_ms)
        .bind(r.duration_ms)
        .bind(&r.node_id)
        .bind(r.started_at)
        .bind(now)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if inserted != 1 {
            continue;
        }
        let user = per_user.entry(r.user_id).or_default();
        user.0 += 1;
        user.1 = user.1.saturating_add(r.cost_micros);
        for rollup in ROLLUPS {
            sqlx::query(rollup).bind(r.id).execute(&mut **tx).await?;
        }
    }
    let mut debits = Vec::with_capacity(per_user.len());
    for (user_id, (inserted, total)) in per_user {
        let after: Option<Micros> = sqlx::query_scalar(
            "UPDATE users SET balance_micros = balance_micros - $2 WHERE id = $1 \
             RETURNING balance_micros",
        )
        .bind(user_id)
        .bind(total)
        .fetch_optional(&mut **tx)
        .await?;
        debits.push((user_id, inserted, after, total));
    }
    Ok(debits)
}
