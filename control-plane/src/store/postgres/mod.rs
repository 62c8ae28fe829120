//! Postgres: the production store. Every mutation bumps the config version in its own
//! transaction and `NOTIFY`s `CONFIG_CHANNEL`, so every control-plane replica rebuilds its
//! snapshot from the tables.

mod keys;
mod prices;
mod snapshot;
mod upstreams;
mod usage;
mod users;

use sqlx::{
    Connection, PgConnection, PgPool, Postgres, Transaction,
    postgres::{PgConnectOptions, PgListener, PgPoolOptions},
};

#[allow(unused_imports)]
use super::Versioned;
#[allow(unused_imports)]
use super::models::*;
use super::{StoreError, not_found};

/// Postgres channel that carries config-version bumps.
pub const CONFIG_CHANNEL: &str = "codex_gateway_config";

/// Advisory lock id of the health-check leader ("cgwhealt").
const LEADER_LOCK: i64 = 0x6367_7768_6561_6c74;

/// Handle to the Postgres store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
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

    /// The current config version.
    pub async fn config_version(&self) -> Result<i64, StoreError> {
        let version = sqlx::query_scalar("SELECT version FROM config_state")
            .fetch_one(&self.pool)
            .await?;
        Ok(version)
    }

    /// A listener for config-version bumps made by any replica.
    pub async fn listen(&self) -> Result<PgListener, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CONFIG_CHANNEL).await?;
        Ok(listener)
    }

    /// A dedicated connection holding the health-check leader lock, if it was free.
    pub async fn try_lead(&self) -> Result<Option<PgConnection>, StoreError> {
        let mut conn = self.pool.acquire().await?.detach();
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK)
            .fetch_one(&mut conn)
            .await?;
        if locked {
            Ok(Some(conn))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
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
