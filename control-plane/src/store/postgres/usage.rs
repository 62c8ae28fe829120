//! The usage ledger: idempotent ingest with the balance debit in the same transaction.

use sqlx::QueryBuilder;

use super::{
    DailyRow, IngestOutcome, PgStore, StoreError, SummaryBy, SummaryRow, UsageFilter, UsageRow,
    bump_version,
};

/// The columns every query of this table returns, as a literal so SQL stays static.
macro_rules! columns {
    () => {
        "id, request_id, key_id, user_id, upstream_id, model, endpoint, input_tokens, \
                       cached_tokens, output_tokens, reasoning_tokens, cost_micros, status, stream, \
                       estimated, ttfb_ms, duration_ms, node_id, started_at"
    };
}

/// Columnar form of a batch, for one `UNNEST` insert.
#[derive(Default)]
struct Columns {
    id: Vec<uuid::Uuid>,
    request_id: Vec<String>,
    key_id: Vec<i64>,
    user_id: Vec<i64>,
    upstream_id: Vec<i64>,
    model: Vec<String>,
    endpoint: Vec<String>,
    input_tokens: Vec<i64>,
    cached_tokens: Vec<i64>,
    output_tokens: Vec<i64>,
    reasoning_tokens: Vec<i64>,
    cost_micros: Vec<i64>,
    status: Vec<String>,
    stream: Vec<bool>,
    estimated: Vec<bool>,
    ttfb_ms: Vec<i32>,
    duration_ms: Vec<i32>,
    node_id: Vec<String>,
    started_at: Vec<chrono::DateTime<chrono::Utc>>,
}

impl Columns {
    fn of(rows: &[UsageRow]) -> Self {
        let mut c = Self::default();
        for r in rows {
            c.id.push(r.id);
            c.request_id.push(r.request_id.clone());
            c.key_id.push(r.key_id);
            c.user_id.push(r.user_id);
            c.upstream_id.push(r.upstream_id.unwrap_or(0));
            c.model.push(r.model.clone());
            c.endpoint.push(r.endpoint.clone());
            c.input_tokens.push(r.input_tokens);
            c.cached_tokens.push(r.cached_tokens);
            c.output_tokens.push(r.output_tokens);
            c.reasoning_tokens.push(r.reasoning_tokens);
            c.cost_micros.push(r.cost_micros);
            c.status.push(r.status.clone());
            c.stream.push(r.stream);
            c.estimated.push(r.estimated);
            c.ttfb_ms.push(r.ttfb_ms);
            c.duration_ms.push(r.duration_ms);
            c.node_id.push(r.node_id.clone());
            c.started_at.push(r.started_at);
        }
        c
    }
}

impl PgStore {
    /// Writes a batch of events and debits each user by the cost of the events that were new,
    /// in one transaction. Events already in the ledger are skipped, so redelivery is harmless.
    /// When a user's balance crosses from positive to zero or below, the config version is
    /// bumped so every data plane refuses them.
    pub async fn ingest_usage(&self, rows: &[UsageRow]) -> Result<IngestOutcome, StoreError> {
        if rows.is_empty() {
            return Ok(IngestOutcome::default());
        }
        let c = Columns::of(rows);
        let mut tx = self.pool.begin().await?;
        // Lock the users in id order first, so concurrent consumers cannot deadlock.
        let mut user_ids = c.user_id.clone();
        user_ids.sort_unstable();
        user_ids.dedup();
        sqlx::query("SELECT id FROM users WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&user_ids)
            .execute(&mut *tx)
            .await?;
        let per_user: Vec<(i64, i64, Option<i64>, i64)> = sqlx::query_as(
            "WITH ins AS ( \
               INSERT INTO usage_events (id, request_id, key_id, user_id, upstream_id, model, \
                 endpoint, input_tokens, cached_tokens, output_tokens, reasoning_tokens, \
                 cost_micros, status, stream, estimated, ttfb_ms, duration_ms, node_id, started_at) \
               SELECT id, request_id, key_id, user_id, NULLIF(upstream_id, 0), model, endpoint, \
                 input_tokens, cached_tokens, output_tokens, reasoning_tokens, cost_micros, status, \
                 stream, estimated, ttfb_ms, duration_ms, node_id, started_at \
               FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::text[], \
                 $7::text[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::int8[], \
                 $13::text[], $14::bool[], $15::bool[], $16::int4[], $17::int4[], $18::text[], \
                 $19::timestamptz[]) \
                 AS t(id, request_id, key_id, user_id, upstream_id, model, endpoint, input_tokens, \
                 cached_tokens, output_tokens, reasoning_tokens, cost_micros, status, stream, \
                 estimated, ttfb_ms, duration_ms, node_id, started_at) \
               ON CONFLICT (id) DO NOTHING \
               RETURNING user_id, cost_micros, model, started_at, input_tokens, cached_tokens, \
                 output_tokens, reasoning_tokens, estimated), \
             roll AS ( \
               INSERT INTO usage_daily (day, user_id, model, requests, input_tokens, \
                 cached_tokens, output_tokens, reasoning_tokens, cost_micros, estimated) \
               SELECT to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), user_id, model, \
                 COUNT(*), SUM(input_tokens)::INT8, SUM(cached_tokens)::INT8, \
                 SUM(output_tokens)::INT8, SUM(reasoning_tokens)::INT8, SUM(cost_micros)::INT8, \
                 COUNT(*) FILTER (WHERE estimated) \
               FROM ins GROUP BY 1, 2, 3 \
               ON CONFLICT (day, user_id, model) DO UPDATE SET \
                 requests = usage_daily.requests + EXCLUDED.requests, \
                 input_tokens = usage_daily.input_tokens + EXCLUDED.input_tokens, \
                 cached_tokens = usage_daily.cached_tokens + EXCLUDED.cached_tokens, \
                 output_tokens = usage_daily.output_tokens + EXCLUDED.output_tokens, \
                 reasoning_tokens = usage_daily.reasoning_tokens + EXCLUDED.reasoning_tokens, \
                 cost_micros = usage_daily.cost_micros + EXCLUDED.cost_micros, \
                 estimated = usage_daily.estimated + EXCLUDED.estimated), \
             per_user AS ( \
               SELECT user_id, COUNT(*)::int8 AS n, SUM(cost_micros)::int8 AS total \
               FROM ins GROUP BY user_id), \
             debit AS ( \
               UPDATE users u SET balance_micros = u.balance_micros - p.total \
               FROM per_user p WHERE u.id = p.user_id \
               RETURNING u.id, u.balance_micros AS after) \
             SELECT p.user_id, p.n, d.after, p.total \
             FROM per_user p LEFT JOIN debit d ON d.id = p.user_id",
        )
        .bind(&c.id)
        .bind(&c.request_id)
        .bind(&c.key_id)
        .bind(&c.user_id)
        .bind(&c.upstream_id)
        .bind(&c.model)
        .bind(&c.endpoint)
        .bind(&c.input_tokens)
        .bind(&c.cached_tokens)
        .bind(&c.output_tokens)
        .bind(&c.reasoning_tokens)
        .bind(&c.cost_micros)
        .bind(&c.status)
        .bind(&c.stream)
        .bind(&c.estimated)
        .bind(&c.ttfb_ms)
        .bind(&c.duration_ms)
        .bind(&c.node_id)
        .bind(&c.started_at)
        .fetch_all(&mut *tx)
        .await?;

        let mut outcome = IngestOutcome::default();
        for (user_id, n, after, total) in per_user {
            outcome.inserted += u64::try_from(n).unwrap_or(0);
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
        tx.commit().await?;
        Ok(outcome)
    }

    /// Keeps a stream entry that cannot be ingested, with the reason.
    pub async fn dead_letter(
        &self,
        stream_id: &str,
        payload: Option<&[u8]>,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO usage_dead_letters (stream_id, payload, error) VALUES ($1, $2, $3) \
             ON CONFLICT (stream_id) DO NOTHING",
        )
        .bind(stream_id)
        .bind(payload)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Per-day rollups, newest day first, optionally of one user.
    pub async fn daily_usage(&self, user_id: Option<i64>) -> Result<Vec<DailyRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT day, user_id, model, requests, input_tokens, cached_tokens, output_tokens, \
             reasoning_tokens, cost_micros, estimated FROM usage_daily WHERE ($1::INT8 IS NULL OR user_id = $1) \
             ORDER BY day DESC, user_id, model",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Usage events, newest first.
    pub async fn list_usage(&self, filter: &UsageFilter) -> Result<Vec<UsageRow>, StoreError> {
        let mut q = QueryBuilder::new(concat!(
            "SELECT ",
            columns!(),
            " FROM usage_events WHERE TRUE"
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
            let mut q = QueryBuilder::new("SELECT ");
            q.push(group).push(
                " AS grp, SUM(requests)::INT8 AS requests, SUM(input_tokens)::INT8 AS input_tokens, \
                 SUM(cached_tokens)::INT8 AS cached_tokens, SUM(output_tokens)::INT8 AS output_tokens, \
                 SUM(reasoning_tokens)::INT8 AS reasoning_tokens, SUM(cost_micros)::INT8 AS cost_micros, \
                 SUM(estimated)::INT8 AS estimated FROM usage_daily WHERE TRUE",
            );
            push_filters(&mut q, filter);
            q.push(" GROUP BY grp ORDER BY cost_micros DESC, grp");
            return Ok(q.build_query_as().fetch_all(&self.pool).await?);
        }
        let group = match by {
            SummaryBy::User => "user_id::TEXT",
            SummaryBy::Model => "model",
            SummaryBy::Upstream => "COALESCE(upstream_id::TEXT, '-')",
            SummaryBy::Day => "to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        };
        let mut q = QueryBuilder::new("SELECT ");
        q.push(group).push(
            " AS grp, COUNT(*)::INT8 AS requests, SUM(input_tokens)::INT8 AS input_tokens, \
             SUM(cached_tokens)::INT8 AS cached_tokens, SUM(output_tokens)::INT8 AS output_tokens, \
             SUM(reasoning_tokens)::INT8 AS reasoning_tokens, SUM(cost_micros)::INT8 AS cost_micros, \
             COUNT(*) FILTER (WHERE estimated)::INT8 AS estimated FROM usage_events WHERE TRUE",
        );
        push_filters(&mut q, filter);
        q.push(" GROUP BY grp ORDER BY cost_micros DESC, grp");
        Ok(q.build_query_as().fetch_all(&self.pool).await?)
    }
}

/// The grouping expression over `usage_daily`, when the rollups can answer the summary.
fn rollup_group(by: SummaryBy, filter: &UsageFilter) -> Option<&'static str> {
    match by {
        _ if !filter.rollups_answer(by) => None,
        SummaryBy::User => Some("user_id::TEXT"),
        SummaryBy::Model => Some("model"),
        SummaryBy::Day => Some("day"),
        SummaryBy::Upstream => None,
    }
}

fn push_filters(q: &mut QueryBuilder<sqlx::Postgres>, filter: &UsageFilter) {
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
