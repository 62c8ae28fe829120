//! SQLite: the standalone store — one process, one file, no server. Same semantics as the
//! Postgres store (the contract suite runs against both): every mutation bumps the config
//! version in its transaction, usage ingest is idempotent by event id and debits balances in
//! the same transaction. One connection serialises all writes; change notifications are
//! in-process.

use std::{str::FromStr, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{
    QueryBuilder, Sqlite, SqlitePool, Transaction,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    types::Json,
};
use tokio::sync::watch;

use super::{
    DailyRow, HealthUpdate, IngestOutcome, KeyPatch, KeyRow, NewKey, NewUpstream, PriceRow,
    SnapshotState, StoreError, SummaryBy, SummaryRow, UpstreamPatch, UpstreamRow,
    UpstreamSecretRow, UsageFilter, UsageRow, UserPatch, UserRow, Versioned, not_found,
};

macro_rules! upstream_columns {
    () => {
        "id, name, base_url, api_key_hint, priority, weight, max_retries, timeout_ms, enabled, \
         health, created_at, updated_at, probe_path, health_error, health_checked_at"
    };
}
macro_rules! user_columns {
    () => {
        "id, name, balance_micros, multiplier_ppm, created_at"
    };
}
macro_rules! key_columns {
    () => {
        "id, user_id, name, prefix, digest, revoked_at, expires_at, models, ip_allow, rpm, \
         concurrency, created_at"
    };
}
macro_rules! usage_columns {
    () => {
        "id, request_id, key_id, user_id, upstream_id, model, endpoint, input_tokens, \
         cached_tokens, output_tokens, reasoning_tokens, cost_micros, status, stream, estimated, \
         ttfb_ms, duration_ms, node_id, started_at"
    };
}

/// A key as SQLite stores it: lists as JSON text.
#[derive(sqlx::FromRow)]
struct SqliteKeyRow {
    id: i64,
    user_id: i64,
    name: String,
    prefix: String,
    digest: Vec<u8>,
    revoked_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    models: Json<Vec<String>>,
    ip_allow: Json<Vec<String>>,
    rpm: Option<i32>,
    concurrency: Option<i32>,
    created_at: DateTime<Utc>,
}

impl From<SqliteKeyRow> for KeyRow {
    fn from(k: SqliteKeyRow) -> Self {
        Self {
            id: k.id,
            user_id: k.user_id,
            name: k.name,
            prefix: k.prefix,
            digest: k.digest,
            revoked_at: k.revoked_at,
            expires_at: k.expires_at,
            models: k.models.0,
            ip_allow: k.ip_allow.0,
            rpm: k.rpm,
            concurrency: k.concurrency,
            created_at: k.created_at,
        }
    }
}

/// Handle to the SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    changes: Arc<watch::Sender<i64>>,
}

type Tx<'a> = Transaction<'a, Sqlite>;

impl SqliteStore {
    /// Opens (creating if needed) the database and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Money is in here: every commit is durable before it is acknowledged.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations-sqlite").run(&pool).await?;
        let version: i64 = sqlx::query_scalar("SELECT version FROM config_state")
            .fetch_one(&pool)
            .await?;
        Ok(Self {
            pool,
            changes: Arc::new(watch::Sender::new(version)),
        })
    }

    /// Config-version bumps made through this store.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.changes.subscribe()
    }

    async fn commit(&self, tx: Tx<'_>, version: Option<i64>) -> Result<(), StoreError> {
        tx.commit().await?;
        if let Some(v) = version {
            self.changes.send_replace(v);
        }
        Ok(())
    }

    /// The current config version.
    pub async fn config_version(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT version FROM config_state")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Creates an upstream.
    pub async fn create_upstream(
        &self,
        new: NewUpstream,
    ) -> Result<Versioned<UpstreamRow>, StoreError> {
        let now = Utc::now();
        let mut tx = self.pool.begin().await?;
        let row: UpstreamRow = sqlx::query_as(concat!(
            "INSERT INTO upstreams (name, base_url, api_key_enc, api_key_hint, priority, weight, \
             max_retries, timeout_ms, enabled, probe_path, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) RETURNING ",
            upstream_columns!()
        ))
        .bind(&new.name)
        .bind(&new.base_url)
        .bind(&new.api_key_enc)
        .bind(&new.api_key_hint)
        .bind(new.priority)
        .bind(new.weight)
        .bind(new.max_retries)
        .bind(new.timeout_ms)
        .bind(new.enabled)
        .bind(&new.probe_path)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let version = bump_version(&mut tx).await?;
        self.commit(tx, Some(version)).await?;
        Ok(Versioned {
            value: row,
            version,
        })
    }

    /// One upstream.
    pub async fn get_upstream(&self, id: i64) -> Result<UpstreamRow, StoreError> {
        sqlx::query_as(concat!(
            "SELECT ",
            upstream_columns!(),
            " FROM upstreams WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| not_found("upstream", id))
    }

    /// All upstreams, best tier first.
    pub async fn list_upstreams(&self) -> Result<Vec<UpstreamRow>, StoreError> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            upstream_columns!(),
            " FROM upstreams ORDER BY priority, id"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Applies the fields set in `patch`.
    pub async fn update_upstream(
        &self,
        id: i64,
        patch: UpstreamPatch,
    ) -> Result<Versioned<UpstreamRow>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut q = QueryBuilder::<Sqlite>::new("UPDATE upstreams SET updated_at = ");
        q.push_bind(Utc::now());
        if let Some(name) = patch.name {
            q.push(", name = ").push_bind(name);
        }
        if let Some(base_url) = patch.base_url {
            q.push(", base_url = ").push_bind(base_url);
        }
        if let Some((enc, hint)) = patch.api_key {
            q.push(", api_key_enc = ").push_bind(enc);
            q.push(", api_key_hint = ").push_bind(hint);
        }
        if let Some(priority) = patch.priority {
            q.push(", priority = ").push_bind(priority);
        }
        if let Some(weight) = patch.weight {
            q.push(", weight = ").push_bind(weight);
        }
        if let Some(max_retries) = patch.max_retries {
            q.push(", max_retries = ").push_bind(max_retries);
        }
        if let Some(timeout_ms) = patch.timeout_ms {
            q.push(", timeout_ms = ").push_bind(timeout_ms);
        }
        if let Some(enabled) = patch.enabled {
            q.push(", enabled = ").push_bind(enabled);
        }
        if let Some(probe_path) = patch.probe_path {
            q.push(", probe_path = ").push_bind(probe_path);
        }
        q.push(" WHERE id = ").push_bind(id);
        q.push(concat!(" RETURNING ", upstream_columns!()));
        let row: UpstreamRow = q
            .build_query_as()
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| not_found("upstream", id))?;
        let version = bump_version(&mut tx).await?;
        self.commit(tx, Some(version)).await?;
        Ok(Versioned {
            value: row,
            version,
        })
    }

    /// Deletes an upstream. Usage rows keep its id.
    pub async fn delete_upstream(&self, id: i64) -> Result<Versioned<i64>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM upstreams WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(not_found("upstream", id));
        }
        let version = bump_version(&mut tx).await?;
        self.commit(tx, Some(version)).await?;
        Ok(Versioned { value: id, version })
    }

    /// Records probe outcomes; bumps the config version once if any changes routing.
    pub async fn record_health(&self, updates: &[HealthUpdate]) -> Result<Option<i64>, StoreError> {
        if updates.is_empty() {
            return Ok(None);
        }
        let now = Utc::now();
        let mut tx = self.pool.begin().await?;
        for u in updates {
            sqlx::query(
                "UPDATE upstreams SET health = $2, health_error = $3, health_checked_at = $4 \
                 WHERE id = $1",
            )
            .bind(u.upstream_id)
            .bind(u.health)
            .bind(&u.error)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let version = if updates.iter().any(|u| u.bump) {
            Some(bump_version(&mut tx).await?)
        } else {
            None
        };
        self.commit(tx, version).await?;
        Ok(version)
    }

    /// Enabled upstreams with active checks, with their encrypted keys.
    pub async fn upstreams_to_probe(&self) -> Result<Vec<UpstreamSecretRow>, StoreError> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            upstream_columns!(),
            ", api_key_enc FROM upstreams WHERE enabled AND probe_path <> '' ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// One upstream with its encrypted key.
    pub async fn upstream_with_secret(&self, id: i64) -> Result<UpstreamSecretRow, StoreError> {
        sqlx::query_as(concat!(
            "SELECT ",
            upstream_columns!(),
            ", api_key_enc FROM upstreams WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| not_found("upstream", id))
    }

    /// Creates a user; a non-zero initial balance is recorded as an adjustment.
    pub async fn create_user(
        &self,
        name: &str,
        balance_micros: i64,
        multiplier_ppm: i64,
    ) -> Result<Versioned<UserRow>, StoreError> {
        let now = Utc::now();
        let mut tx = self.pool.begin().await?;
        let row: UserRow = sqlx::query_as(concat!(
            "INSERT INTO users (name, balance_micros, multiplier_ppm, created_at) \
             VALUES ($1, $2, $3, $4) RETURNING ",
            user_columns!()
        ))
        .bind(name)
        .bind(balance_micros)
        .bind(multiplier_ppm)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        if balance_micros != 0 {
            adjustment(&mut tx, row.id, balance_micros, "initial balance").await?;
        }
        let version = bump_version(&mut tx).await?;
        self.commit(tx, Some(version)).await?;
        Ok(Versioned {
            value: row,
            version,
        })
    }

    /// One user.
    pub async fn get_user(&self, id: i64) -> Result<UserRow, StoreError> {
        sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| not_found("user", id))
    }

    /// All users.
    pub async fn list_users(&self) -> Result<Vec<UserRow>, StoreError> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?)
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
            user_columns!()
        ))
        .bind(user_id)
        .bind(amount_micros)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| not_found("user", user_id))?;
        adjustment(&mut tx, user_id, amount_micros, reason).await?;
        let version = bump_version(&mut tx).await?;
        self.commit(tx, Some(version)).await?;
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
        let mut q = QueryBuilder::<Sqlite>::new("UPDATE users SET name = name");
        if let Some(name) = patch.name {
            q.push(", name = ").push_bind(name);
        }
        if let Some(multiplier) = patch.multiplier_ppm {
            q.push(", multiplier_ppm = ").push_bind(multiplier);
        }
        q.push(" WHERE id = ").push_bind(id);
        q.push(concat!(" RETURNING ", user_columns!()));
        let row: UserRow = q
            .build_query_as()
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| not_found("user", id))?;
        let version = bump_version(&mut tx).await?;
        self.commit(tx, Some(version)).await?;
        Ok(Versioned {
            value: row,
            version,
        })
    }

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
        let row: SqliteKeyRow = sqlx::query_as(concat!(
            "INSERT INTO api_keys (user_id, name, prefix, digest, expires_at, models, ip_allow, \
             rpm, concurrency, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             RETURNING ",
            key_columns!()
        ))
        .bind(new.user_id)
        .bind(&new.name)
        .bind(&new.prefix)
        .bind(&new.digest)
        .bind(new.expires_at)
        .bind(Json(&new.models))
        .bind(Json(&new.ip_allow))
        .bind(new.rpm)
        .bind(new.concurrency)
        .bind(Utc::now())
        .fetch_one(&mut *tx)
        .await?;
        let version = bump_version(&mut tx).await?;
        self.commit(tx, Some(version)).await?;
        Ok(Versioned {
            value: row.into(),
            version,
        })
    }

    /// Keys, optionally of one user.
    pub async fn list_keys(&self, user_id: Option<i64>) -> Result<Vec<KeyRow>, StoreError> {
        let rows: Vec<SqliteKeyRow> = sqlx::query_as(concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE ($1 IS NULL OR user_id = $1) ORDER BY id"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Revokes a key; revoking twice keeps the first revocation time.
    pub async fn revoke_key(&self, id: i64) -> Result<Versioned<KeyRow>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row: SqliteKeyRow = sqlx::query_as(concat!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 RETURNING ",
            key_columns!()
        ))
        .bind(id)
        .bind(Utc::now())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| not_found("key", id))?;
        let version = bump_version(&mut tx).await?;
        self.commit(tx, Some(version)).await?;
        Ok(Versioned {
            value: row.into(),
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
        let mut q = QueryBuilder::<Sqlite>::new("UPDATE api_keys SET name = name");
        if let Some(name) = patch.name {
            q.push(", name = ").push_bind(name);
        }
        if let Some(expires_at) = patch.expires_at {
            q.push(", expires_at = ").push_bind(expires_at);
        }
        if let Some(models) = patch.models {
            q.push(", models = ").push_bind(Json(models));
        }
        if let Some(ip_allow) = patch.ip_allow {
            q.push(", ip_allow = ").push_bind(Json(ip_allow));
        }
        if let Some(rpm) = patch.rpm {
            q.push(", rpm = ").push_bind(rpm);
        }
        if let Some(concurrency) = patch.concurrency {
            q.push(", concurrency = ").push_bind(concurrency);
        }
        q.push(" WHERE id = ").push_bind(id);
        q.push(concat!(" RETURNING ", key_columns!()));
        let row: SqliteKeyRow = q
            .build_query_as()
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| not_found("key", id))?;
        let version = bump_version(&mut tx).await?;
        self.commit(tx, Some(version)).await?;
        Ok(Versioned {
            value: row.into(),
            version,
        })
    }

    /// Sets (inserts or replaces) the price of a model.
    pub async fn set_price(&self, price: PriceRow) -> Result<Versioned<PriceRow>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row: PriceRow = sqlx::query_as(
            "INSERT INTO prices (model, input_micros, cached_input_micros, output_micros, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (model) DO UPDATE SET \
             input_micros = excluded.input_micros, cached_input_micros = excluded.cached_input_micros, \
             output_micros = excluded.output_micros, updated_at = excluded.updated_at \
             RETURNING model, input_micros, cached_input_micros, output_micros",
        )
        .bind(&price.model)
        .bind(price.input_micros)
        .bind(price.cached_input_micros)
        .bind(price.output_micros)
        .bind(Utc::now())
        .fetch_one(&mut *tx)
        .await?;
        let version = bump_version(&mut tx).await?;
        self.commit(tx, Some(version)).await?;
        Ok(Versioned {
            value: row,
            version,
        })
    }

    /// All prices.
    pub async fn list_prices(&self) -> Result<Vec<PriceRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT model, input_micros, cached_input_micros, output_micros FROM prices ORDER BY model",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Writes a batch of events and debits each user by the cost of the new ones, in one
    /// transaction; a balance crossing zero bumps the config version.
    pub async fn ingest_usage(&self, rows: &[UsageRow]) -> Result<IngestOutcome, StoreError> {
        if rows.is_empty() {
            return Ok(IngestOutcome::default());
        }
        let now = Utc::now();
        let mut tx = self.pool.begin().await?;
        let mut per_user: std::collections::BTreeMap<i64, i64> = Default::default();
        let mut outcome = IngestOutcome::default();
        for r in rows {
            let inserted = sqlx::query(concat!(
                "INSERT INTO usage_events (",
                usage_columns!(),
                ", ingested_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
                 $14, $15, $16, $17, $18, $19, $20) ON CONFLICT (id) DO NOTHING"
            ))
            .bind(r.id)
            .bind(&r.request_id)
            .bind(r.key_id)
            .bind(r.user_id)
            .bind(r.upstream_id)
            .bind(&r.model)
            .bind(&r.endpoint)
            .bind(r.input_tokens)
            .bind(r.cached_tokens)
            .bind(r.output_tokens)
            .bind(r.reasoning_tokens)
            .bind(r.cost_micros)
            .bind(&r.status)
            .bind(r.stream)
            .bind(r.estimated)
            .bind(r.ttfb_ms)
            .bind(r.duration_ms)
            .bind(&r.node_id)
            .bind(r.started_at)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 1 {
                outcome.inserted += 1;
                *per_user.entry(r.user_id).or_default() += r.cost_micros;
                sqlx::query(
                    "INSERT INTO usage_daily (day, user_id, model, requests, input_tokens, \
                     cached_tokens, output_tokens, reasoning_tokens, cost_micros, estimated) \
                     VALUES ($1, $2, $3, 1, $4, $5, $6, $7, $8, $9) \
                     ON CONFLICT (day, user_id, model) DO UPDATE SET \
                     requests = requests + 1, input_tokens = input_tokens + excluded.input_tokens, \
                     cached_tokens = cached_tokens + excluded.cached_tokens, \
                     output_tokens = output_tokens + excluded.output_tokens, \
                     reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens, \
                     cost_micros = cost_micros + excluded.cost_micros, \
                     estimated = estimated + excluded.estimated",
                )
                .bind(r.started_at.format("%Y-%m-%d").to_string())
                .bind(r.user_id)
                .bind(&r.model)
                .bind(r.input_tokens)
                .bind(r.cached_tokens)
                .bind(r.output_tokens)
                .bind(r.reasoning_tokens)
                .bind(r.cost_micros)
                .bind(i64::from(r.estimated))
                .execute(&mut *tx)
                .await?;
            }
        }
        for (user_id, total) in per_user {
            let after: Option<i64> = sqlx::query_scalar(
                "UPDATE users SET balance_micros = balance_micros - $2 WHERE id = $1 \
                 RETURNING balance_micros",
            )
            .bind(user_id)
            .bind(total)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(after) = after
                && after <= 0
                && after.saturating_add(total) > 0
            {
                outcome.exhausted_users.push(user_id);
            }
        }
        if !outcome.exhausted_users.is_empty() {
            outcome.version = Some(bump_version(&mut tx).await?);
        }
        self.commit(tx, outcome.version).await?;
        Ok(outcome)
    }

    /// Keeps an entry that cannot be ingested, with the reason.
    pub async fn dead_letter(
        &self,
        stream_id: &str,
        payload: Option<&[u8]>,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO usage_dead_letters (stream_id, payload, error, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (stream_id) DO NOTHING",
        )
        .bind(stream_id)
        .bind(payload)
        .bind(error)
        .bind(Utc::now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Per-day rollups, newest day first, optionally of one user.
    pub async fn daily_usage(&self, user_id: Option<i64>) -> Result<Vec<DailyRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT day, user_id, model, requests, input_tokens, cached_tokens, output_tokens, \
             reasoning_tokens, cost_micros, estimated FROM usage_daily WHERE ($1 IS NULL OR user_id = $1) \
             ORDER BY day DESC, user_id, model",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Usage events, newest first.
    pub async fn list_usage(&self, filter: &UsageFilter) -> Result<Vec<UsageRow>, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new(concat!(
            "SELECT ",
            usage_columns!(),
            " FROM usage_events WHERE 1 = 1"
        ));
        push_filters(&mut q, filter);
        q.push(" ORDER BY started_at DESC, id DESC LIMIT ")
            .push_bind(filter.limit);
        Ok(q.build_query_as().fetch_all(&self.pool).await?)
    }

    /// Totals per user, model, upstream or UTC day, largest cost first.
    pub async fn summarize_usage(
        &self,
        by: SummaryBy,
        filter: &UsageFilter,
    ) -> Result<Vec<SummaryRow>, StoreError> {
        if let Some(group) = rollup_group(by, filter) {
            // The rollups hold the same totals in far fewer rows than the ledger.
            let mut q = QueryBuilder::<Sqlite>::new("SELECT ");
            q.push(group).push(
                " AS grp, SUM(requests) AS requests, SUM(input_tokens) AS input_tokens, \
                 SUM(cached_tokens) AS cached_tokens, SUM(output_tokens) AS output_tokens, \
                 SUM(reasoning_tokens) AS reasoning_tokens, SUM(cost_micros) AS cost_micros, \
                 SUM(estimated) AS estimated FROM usage_daily WHERE 1 = 1",
            );
            push_filters(&mut q, filter);
            q.push(" GROUP BY grp ORDER BY cost_micros DESC, grp");
            return Ok(q.build_query_as().fetch_all(&self.pool).await?);
        }
        let group = match by {
            SummaryBy::User => "CAST(user_id AS TEXT)",
            SummaryBy::Model => "model",
            SummaryBy::Upstream => "COALESCE(CAST(upstream_id AS TEXT), '-')",
            // Timestamps are stored as UTC RFC 3339 text: the day is its first ten characters.
            SummaryBy::Day => "substr(started_at, 1, 10)",
        };
        let mut q = QueryBuilder::<Sqlite>::new("SELECT ");
        q.push(group).push(
            " AS grp, COUNT(*) AS requests, SUM(input_tokens) AS input_tokens, \
             SUM(cached_tokens) AS cached_tokens, SUM(output_tokens) AS output_tokens, \
             SUM(reasoning_tokens) AS reasoning_tokens, SUM(cost_micros) AS cost_micros, \
             SUM(CASE WHEN estimated THEN 1 ELSE 0 END) AS estimated FROM usage_events WHERE 1 = 1",
        );
        push_filters(&mut q, filter);
        q.push(" GROUP BY grp ORDER BY cost_micros DESC, grp");
        Ok(q.build_query_as().fetch_all(&self.pool).await?)
    }

    /// The config version and every row it covers, read in one transaction.
    pub async fn snapshot_state(&self) -> Result<SnapshotState, StoreError> {
        let mut tx = self.pool.begin().await?;
        let version: i64 = sqlx::query_scalar("SELECT version FROM config_state")
            .fetch_one(&mut *tx)
            .await?;
        let upstreams: Vec<UpstreamSecretRow> = sqlx::query_as(concat!(
            "SELECT ",
            upstream_columns!(),
            ", api_key_enc FROM upstreams ORDER BY id"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let keys: Vec<SqliteKeyRow> = sqlx::query_as(concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE revoked_at IS NULL ORDER BY id"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let users: Vec<UserRow> = sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users ORDER BY id"
        ))
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
            keys: keys.into_iter().map(Into::into).collect(),
            users,
            prices,
        })
    }
}

/// The grouping expression over `usage_daily`, when the rollups can answer the summary.
fn rollup_group(by: SummaryBy, filter: &UsageFilter) -> Option<&'static str> {
    match by {
        _ if !filter.rollups_answer(by) => None,
        SummaryBy::User => Some("CAST(user_id AS TEXT)"),
        SummaryBy::Model => Some("model"),
        SummaryBy::Day => Some("day"),
        SummaryBy::Upstream => None,
    }
}

fn push_filters(q: &mut QueryBuilder<Sqlite>, filter: &UsageFilter) {
    if let Some(user_id) = filter.user_id {
        q.push(" AND user_id = ").push_bind(user_id);
    }
    if let Some(key_id) = filter.key_id {
        q.push(" AND key_id = ").push_bind(key_id);
    }
    if let Some(upstream_id) = filter.upstream_id {
        q.push(" AND upstream_id = ").push_bind(upstream_id);
    }
    if let Some(model) = &filter.model {
        q.push(" AND model = ").push_bind(model.clone());
    }
    if let Some(since) = filter.since {
        q.push(" AND started_at >= ").push_bind(since);
    }
    if let Some(until) = filter.until {
        q.push(" AND started_at < ").push_bind(until);
    }
}

async fn adjustment(
    tx: &mut Tx<'_>,
    user_id: i64,
    amount_micros: i64,
    reason: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO balance_adjustments (user_id, amount_micros, reason, created_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(user_id)
    .bind(amount_micros)
    .bind(reason)
    .bind(Utc::now())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Bumps the config version inside `tx`; subscribers are told after commit.
async fn bump_version(tx: &mut Tx<'_>) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("UPDATE config_state SET version = version + 1 RETURNING version")
            .fetch_one(&mut **tx)
            .await?,
    )
}
