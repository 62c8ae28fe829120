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
/// version the change feed starts from.
pub(super) async fn connect(url: &str) -> Result<(SqlitePool, i64), StoreError> {
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
    sqlx::migrate!("./migrations-sqlite").run(&pool).await?;
    let version = sqlx::query_scalar("SELECT version FROM config_state")
        .fetch_one(&pool)
        .await?;
    Ok((pool, version))
}

/// Writes the events not yet in the ledger, rolls them up per day and debits their users:
/// one row per user with new events, in user id order.
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
        sqlx::query(
            "INSERT INTO usage_daily (day, user_id, model, requests, input_tokens, \
             cached_tokens, output_tokens, reasoning_tokens, cost_micros, estimated) \
             VALUES ($1, $2, $3, 1, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (day, user_id, model) DO UPDATE SET \
             requests = requests + 1, input_tokens = input_tokens + excluded.input_tokens, \
             cached_tokens = cached_tokens + excluded.cached_tokens, \
             output_tokens = output_tokens + excluded.output_tokens, \
             reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens, \
             cost_micros = cost_micros + excluded.cost_micros, \
             estimated = estimated + excluded.estimated",
        )
        .bind(r.started_at.format("%Y-%m-%d").to_string())
        .bind(r.user_id)
        .bind(&r.model)
        .bind(r.input_tokens)
        .bind(r.cached_tokens)
        .bind(r.output_tokens)
        .bind(r.reasoning_tokens)
        .bind(r.cost_micros)
        .bind(i64::from(r.estimated))
        .execute(&mut **tx)
        .await?;
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
