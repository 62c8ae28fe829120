//! The only place with SQL: upstreams, users, keys, prices, usage and the config version, on
//! Postgres (production, several replicas) or SQLite (standalone, one process). Both run the
//! same contract suite. Every mutation that data planes must see bumps the config version in
//! the same transaction and tells every snapshot builder so.

mod models;
pub mod postgres;
pub mod sqlite;

pub use models::*;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use sqlx::{Connection, PgConnection, postgres::PgListener};
use tokio::sync::watch;

/// A store failure, by whose fault it was.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named row does not exist.
    #[error("{kind} {id} not found")]
    NotFound {
        /// What was looked up.
        kind: &'static str,
        /// Its id as given.
        id: String,
    },
    /// A unique name or value is taken.
    #[error("{0}")]
    Conflict(String),
    /// The database refused the change (a check constraint).
    #[error("{0}")]
    Invalid(String),
    /// The database is unreachable or failed.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// Migrations could not be applied.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if let Some(db) = err.as_database_error() {
            // Postgres names the constraint; SQLite says "UNIQUE constraint failed: users.name".
            let what = db
                .constraint()
                .map(str::to_owned)
                .unwrap_or_else(|| db.message().to_owned());
            match db.kind() {
                sqlx::error::ErrorKind::UniqueViolation => {
                    return Self::Conflict(
                        if what.contains("upstreams_name") || what.contains("upstreams.name") {
                            "an upstream with that name already exists".into()
                        } else if what.contains("users_name") || what.contains("users.name") {
                            "a user with that name already exists".into()
                        } else {
                            "that value already exists".into()
                        },
                    );
                }
                sqlx::error::ErrorKind::CheckViolation => {
                    return Self::Invalid(format!("value out of range ({what})"));
                }
                _ => {}
            }
        }
        Self::Database(err)
    }
}

impl StoreError {
    /// Whether the database could not be reached (as opposed to refusing a statement): such
    /// failures say nothing about the data and must only ever be retried.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database(
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed,
            ) => true,
            Self::Database(sqlx::Error::Database(e)) => {
                e.code().is_some_and(|code| transient_sqlstate(&code))
            }
            _ => false,
        }
    }
}

/// Database errors that say "not now" rather than "not this": a failover or restart in
/// progress (a read-only primary, shutdown, cannot connect yet), a lost connection, exhausted
/// resources, or a conflict between transactions. Retrying them is right; dead-lettering an
/// event for them would be wrong.
fn transient_sqlstate(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources
        || matches!(
            code,
            "25006" // read_only_sql_transaction: a standby, or a primary being demoted
                | "57P01" // admin_shutdown
                | "57P02" // crash_shutdown
                | "57P03" // cannot_connect_now
                | "40001" // serialization_failure
                | "40P01" // deadlock_detected
                | "55P03" // lock_not_available
                | "5" // SQLITE_BUSY
                | "6" // SQLITE_LOCKED
        )
}

#[cfg(test)]
mod transient_tests {
    use super::transient_sqlstate;

    #[test]
    fn failover_and_contention_are_transient_bad_data_is_not() {
        for code in [
            "08006", "25006", "57P01", "57P03", "53300", "40001", "40P01", "5",
        ] {
            assert!(transient_sqlstate(code), "{code}");
        }
        for code in ["23505", "23503", "22003", "42P01", "23514"] {
            assert!(!transient_sqlstate(code), "{code}");
        }
    }
}

/// Result of a mutation: what was written and the config version it produced.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    /// The row as stored.
    pub value: T,
    /// Config version after the change.
    pub version: i64,
}

fn not_found(kind: &'static str, id: impl ToString) -> StoreError {
    StoreError::NotFound {
        kind,
        id: id.to_string(),
    }
}

/// The store, on either backend.
#[derive(Debug, Clone)]
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

impl Store {
    /// Connects by URL scheme (`postgres://…` or `sqlite://…`) and applies migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite(SqliteStore::connect(url).await?))
        } else {
            Ok(Self::Postgres(PgStore::connect(url).await?))
        }
    }

    /// A feed of config changes made through this store (and, on Postgres, any replica).
    pub async fn changes(&self) -> Result<Changes, StoreError> {
        match self {
            Self::Postgres(s) => Ok(Changes::Postgres(Box::new(s.listen().await?))),
            Self::Sqlite(s) => Ok(Changes::Local(s.subscribe())),
        }
    }

    /// Health-check leadership if no other replica holds it.
    pub async fn try_lead(&self) -> Result<Option<Leadership>, StoreError> {
        match self {
            Self::Postgres(s) => Ok(s.try_lead().await?.map(Leadership::Postgres)),
            // One process owns a SQLite database: it always leads.
            Self::Sqlite(_) => Ok(Some(Leadership::Local)),
        }
    }
}

/// Config-change notifications.
#[derive(Debug)]
pub enum Changes {
    Postgres(Box<PgListener>),
    Local(watch::Receiver<i64>),
}

impl Changes {
    /// Waits for the next change; a burst of changes is reported once.
    pub async fn next(&mut self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(l) => {
                l.recv().await?;
                while l.next_buffered().is_some() {}
                Ok(())
            }
            Self::Local(rx) => {
                if rx.changed().await.is_err() {
                    // The store is gone: nothing will change any more.
                    std::future::pending::<()>().await;
                }
                Ok(())
            }
        }
    }
}

/// Health-check leadership; dropping it gives leadership up.
#[derive(Debug)]
pub enum Leadership {
    Postgres(PgConnection),
    Local,
}

impl Leadership {
    /// Whether leadership still holds (on Postgres: the lock connection is alive).
    pub async fn holds(&mut self) -> bool {
        match self {
            Self::Postgres(conn) => conn.ping().await.is_ok(),
            Self::Local => true,
        }
    }

    /// Gives leadership up.
    pub async fn release(self) {
        if let Self::Postgres(conn) = self {
            let _ = conn.close().await;
        }
    }
}

/// Forwards each method to the backend.
macro_rules! delegate {
    ($( $(#[$m:meta])* fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty; )*) => {
        impl Store {
            $(
                $(#[$m])*
                pub async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StoreError> {
                    match self {
                        Self::Postgres(s) => s.$name($($arg),*).await,
                        Self::Sqlite(s) => s.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

delegate! {
    /// The current config version.
    fn config_version(&self) -> i64;
    /// Creates an upstream.
    fn create_upstream(&self, new: NewUpstream) -> Versioned<UpstreamRow>;
    /// One upstream.
    fn get_upstream(&self, id: i64) -> UpstreamRow;
    /// All upstreams, best tier first.
    fn list_upstreams(&self) -> Vec<UpstreamRow>;
    /// Applies the fields set in `patch`.
    fn update_upstream(&self, id: i64, patch: UpstreamPatch) -> Versioned<UpstreamRow>;
    /// Deletes an upstream. Usage rows keep its id.
    fn delete_upstream(&self, id: i64) -> Versioned<i64>;
    /// Records probe outcomes; bumps the config version once if any changes routing.
    fn record_health(&self, updates: &[HealthUpdate]) -> Option<i64>;
    /// Enabled upstreams with active checks, with their encrypted keys.
    fn upstreams_to_probe(&self) -> Vec<UpstreamSecretRow>;
    /// One upstream with its encrypted key.
    fn upstream_with_secret(&self, id: i64) -> UpstreamSecretRow;
    /// Creates a user; a non-zero initial balance is recorded as an adjustment.
    fn create_user(&self, name: &str, balance_micros: i64, multiplier_ppm: i64) -> Versioned<UserRow>;
    /// One user.
    fn get_user(&self, id: i64) -> UserRow;
    /// All users.
    fn list_users(&self) -> Vec<UserRow>;
    /// Credits (or, negative, debits) a balance and records why.
    fn adjust_balance(&self, user_id: i64, amount_micros: i64, reason: &str) -> Versioned<UserRow>;
    /// Renames a user or changes their price multiplier.
    fn update_user(&self, id: i64, patch: UserPatch) -> Versioned<UserRow>;
    /// Creates a key for an existing user.
    fn create_key(&self, new: NewKey) -> Versioned<KeyRow>;
    /// Keys, optionally of one user.
    fn list_keys(&self, user_id: Option<i64>) -> Vec<KeyRow>;
    /// Revokes a key; revoking twice keeps the first revocation time.
    fn revoke_key(&self, id: i64) -> Versioned<KeyRow>;
    /// Changes a key's name and limits.
    fn update_key(&self, id: i64, patch: KeyPatch) -> Versioned<KeyRow>;
    /// Sets (inserts or replaces) the price of a model.
    fn set_price(&self, price: PriceRow) -> Versioned<PriceRow>;
    /// All prices.
    fn list_prices(&self) -> Vec<PriceRow>;
    /// Writes a batch of events and debits each user by the cost of the events that were new,
    /// in one transaction; events already in the ledger are skipped. A balance crossing from
    /// positive to zero or below bumps the config version.
    fn ingest_usage(&self, rows: &[UsageRow]) -> IngestOutcome;
    /// Keeps a stream entry that cannot be ingested, with the reason.
    fn dead_letter(&self, stream_id: &str, payload: Option<&[u8]>, error: &str) -> ();
    /// Per-day rollups, newest day first, optionally of one user.
    fn daily_usage(&self, user_id: Option<i64>) -> Vec<DailyRow>;
    /// Usage events, newest first.
    fn list_usage(&self, filter: &UsageFilter) -> Vec<UsageRow>;
    /// Totals per user, model, upstream or UTC day, largest cost first.
    fn summarize_usage(&self, by: SummaryBy, filter: &UsageFilter) -> Vec<SummaryRow>;
    /// The config version and every row it covers, read in one consistent view.
    fn snapshot_state(&self) -> SnapshotState;
}
