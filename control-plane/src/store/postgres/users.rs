//! Users and their balances.

use sqlx::QueryBuilder;

use super::{PgStore, StoreError, UserPatch, UserRow, Versioned, bump_version, not_found};

/// The columns every query of this table returns, as a literal so SQL stays static.
macro_rules! columns {
    () => {
        "id, name, balance_micros, multiplier_ppm, created_at"
    };
}

impl PgStore {
    /// Creates a user; a non-zero initial balance is recorded as an adjustment.
    pub async fn create_user(
        &self,
        name: &str,
        balance_micros: i64,
        multiplier_ppm: i64,
    ) -> Result<Versioned<UserRow>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row: UserRow = sqlx::query_as(concat!(
            "INSERT INTO users (name, balance_micros, multiplier_ppm) VALUES ($1, $2, $3) \
             RETURNING ",
            columns!()
        ))
        .bind(name)
        .bind(balance_micros)
        .bind(multiplier_ppm)
        .fetch_one(&mut *tx)
        .await?;
        if balance_micros != 0 {
            sqlx::query(
                "INSERT INTO balance_adjustments (user_id, amount_micros, reason) \
                 VALUES ($1, $2, 'initial balance')",
            )
            .bind(row.id)
            .bind(balance_micros)
            .execute(&mut *tx)
            .await?;
        }
        let version = bump_version(&mut tx).await?;
        tx.commit().await?;
        Ok(Versioned {
            value: row,
            version,
        })
    }

    /// One user.
    pub async fn get_user(&self, id: i64) -> Result<UserRow, StoreError> {
        sqlx::query_as(concat!("SELECT ", columns!(), " FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| not_found("user", id))
    }

    /// All users.
    pub async fn list_users(&self) -> Result<Vec<UserRow>, StoreError> {
        Ok(
            sqlx::query_as(concat!("SELECT ", columns!(), " FROM users ORDER BY id"))
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Credits (or, negative, debits) a balance and records why.
    pub async fn adjust_balance(
        &self,
        user_id: i64,
        amount_micros: i64,
        reason: &str,
    ) -> Result<Versioned<UserRow>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row: UserRow = sqlx::query_as(concat!(
            "UPDATE users SET balance_micros = balance_micros + $2 WHERE id = $1 RETURNING ",
            columns!()
        ))
        .bind(user_id)
        .bind(amount_micros)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| not_found("user", user_id))?;
        sqlx::query(
            "INSERT INTO balance_adjustments (user_id, amount_micros, reason) VALUES ($1, $2, $3)",
        )
        .bind(user_id)
        .bind(amount_micros)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        let version = bump_version(&mut tx).await?;
        tx.commit().await?;
        Ok(Versioned {
            value: row,
            version,
        })
    }

    /// Renames a user or changes their price multiplier.
    pub async fn update_user(
        &self,
        id: i64,
        patch: UserPatch,
    ) -> Result<Versioned<UserRow>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut q = QueryBuilder::new("UPDATE users SET name = name");
        if let Some(name) = patch.name {
            q.push(", name = ").push_bind(name);
        }
        if let Some(multiplier) = patch.multiplier_ppm {
            q.push(", multiplier_ppm = ").push_bind(multiplier);
        }
        q.push(" WHERE id = ").push_bind(id);
        q.push(" RETURNING ").push(columns!());
        let row: UserRow = q
            .build_query_as()
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| not_found("user", id))?;
        let version = bump_version(&mut tx).await?;
        tx.commit().await?;
        Ok(Versioned {
            value: row,
            version,
        })
    }
}
