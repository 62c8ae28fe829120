//! Reads everything a snapshot is built from in one consistent view.

use super::{KeyRow, PgStore, PriceRow, SnapshotState, StoreError, UpstreamSecretRow, UserRow};

impl PgStore {
    /// The config version and every row it covers, read in one repeatable-read transaction,
    /// so the version always describes exactly the rows returned with it.
    pub async fn snapshot_state(&self) -> Result<SnapshotState, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let version: i64 = sqlx::query_scalar("SELECT version FROM config_state")
            .fetch_one(&mut *tx)
            .await?;
        let upstreams: Vec<UpstreamSecretRow> = sqlx::query_as(
            "SELECT id, name, base_url, api_key_hint, priority, weight, max_retries, timeout_ms, \
             enabled, health, created_at, updated_at, probe_path, health_error, health_checked_at, \
             api_key_enc FROM upstreams ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let keys: Vec<KeyRow> = sqlx::query_as(
            "SELECT id, user_id, name, prefix, digest, revoked_at, expires_at, models, ip_allow, \
             rpm, concurrency, created_at FROM api_keys WHERE revoked_at IS NULL ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let users: Vec<UserRow> = sqlx::query_as(
            "SELECT id, name, balance_micros, multiplier_ppm, created_at FROM users ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let prices: Vec<PriceRow> = sqlx::query_as(
            "SELECT model, input_micros, cached_input_micros, output_micros FROM prices ORDER BY model",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(SnapshotState {
            version,
            upstreams,
            keys,
            users,
            prices,
        })
    }
}
