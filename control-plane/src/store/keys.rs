//! Gateway keys, stored by digest: creation for an existing user, limits, revocation.

use chrono::Utc;
use gateway_proto::ids::{KeyId, UserId};

use super::{
    KeyPatch, KeyRow, NewKey, Store, StoreError, TextList, Versioned, audit::Change, not_found,
};

impl Store {
    /// Creates a key for an existing user.
    pub async fn create_key(&self, new: NewKey) -> Result<Versioned<KeyRow>, StoreError> {
        let detail = serde_json::to_value(&new).unwrap_or_default();
        self.mutate(async |tx| {
            let user_exists: bool = db_run!(tx(tx), |c| sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)"
            )
            .bind(new.user_id)
            .fetch_one(c)
            .await?);
            if !user_exists {
                return Err(not_found("user", new.user_id));
            }
            let row = db_run!(tx(tx), |c| sqlx::query_as(concat!(
                "INSERT INTO api_keys (user_id, name, prefix, digest, expires_at, models, \
                 ip_allow, rpm, concurrency, created_at, spend_limit_micros, \
                 spend_limit_5h_micros, spend_limit_day_micros, spend_limit_week_micros, \
                 spend_limit_month_micros) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
                 RETURNING ",
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
            .bind(new.caps.lifetime)
            .bind(new.caps.five_hours)
            .bind(new.caps.day)
            .bind(new.caps.week)
            .bind(new.caps.month)
            .fetch_one(c)
            .await?);
            let change = Change::new("key.create", key(&row), &detail);
            Ok((row, change))
        })
        .await
    }

    /// Up to `limit` keys by id, after `after`, optionally of one user.
    pub async fn list_keys(
        &self,
        user_id: Option<UserId>,
        after: Option<KeyId>,
        limit: i64,
    ) -> Result<Vec<KeyRow>, StoreError> {
        Ok(db_run!(pool(&self.db), |c| sqlx::query_as(concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE (CAST($1 AS BIGINT) IS NULL OR user_id = $1) \
             AND (CAST($2 AS BIGINT) IS NULL OR id > $2) ORDER BY id LIMIT $3"
        ))
        .bind(user_id)
        .bind(after)
        .bind(limit)
        .fetch_all(c)
        .await?))
    }

    /// The key whose secret has this digest.
    pub async fn key_by_digest(&self, digest: &[u8]) -> Result<Option<KeyRow>, StoreError> {
        Ok(db_run!(pool(&self.db), |c| sqlx::query_as(concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE digest = $1"
        ))
        .bind(digest)
        .fetch_optional(c)
        .await?))
    }

    /// One key.
    pub async fn get_key(&self, id: KeyId) -> Result<KeyRow, StoreError> {
        db_run!(pool(&self.db), |c| sqlx::query_as(concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(c)
        .await?)
        .ok_or_else(|| not_found("key", id))
    }

    /// Revokes a key; revoking twice keeps the first revocation time.
    pub async fn revoke_key(&self, id: KeyId) -> Result<Versioned<KeyRow>, StoreError> {
        self.mutate(async |tx| {
            let row = db_run!(tx(tx), |c| sqlx::query_as(concat!(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 \
                 RETURNING ",
                key_columns!()
            ))
            .bind(id)
            .bind(Utc::now())
            .fetch_optional(c)
            .await?);
            let row = row.ok_or_else(|| not_found("key", id))?;
            let change = Change::new("key.revoke", key(&row), &());
            Ok((row, change))
        })
        .await
    }

    /// Changes a key's name and limits.
    pub async fn update_key(
        &self,
        id: KeyId,
        patch: KeyPatch,
    ) -> Result<Versioned<KeyRow>, StoreError> {
        // A limit the patch clears is `Some(None)`: its flag is set and its value is NULL.
        let change = Change::new("key.update", format!("key {id}"), &patch);
        let caps = patch.caps.unwrap_or_default();
        self.mutate(async |tx| {
            let row = db_run!(tx(tx), |c| sqlx::query_as(concat!(
                "UPDATE api_keys SET name = COALESCE($2, name), \
                 expires_at = CASE WHEN $3 THEN $4 ELSE expires_at END, \
                 models = COALESCE($5, models), ip_allow = COALESCE($6, ip_allow), \
                 rpm = CASE WHEN $7 THEN $8 ELSE rpm END, \
                 concurrency = CASE WHEN $9 THEN $10 ELSE concurrency END, \
                 spend_limit_micros = CASE WHEN $11 THEN $12 ELSE spend_limit_micros END, \
                 spend_limit_5h_micros = CASE WHEN $11 THEN $13 ELSE spend_limit_5h_micros END, \
                 spend_limit_day_micros = CASE WHEN $11 THEN $14 ELSE spend_limit_day_micros END, \
                 spend_limit_week_micros = \
                     CASE WHEN $11 THEN $15 ELSE spend_limit_week_micros END, \
                 spend_limit_month_micros = \
                     CASE WHEN $11 THEN $16 ELSE spend_limit_month_micros END \
                 WHERE id = $1 RETURNING ",
                key_columns!()
            ))
            .bind(id)
            .bind(&patch.name)
            .bind(patch.expires_at.is_some())
            .bind(patch.expires_at.flatten())
            .bind(patch.models.map(TextList))
            .bind(patch.ip_allow.map(TextList))
            .bind(patch.rpm.is_some())
            .bind(patch.rpm.flatten())
            .bind(patch.concurrency.is_some())
            .bind(patch.concurrency.flatten())
            .bind(patch.caps.is_some())
            .bind(caps.lifetime)
            .bind(caps.five_hours)
            .bind(caps.day)
            .bind(caps.week)
            .bind(caps.month)
            .fetch_optional(c)
            .await?);
            Ok((row.ok_or_else(|| not_found("key", id))?, change))
        })
        .await
    }
}

/// How the audit log names a key: its id, prefix and user.
fn key(row: &KeyRow) -> String {
    format!("key {} ({}…, user {})", row.id, row.prefix, row.user_id)
}
