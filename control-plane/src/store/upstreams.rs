//! Upstream rows: the admin CRUD and what the health checker reads and records.

use chrono::Utc;
use gateway_proto::{ids::UpstreamId, names::Named};

use super::{
    HealthUpdate, NewUpstream, Store, StoreError, TextList, UpstreamPatch, UpstreamRow,
    UpstreamSecretRow, Versioned, audit::Change, not_found,
};

impl Store {
    /// Creates an upstream.
    pub async fn create_upstream(
        &self,
        new: NewUpstream,
    ) -> Result<Versioned<UpstreamRow>, StoreError> {
        self.mutate(async |tx| {
            let detail = serde_json::to_value(&new).unwrap_or_default();
            let row = db_run!(tx(tx), |c| sqlx::query_as(concat!(
                "INSERT INTO upstreams (name, base_url, api_key_enc, api_key_hint, priority, \
                 weight, max_retries, timeout_ms, enabled, probe_path, models, created_at, \
                 updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) RETURNING ",
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
            .bind(TextList(new.models))
            .bind(Utc::now())
            .fetch_one(c)
            .await?);
            let change = Change::new("upstream.create", upstream(&row), &detail);
            Ok((row, change))
        })
        .await
    }

    /// One upstream.
    pub async fn get_upstream(&self, id: UpstreamId) -> Result<UpstreamRow, StoreError> {
        db_run!(pool(&self.db), |c| sqlx::query_as(concat!(
            "SELECT ",
            upstream_columns!(),
            " FROM upstreams WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(c)
        .await?)
        .ok_or_else(|| not_found("upstream", id))
    }

    /// All upstreams, best tier first.
    pub async fn list_upstreams(&self) -> Result<Vec<UpstreamRow>, StoreError> {
        Ok(db_run!(pool(&self.db), |c| sqlx::query_as(concat!(
            "SELECT ",
            upstream_columns!(),
            " FROM upstreams ORDER BY priority, id"
        ))
        .fetch_all(c)
        .await?))
    }

    /// Applies the fields set in `patch`.
    pub async fn update_upstream(
        &self,
        id: UpstreamId,
        patch: UpstreamPatch,
    ) -> Result<Versioned<UpstreamRow>, StoreError> {
        let change = Change::new("upstream.update", format!("upstream {id}"), &patch);
        let (api_key_enc, api_key_hint) = patch.api_key.unzip();
        self.mutate(async |tx| {
            let row = db_run!(tx(tx), |c| sqlx::query_as(concat!(
                "UPDATE upstreams SET updated_at = $2, name = COALESCE($3, name), \
                 base_url = COALESCE($4, base_url), api_key_enc = COALESCE($5, api_key_enc), \
                 api_key_hint = COALESCE($6, api_key_hint), priority = COALESCE($7, priority), \
                 weight = COALESCE($8, weight), max_retries = COALESCE($9, max_retries), \
                 timeout_ms = COALESCE($10, timeout_ms), enabled = COALESCE($11, enabled), \
                 probe_path = COALESCE($12, probe_path), models = COALESCE($13, models) \
                 WHERE id = $1 RETURNING ",
                upstream_columns!()
            ))
            .bind(id)
            .bind(Utc::now())
            .bind(&patch.name)
            .bind(&patch.base_url)
            .bind(&api_key_enc)
            .bind(&api_key_hint)
            .bind(patch.priority)
            .bind(patch.weight)
            .bind(patch.max_retries)
            .bind(patch.timeout_ms)
            .bind(patch.enabled)
            .bind(&patch.probe_path)
            .bind(patch.models.map(TextList))
            .fetch_optional(c)
            .await?);
            Ok((row.ok_or_else(|| not_found("upstream", id))?, change))
        })
        .await
    }

    /// Deletes an upstream. Usage rows keep its id.
    pub async fn delete_upstream(
        &self,
        id: UpstreamId,
    ) -> Result<Versioned<UpstreamId>, StoreError> {
        self.mutate(async |tx| {
            let deleted = db_run!(tx(tx), |c| sqlx::query(
                "DELETE FROM upstreams WHERE id = $1"
            )
            .bind(id)
            .execute(c)
            .await?
            .rows_affected());
            if deleted == 0 {
                return Err(not_found("upstream", id));
            }
            let change = Change::new("upstream.delete", format!("upstream {id}"), &());
            Ok((id, change))
        })
        .await
    }

    /// Records probe outcomes; bumps the config version once if any changes routing.
    pub async fn record_health(&self, updates: &[HealthUpdate]) -> Result<Option<i64>, StoreError> {
        if updates.is_empty() {
            return Ok(None);
        }
        let now = Utc::now();
        let recorded = self
            .mutate(async |tx| {
                for u in updates {
                    db_run!(tx(tx), |c| {
                        sqlx::query(
                            "UPDATE upstreams SET health = $2, health_error = $3, \
                                             health_checked_at = $4 WHERE id = $1",
                        )
                        .bind(u.upstream_id)
                        .bind(u.health.name())
                        .bind(&u.error)
                        .bind(now)
                        .execute(c)
                        .await?;
                    });
                }
                Ok(((), updates.iter().any(|u| u.bump)))
            })
            .await?;
        Ok(recorded.version)
    }

    /// Enabled upstreams with active checks, with their encrypted keys.
    pub async fn upstreams_to_probe(&self) -> Result<Vec<UpstreamSecretRow>, StoreError> {
        Ok(db_run!(pool(&self.db), |c| sqlx::query_as(concat!(
            "SELECT ",
            upstream_columns!(),
            ", api_key_enc FROM upstreams WHERE enabled AND probe_path <> '' ORDER BY id"
        ))
        .fetch_all(c)
        .await?))
    }

    /// One upstream with its encrypted key.
    pub async fn upstream_with_secret(
        &self,
        id: UpstreamId,
    ) -> Result<UpstreamSecretRow, StoreError> {
        db_run!(pool(&self.db), |c| sqlx::query_as(concat!(
            "SELECT ",
            upstream_columns!(),
            ", api_key_enc FROM upstreams WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(c)
        .await?)
        .ok_or_else(|| not_found("upstream", id))
    }
}

/// How the audit log names an upstream.
fn upstream(row: &UpstreamRow) -> String {
    format!("upstream {} ({})", row.id, row.name)
}
