//! The only place with SQL: Postgres access for upstreams, users, keys, prices, usage and the
//! config version. Every mutation that data planes must see bumps the config version in the
//! same transaction and notifies `CONFIG_CHANNEL`, so every replica rebuilds its snapshot.

mod keys;
mod models;
mod prices;
mod snapshot;
mod upstreams;
mod usage;
mod users;

pub use models::*;

use sqlx::{
    PgPool, Postgres, Transaction,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// Postgres channel that carries config-version bumps.
pub const CONFIG_CHANNEL: &str = "codex_gateway_config";

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
    /// Postgres is unreachable or failed.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// Migrations could not be applied.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if let Some(db) = err.as_database_error() {
            match db.code().as_deref() {
                Some("23505") => {
                    return Self::Conflict(match db.constraint() {
                        Some("upstreams_name_key") => {
                            "an upstream with that name already exists".into()
                        }
                        Some("users_name_key") => "a user with that name already exists".into(),
                        _ => "that value already exists".into(),
                    });
                }
                Some("23514") => {
                    return Self::Invalid(format!(
                        "value out of range ({})",
                        db.constraint().unwrap_or("check")
                    ));
                }
                _ => {}
            }
        }
        Self::Database(err)
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

/// Handle to the Postgres store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    /// The pool, for LISTEN connections.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The current config version.
    pub async fn config_version(&self) -> Result<i64, StoreError> {
        let version = sqlx::query_scalar("SELECT version FROM config_state")
            .fetch_one(&self.pool)
            .await?;
        Ok(version)
    }
}

/// Bumps the config version inside `tx` and queues the notification for commit time.
async fn bump_version(tx: &mut Transaction<'_, Postgres>) -> Result<i64, StoreError> {
    let version: i64 =
        sqlx::query_scalar("UPDATE config_state SET version = version + 1 RETURNING version")
            .fetch_one(&mut **tx)
            .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CONFIG_CHANNEL)
        .bind(version.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(version)
}

fn not_found(kind: &'static str, id: impl ToString) -> StoreError {
    StoreError::NotFound {
        kind,
        id: id.to_string(),
    }
}
