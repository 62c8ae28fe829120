//! What only Postgres does: a shared server for several replicas, so bumps are announced with
//! `NOTIFY`, health-check leadership is an advisory lock, snapshots read at repeatable read,
//! and a usage batch is ingested in one `UNNEST` statement with its users locked in id order.

use chrono::{DateTime, Utc};
use gateway_proto::{
    ids::{KeyId, UpstreamId, UserId},
    money::Micros,
    names::Named,
};
use sqlx::{
    Connection, PgConnection, PgPool, Postgres, Transaction,
    postgres::{PgArguments, PgConnectOptions, PgListener, PgPoolOptions},
    query::QueryAs,
};
use uuid::Uuid;

use super::{StoreError, UsageRow, usage::Debit};

/// Postgres channel that carries config-version bumps.
pub(super) const CONFIG_CHANNEL: &str = "codex_gateway_config";

type PgTx = Transaction<'static, Postgres>;

/// Connects and applies pending migrations (how many).
pub(super) async fn connect(url: &str) -> Result<(PgPool, u64), StoreError> {
    let options: PgConnectOptions = url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .connect_with(options)
        .await?;
    let migrated = super::migrations::run(&pool, super::migrations::POSTGRES).await?;
    Ok((pool, migrated))
}

/// Queues the notification of `version`; Postgres delivers it to every replica at commit.
pub(super) async fn notify(tx: &mut PgTx, version: i64) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CONFIG_CHANNEL)
        .bind(version.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A listener for config-version bumps made by any replica.
pub(super) async fn listen(pool: &PgPool) -> Result<PgListener, StoreError> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CONFIG_CHANNEL).await?;
    Ok(listener)
}

/// A dedicated connection holding the health-check leader lock, if it was free.
pub(super) async fn try_lead(pool: &PgPool, lock: i64) -> Result<Option<PgConnection>, StoreError> {
    let mut conn = pool.acquire().await?.detach();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(lock)
        .fetch_one(&mut conn)
        .await?;
    if locked {
        Ok(Some(conn))
    } else {
        let _ = conn.close().await;
        Ok(None)
    }
}

/// Makes `tx` read one consistent view, so a snapshot's version describes exactly its rows.
/// It must run before any other statement of the transaction.
pub(super) async fn repeatable_read(tx: &mut PgTx) -> Result<(), StoreError> {
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Columnar form of a batch, for one `UNNEST` insert, and its binds in column order.
macro_rules! columns {
    ($($field:ident: $ty:ty = |$r:ident| $value:expr),* $(,)?) => {
        struct Columns { $($field: Vec<$ty>),* }
        impl Columns {
            fn of(rows: &[UsageRow]) -> Self {
                Self { $($field: rows.iter().map(|$r| $value).collect()),* }
            }
            fn bind<'q, O>(&'q self, q: QueryAs<'q, Postgres, O, PgArguments>)
                -> QueryAs<'q, Postgres, O, PgArguments> { q $(.bind(&self.$field))* }
        }
    };
}
columns!(
    id: Uuid = |r| r.id, request_id: String = |r| r.request_id.clone(),
    key_id: KeyId = |r| r.key_id, user_id: UserId = |r| r.user_id,
    upstream_id: Option<UpstreamId> = |r| r.upstream_id,
    model: String = |r| r.model.clone(), endpoint: String = |r| r.endpoint.clone(),
    input_tokens: i64 = |r| r.input_tokens, cached_tokens: i64 = |r| r.cached_tokens,
    output_tokens: i64 = |r| r.output_tokens, reasoning_tokens: i64 = |r| r.reasoning_tokens,
    cost_micros: Micros = |r| r.cost_micros, status: &'static str = |r| r.status.name(),
    stream: bool = |r| r.stream, estimated: bool = |r| r.estimated,
    ttfb_ms: i32 = |r| r.ttfb_ms, duration_ms: i32 = |r| r.duration_ms,
    node_id: String = |r| r.node_id.clone(), started_at: DateTime<Utc> = |r| r.started_at,
);

/// The rollup counters over a group of newly inserted events (the last: how many failed).
macro_rules! sums {
    () => {
        "COUNT(*), SUM(input_tokens)::INT8, SUM(cached_tokens)::INT8, SUM(output_tokens)::INT8, \
         SUM(reasoning_tokens)::INT8, SUM(cost_micros)::INT8, COUNT(*) FILTER (WHERE estimated), \
         COUNT(*) FILTER (WHERE status NOT IN ('completed', 'incomplete'))"
    };
}

/// Writes the events not yet in the ledger, rolls them up (per user and day, hour, user, and
/// day and hour over all users) and debits their users, in one statement: one row per user with new
/// events.
pub(super) async fn ingest(tx: &mut PgTx, rows: &[UsageRow]) -> Result<Vec<Debit>, StoreError> {
    let c = Columns::of(rows);
    // Lock the users in id order first, so concurrent consumers cannot deadlock.
    let mut user_ids = c.user_id.clone();
    user_ids.sort_unstable();
    user_ids.dedup();
    sqlx::query("SELECT id FROM users WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .bind(&user_ids)
        .execute(&mut **tx)
        .await?;
    Ok(c.bind(sqlx::query_as(concat!(
        "WITH ins AS ( \
           INSERT INTO usage_events (id, request_id, key_id, user_id, upstream_id, model, \
             endpoint, input_tokens, cached_tokens, output_tokens, reasoning_tokens, \
             cost_micros, status, stream, estimated, ttfb_ms, duration_ms, node_id, started_at) \
           SELECT id, request_id, key_id, user_id, upstream_id, model, endpoint, \
             input_tokens, cached_tokens, output_tokens, reasoning_tokens, cost_micros, status, \
             stream, estimated, ttfb_ms, duration_ms, node_id, started_at \
           FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::text[], \
             $7::text[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::int8[], \
             $13::text[], $14::bool[], $15::bool[], $16::int4[], $17::int4[], $18::text[], \
             $19::timestamptz[]) \
             AS t(id, request_id, key_id, user_id, upstream_id, model, endpoint, input_tokens, \
             cached_tokens, output_tokens, reasoning_tokens, cost_micros, status, stream, \
             estimated, ttfb_ms, duration_ms, node_id, started_at) \
           ON CONFLICT (id) DO NOTHING \
           RETURNING key_id, user_id, upstream_id, cost_micros, model, started_at, \
             input_tokens, cached_tokens, output_tokens, reasoning_tokens, estimated, status), \
         roll AS ( \
           INSERT INTO usage_daily (day, user_id, model, ",
        counter_columns!(),
        ") SELECT to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), user_id, model, ",
        sums!(),
        " FROM ins GROUP BY 1, 2, 3 \
           ON CONFLICT (day, user_id, model) DO UPDATE SET ",
        add_counters!("usage_daily"),
        "), \
         hourly AS ( \
           INSERT INTO usage_hourly (hour, key_id, user_id, model, upstream_id, ",
        counter_columns!(),
        ") SELECT date_trunc('hour', started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', \
           key_id, user_id, model, upstream_id, ",
        sums!(),
        " FROM ins GROUP BY 1, 2, 3, 4, 5 \
           ON CONFLICT (hour, key_id, user_id, model, COALESCE(upstream_id, 0)) \
           DO UPDATE SET ",
        add_counters!("usage_hourly"),
        "), \
         by_user AS ( \
           INSERT INTO usage_by_user (user_id, model, ",
        counter_columns!(),
        ") SELECT user_id, model, ",
        sums!(),
        " FROM ins GROUP BY 1, 2 ON CONFLICT (user_id, model) DO UPDATE SET ",
        add_counters!("usage_by_user"),
        "), ",
        // Every batch of a day (and an hour) touches the same few rows here and in `by_hour`,
        // which the users' locks (taken first) do not order: they are written in the order of
        // their identity, so concurrent consumers wait for each other instead of deadlocking.
        "by_day AS ( \
           INSERT INTO usage_by_day (day, model, upstream_id, ",
        counter_columns!(),
        ") SELECT to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), model, \
           upstream_id, ",
        sums!(),
        " FROM ins GROUP BY 1, 2, 3 ORDER BY 1, 2, COALESCE(upstream_id, 0) \
           ON CONFLICT (day, model, COALESCE(upstream_id, 0)) DO UPDATE SET ",
        add_counters!("usage_by_day"),
        "), \
         by_hour AS ( \
           INSERT INTO usage_by_hour (hour, model, upstream_id, ",
        counter_columns!(),
        ") SELECT date_trunc('hour', started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', model, \
           upstream_id, ",
        sums!(),
        " FROM ins GROUP BY 1, 2, 3 ORDER BY 1, 2, COALESCE(upstream_id, 0) \
           ON CONFLICT (hour, model, COALESCE(upstream_id, 0)) DO UPDATE SET ",
        add_counters!("usage_by_hour"),
        "), \
         per_user AS ( \
           SELECT user_id, COUNT(*)::int8 AS n, SUM(cost_micros)::int8 AS total \
           FROM ins GROUP BY user_id), \
         debit AS ( \
           UPDATE users u SET balance_micros = u.balance_micros - p.total \
           FROM per_user p WHERE u.id = p.user_id \
           RETURNING u.id, u.balance_micros AS after) \
         SELECT p.user_id, p.n, d.after, p.total \
         FROM per_user p LEFT JOIN debit d ON d.id = p.user_id"
    )))
    .fetch_all(&mut **tx)
    .await?)
}
