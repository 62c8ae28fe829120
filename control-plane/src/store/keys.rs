//! Gateway keys, stored by digest: creation for an existing user, limits, revocation.

use chrono::Utc;
use sqlx::QueryBuilder;

use super::{Always, KeyPatch, KeyRow, NewKey, Store, StoreError, TextList, Versioned, not_found};

impl Store {
    /// Creates a key for an existing user.
    pub async fn create_key(&self, new: NewKey) -> Result<Versioned<KeyRow>, StoreError> {
        self.mutate(async |tx| {
            let user_exists: bool = db_run!(tx tx, |c| sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)"
            )
            .bind(new.user_id)
            .fetch_one(c)
            .await?);
            if !user_exists {
                return Err(not_found("user", new.user_id));
            }
            let row = db_run!(tx tx, |c| sqlx::query_as(concat!(
                "INSERT INTO api_keys (user_id, name, prefix, digest, expires_at, models, \
                 ip_allow, rpm, concurrency, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING ",
                key_columns!()
            ))
            .bind(new.user_id)
            .bind(&new.name)
            .bind(&new.prefix)
            .bind(&new.digest)
            .bind(new.expires_at)
            .bind(TextList(new.models))
            .bind(TextList(new.ip_allow))
            .bind(new.rpm)
            .bind(new.concurrency)
            .bind(Utc::now())
            .fetch_one(c)
            .await?);
            Ok((row, Always))
        })
        .await
    }

    /// Keys, optionally of one user.
    pub async fn list_keys(&self, user_id: Option<i64>) -> Result<Vec<KeyRow>, StoreError> {
        Ok(db_run!(pool & self.db, |c| sqlx::query_as(concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE (CAST($1 AS BIGINT) IS NULL OR user_id = $1) ORDER BY id"
        ))
        .bind(user_id)
        .fetch_all(c)
        .await?))
    }

    /// Revokes a key; revoking twice keeps the first revocation time.
    pub async fn revoke_key(&self, id: i64) -> Result<Versioned<KeyRow>, StoreError> {
        self.mutate(async |tx| {
            let row = db_run!(tx tx, |c| sqlx::query_as(concat!(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 \
                 RETURNING ",
                key_columns!()
            ))
            .bind(id)
            .bind(Utc::now())
            .fetch_optional(c)
            .await?);
            Ok((row.ok_or_else(|| not_found("key", id))?, Always))
        })
        .await
    }

    /// Changes a key's name and limits.
    pub async fn update_key(
        &self,
        id: i64,
        patch: KeyPatch,
    ) -> Result<Versioned<KeyRow>, StoreError> {
        self.mutate(async |tx| {
            let row = db_run!(tx tx, |c| {
                let mut q = QueryBuilder::new("UPDATE api_keys SET name = name");
                if let Some(name) = patch.name {
                    q.push(", name = ").push_bind(name);
                }
                if let Some(expires_at) = patch.expires_at {
                    q.push(", expires_at = ").push_bind(expires_at);
                }
                if let Some(models) = patch.models {
                    q.push(", models = ").push_bind(TextList(models));
                }
                if let Some(ip_allow) = patch.ip_allow {
                    q.push(", ip_allow = ").push_bind(TextList(ip_allow));
                }
                if let Some(rpm) = patch.rpm {
                    q.push(", rpm = ").push_bind(rpm);
                }
                if let Some(concurrency) = patch.concurrency {
                    q.push(", concurrency = ").push_bind(concurrency);
                }
                q.push(" WHERE id = ").push_bind(id);
                q.push(concat!(" RETURNING ", key_columns!()));
                q.build_query_as().fetch_optional(c).await?
            });
            Ok((row.ok_or_else(|| not_found("key", id))?, Always))
        })
        .await
    }
}
