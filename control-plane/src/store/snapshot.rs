//! Reads everything a snapshot is built from in one consistent view.

use chrono::Utc;
use gateway_proto::ids::KeyId;

use super::{SnapshotState, Store, StoreError, Tx, postgres, spend};

impl Store {
    /// The config version and every row it covers, read in one transaction (repeatable read
    /// on Postgres; SQLite's one connection sees no concurrent writer), so the version always
    /// describes exactly the rows returned with it.
    pub async fn snapshot_state(&self) -> Result<SnapshotState, StoreError> {
        let mut tx = self.db.begin().await?;
        if let Tx::Postgres(pg) = &mut tx {
            postgres::repeatable_read(pg).await?;
        }
        let read_at = Utc::now();
        let mut state = db_run!(tx(&mut tx), |c| SnapshotState {
            version: sqlx::query_scalar("SELECT version FROM config_state")
                .fetch_one(&mut *c)
                .await?,
            upstreams: sqlx::query_as(concat!(
                "SELECT ",
                upstream_columns!(),
                ", api_key_enc FROM upstreams ORDER BY id"
            ))
            .fetch_all(&mut *c)
            .await?,
            keys: sqlx::query_as(concat!(
                "SELECT ",
                key_columns!(),
                " FROM api_keys WHERE revoked_at IS NULL ORDER BY id"
            ))
            .fetch_all(&mut *c)
            .await?,
            key_spend: Default::default(),
            read_at,
            users: sqlx::query_as(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users ORDER BY id"
            ))
            .fetch_all(&mut *c)
            .await?,
            prices: sqlx::query_as(concat!(
                "SELECT ",
                price_columns!(),
                " FROM prices ORDER BY model"
            ))
            .fetch_all(&mut *c)
            .await?,
        });
        // Capped keys carry what they have spent, read in the same view as the version.
        let capped: Vec<KeyId> = state
            .keys
            .iter()
            .filter(|k| k.caps.any())
            .map(|k| k.id)
            .collect();
        state.key_spend = spend::key_spend_in(&mut tx, &capped, read_at).await?;
        tx.commit().await?;
        Ok(state)
    }
}
