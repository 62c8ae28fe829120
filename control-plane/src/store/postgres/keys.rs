//! Gateway keys, stored by digest.

use sqlx::QueryBuilder;

use super::{KeyPatch, KeyRow, NewKey, PgStore, StoreError, Versioned, bump_version, not_found};

/// The columns every query of this table returns, as a literal so SQL stays static.
macro_rules! columns {
    () => {
        "id, user_id, name, prefix, digest, revoked_at, expires_at, models, ip_allow, \
                       rpm, concurrency, created_at"
    };
}

impl PgStore {
    /// Creates a key for an existing user.
    pub async fn create_key(&self, new: NewKey) -> Result<Versioned<KeyRow>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let user_exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
                .bind(new.user_id)
                .fetch_one(&mut *tx)
                .await?;
        if !user_exists {
            return Err(not_found("user", new.user_id));
        }
        let row: KeyRow = sqlx::query_as(concat!("INSERT INTO api_keys (user_id, name, prefix, digest, expires_at, models, ip_allow, rpm, \
             concurrency) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING ", columns!()))
        .bind(new.user_id)
        .bind(&new.name)
        .bind(&new.prefix)
        .bind(&new.digest)
        .bind(new.expires_at)
        .bind(&new.models)
        .bind(&new.ip_allow)
        .bind(new.rpm)
        .bind(new.concurrency)
        .fetch_one(&mut *tx)
        .await?;
        let version = bump_version(&mut tx).await?;
        tx.commit().await?;
        Ok(Versioned {
            value: row,
            version,
        })
    }

    /// Keys, optionally of one user.
    pub async fn list_keys(&self, user_id: Option<i64>) -> Result<Vec<KeyRow>, StoreError> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM api_keys WHERE ($1::BIGINT IS NULL OR user_id = $1) ORDER BY id"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes a key; revoking twice keeps the first revocation time.
    pub async fn revoke_key(&self, id: i64) -> Result<Versioned<KeyRow>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row: KeyRow = sqlx::query_as(concat!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1 \
             RETURNING ",
            columns!()
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| not_found("key", id))?;
        let version = bump_version(&mut tx).await?;
        tx.commit().await?;
        Ok(Versioned {
            value: row,
            version,
        })
    }

    /// Changes a key's name and limits.
    pub async fn update_key(
        &self,
        id: i64,
        patch: KeyPatch,
    ) -> Result<Versioned<KeyRow>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut q = QueryBuilder::new("UPDATE api_keys SET name = name");
        if let Some(name) = patch.name {
            q.push(", name = ").push_bind(name);
        }
        if let Some(expires_at) = patch.expires_at {
            q.push(", expires_at = ").push_bind(expires_at);
        }
        if let Some(models) = patch.models {
            q.push(", models = ").push_bind(models);
        }
        if let Some(ip_allow) = patch.ip_allow {
            q.push(", ip_allow = ").push_bind(ip_allow);
        }
        if let Some(rpm) = patch.rpm {
            q.push(", rpm = ").push_bind(rpm);
        }
        if let Some(concurrency) = patch.concurrency {
            q.push(", concurrency = ").push_bind(concurrency);
        }
        q.push(" WHERE id = ").push_bind(id);
        q.push(" RETURNING ").push(columns!());
        let row: KeyRow = q
            .build_query_as()
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| not_found("key", id))?;
        let version = bump_version(&mut tx).await?;
        tx.commit().await?;
        Ok(Versioned {
            value: row,
            version,
        })
    }
}
