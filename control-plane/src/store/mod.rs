//! The only place with SQL: upstreams, users, keys, prices, usage and the config version, on
//! Postgres (production, several replicas) or SQLite (standalone, one process). Every query is
//! written once for both (`db_run!`); only what storage really does differently lives in
//! `postgres.rs` and `sqlite.rs`. Every change data planes must see goes through
//! [`Store::mutate`], which bumps the config version in the same transaction and tells every
//! snapshot builder so.

/// The columns each table is read with, as literals so every statement stays static text.
macro_rules! upstream_columns {
    () => {
        "id, name, base_url, api_key_hint, priority, weight, max_retries, timeout_ms, enabled, \
         health, created_at, updated_at, probe_path, health_error, health_checked_at, models"
    };
}
macro_rules! user_columns {
    () => {
        "id, name, balance_micros, multiplier_ppm, created_at"
    };
}
macro_rules! key_columns {
    () => {
        "id, user_id, name, prefix, digest, revoked_at, expires_at, models, ip_allow, rpm, \
         concurrency, created_at, spend_limit_micros, spend_limit_5h_micros, \
         spend_limit_day_micros, spend_limit_week_micros, spend_limit_month_micros"
    };
}
macro_rules! usage_columns {
    () => {
        "id, request_id, key_id, user_id, upstream_id, model, endpoint, input_tokens, \
         cached_tokens, output_tokens, reasoning_tokens, cost_micros, status, stream, estimated, \
         ttfb_ms, duration_ms, node_id, started_at"
    };
}
macro_rules! price_columns {
    () => {
        "model, input_micros, cached_input_micros, output_micros"
    };
}

/// The counters every rollup keeps, in the order ingest writes them.
macro_rules! counter_columns {
    () => {
        "requests, input_tokens, cached_tokens, output_tokens, reasoning_tokens, cost_micros, \
         estimated, errors"
    };
}

/// The `DO UPDATE SET` of a rollup upsert: adds the new counters to the row already in
/// `$table`.
macro_rules! add_counters {
    ($table:literal) => {
        add_counters!(@ $table, "input_tokens", "cached_tokens", "output_tokens",
            "reasoning_tokens", "cost_micros", "estimated", "errors")
    };
    (@ $table:literal $(, $c:literal)*) => {
        concat!("requests = ", $table, ".requests + excluded.requests"
            $(, ", ", $c, " = ", $table, ".", $c, " + excluded.", $c)*)
    };
}

/// Runs one query body against whichever backend is in hand: the body is written once and
/// expanded per backend, so its SQL text and row mapping are shared and sqlx still checks the
/// binds and rows against each driver. `pool(&db)` gives the body `$c: &Pool`; `tx(tx)` gives
/// it `$c: &mut Connection` inside the transaction (reborrow it with `&mut *$c` per statement).
macro_rules! db_run {
    (pool($db:expr), |$c:ident| $body:expr) => {
        match $db {
            $crate::store::Db::Postgres($c) => $body,
            $crate::store::Db::Sqlite($c, _) => $body,
        }
    };
    (tx($tx:expr), |$c:ident| $body:expr) => {
        match &mut *$tx {
            $crate::store::Tx::Postgres(t) => {
                let $c = &mut **t;
                $body
            }
            $crate::store::Tx::Sqlite(t) => {
                let $c = &mut **t;
                $body
            }
        }
    };
}

mod audit;
mod coordination;
mod error;
mod keys;
mod migrations;
mod models;
mod postgres;
mod prices;
mod sessions;
mod snapshot;
mod spend;
mod sqlite;
mod upstreams;
mod usage;
mod users;

pub use audit::Actor;
pub use coordination::{Changes, Duty, Leadership};
pub use error::StoreError;
pub use models::*;
pub use sessions::SessionRow;

/// Migrations a Postgres store has.
pub const POSTGRES_MIGRATIONS: usize = migrations::POSTGRES.len();

use std::sync::Arc;

use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};
use tokio::sync::watch;

/// Result of a mutation: what was written and the config version it produced (`V` is
/// `Option<i64>` for changes that only sometimes need a new version).
#[derive(Debug, Clone)]
pub struct Versioned<T, V = i64> {
    /// The row as stored.
    pub value: T,
    /// Config version after the change.
    pub version: V,
}

fn not_found(kind: &'static str, id: impl ToString) -> StoreError {
    StoreError::NotFound {
        kind,
        id: id.to_string(),
    }
}

/// The store, on either backend.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    migrated: u64,
    /// Who the audit log names for admin changes made through this handle.
    actor: Arc<Actor>,
}

/// A connection pool of either backend. SQLite has no NOTIFY: its one process learns of
/// version bumps through the watch channel beside the pool.
#[derive(Debug, Clone)]
enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool, Arc<watch::Sender<i64>>),
}

/// A transaction of either backend.
enum Tx {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

impl Db {
    async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(match self {
            Self::Postgres(pool) => Tx::Postgres(pool.begin().await?),
            Self::Sqlite(pool, _) => Tx::Sqlite(pool.begin().await?),
        })
    }
}

impl Tx {
    /// Bumps the config version; only [`Store::mutate`] calls it (through [`Bump`]).
    async fn bump(&mut self) -> Result<i64, StoreError> {
        Ok(db_run!(tx(self), |c| sqlx::query_scalar(
            "UPDATE config_state SET version = version + 1 RETURNING version"
        )
        .fetch_one(c)
        .await?))
    }

    async fn commit(self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(tx) => tx.commit().await?,
            Self::Sqlite(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

/// Whether a change needs a new config version: admin changes always do, and are recorded
/// in the audit log ([`audit::Change`]); a round of probes or a batch of usage only when it
/// changes what data planes enforce (`bool`).
trait Bump {
    /// What the caller learns: the new version, or whether there was one.
    type Version: Copy + Into<Option<i64>>;
    async fn apply(self, tx: &mut Tx, actor: &Actor) -> Result<Self::Version, StoreError>;
}

impl Bump for bool {
    type Version = Option<i64>;
    async fn apply(self, tx: &mut Tx, _: &Actor) -> Result<Option<i64>, StoreError> {
        Ok(if self { Some(tx.bump().await?) } else { None })
    }
}

impl Store {
    /// Connects by URL scheme (`postgres://…` or `sqlite://…`) and applies migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let (db, migrated) = if url.starts_with("sqlite:") {
            let (pool, version, migrated) = sqlite::connect(url).await?;
            (
                Db::Sqlite(pool, Arc::new(watch::Sender::new(version))),
                migrated,
            )
        } else {
            let (pool, migrated) = postgres::connect(url).await?;
            (Db::Postgres(pool), migrated)
        };
        Ok(Self {
            db,
            migrated,
            actor: Arc::new(Actor::unnamed()),
        })
    }

    /// Migrations this store applied when it connected.
    pub fn migrations_applied(&self) -> u64 {
        self.migrated
    }

    /// The current config version.
    pub async fn config_version(&self) -> Result<i64, StoreError> {
        Ok(db_run!(pool(&self.db), |c| sqlx::query_scalar(
            "SELECT version FROM config_state"
        )
        .fetch_one(c)
        .await?))
    }

    /// The one way to change what data planes see: opens a transaction, runs `change`, bumps
    /// the config version if the change asks for it, queues the Postgres notification, commits,
    /// and then tells in-process subscribers. A change never holds the commit, so it cannot
    /// skip the bump or the notification; an error anywhere rolls everything back.
    async fn mutate<T, B: Bump>(
        &self,
        change: impl AsyncFnOnce(&mut Tx) -> Result<(T, B), StoreError>,
    ) -> Result<Versioned<T, B::Version>, StoreError> {
        let mut tx = self.db.begin().await?;
        let (value, bump) = change(&mut tx).await?;
        let version = bump.apply(&mut tx, &self.actor).await?;
        let bumped: Option<i64> = version.into();
        if let (Tx::Postgres(pg), Some(v)) = (&mut tx, bumped) {
            postgres::notify(pg, v).await?;
        }
        tx.commit().await?;
        if let (Db::Sqlite(_, changes), Some(v)) = (&self.db, bumped) {
            changes.send_replace(v);
        }
        Ok(Versioned { value, version })
    }
}
