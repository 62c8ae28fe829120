//! Users and their balances; every credit or correction is also kept as an adjustment, so a
//! balance can always be audited.

use chrono::{DateTime, Utc};
use gateway_proto::{ids::UserId, money::Micros};

use super::{Store, StoreError, Tx, UserPatch, UserRow, Versioned, audit::Change, not_found};

impl Store {
    /// Creates a user; a non-zero initial balance is recorded as an adjustment.
    pub async fn create_user(
        &self,
        name: &str,
        balance_micros: Micros,
        multiplier_ppm: i64,
    ) -> Result<Versioned<UserRow>, StoreError> {
        let now = Utc::now();
        self.mutate(async |tx| {
            let row: UserRow = db_run!(tx(tx), |c| sqlx::query_as(concat!(
                "INSERT INTO users (name, balance_micros, multiplier_ppm, created_at) \
                 VALUES ($1, $2, $3, $4) RETURNING ",
                user_columns!()
            ))
            .bind(name)
            .bind(balance_micros)
            .bind(multiplier_ppm)
            .bind(now)
            .fetch_one(c)
            .await?);
            if balance_micros != Micros::ZERO {
                adjustment(tx, row.id, balance_micros, "initial balance", now).await?;
            }
            let detail = serde_json::json!({
                "name": name, "balance_micros": balance_micros, "multiplier_ppm": multiplier_ppm,
            });
            let change = Change::new("user.create", format!("user {}", row.id), &detail);
            Ok((row, change))
        })
        .await
    }

    /// One user.
    pub async fn get_user(&self, id: UserId) -> Result<UserRow, StoreError> {
        db_run!(pool(&self.db), |c| sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(c)
        .await?)
        .ok_or_else(|| not_found("user", id))
    }

    /// Up to `limit` users by id, after `after`, whose name contains `search` (any case).
    pub async fn list_users(
        &self,
        search: Option<&str>,
        after: Option<UserId>,
        limit: i64,
    ) -> Result<Vec<UserRow>, StoreError> {
        // LIKE's wildcards in the search are meant literally.
        let pattern = search.map(|s| {
            let escaped = s
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        });
        Ok(db_run!(pool(&self.db), |c| sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE (CAST($1 AS TEXT) IS NULL OR LOWER(name) LIKE $1 ESCAPE '\\') \
             AND (CAST($2 AS BIGINT) IS NULL OR id > $2) ORDER BY id LIMIT $3"
        ))
        .bind(pattern)
        .bind(after)
        .bind(limit)
        .fetch_all(c)
        .await?))
    }

    /// Credits (or, negative, debits) a balance and records why.
    pub async fn adjust_balance(
        &self,
        user_id: UserId,
        amount_micros: Micros,
        reason: &str,
    ) -> Result<Versioned<UserRow>, StoreError> {
        self.mutate(async |tx| {
            let row = db_run!(tx(tx), |c| {
                sqlx::query_as(concat!(
                "UPDATE users SET balance_micros = balance_micros + $2 WHERE id = $1 RETURNING ",
                user_columns!()
            ))
            .bind(user_id)
            .bind(amount_micros)
            .fetch_optional(c)
            .await?
            })
            .ok_or_else(|| not_found("user", user_id))?;
            adjustment(tx, user_id, amount_micros, reason, Utc::now()).await?;
            let detail = serde_json::json!({ "amount_micros": amount_micros, "reason": reason });
            let change = Change::new("user.adjust_balance", format!("user {user_id}"), &detail);
            Ok((row, change))
        })
        .await
    }

    /// Renames a user or changes their price multiplier.
    pub async fn update_user(
        &self,
        id: UserId,
        patch: UserPatch,
    ) -> Result<Versioned<UserRow>, StoreError> {
        let change = Change::new("user.update", format!("user {id}"), &patch);
        self.mutate(async |tx| {
            let row = db_run!(tx(tx), |c| sqlx::query_as(concat!(
                "UPDATE users SET name = COALESCE($2, name), \
                 multiplier_ppm = COALESCE($3, multiplier_ppm) WHERE id = $1 RETURNING ",
                user_columns!()
            ))
            .bind(id)
            .bind(patch.name)
            .bind(patch.multiplier_ppm)
            .fetch_optional(c)
            .await?);
            Ok((row.ok_or_else(|| not_found("user", id))?, change))
        })
        .await
    }
}

/// Records a change of balance and its reason.
async fn adjustment(
    tx: &mut Tx,
    user_id: UserId,
    amount_micros: Micros,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    db_run!(tx(tx), |c| {
        sqlx::query(
            "INSERT INTO balance_adjustments (user_id, amount_micros, reason, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(user_id)
        .bind(amount_micros)
        .bind(reason)
        .bind(at)
        .execute(c)
        .await?;
    });
    Ok(())
}
