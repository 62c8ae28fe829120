//! The audit log: every admin change is written in the transaction that makes it, with who
//! made it ([`Actor`]), what it changed (an action, its target, and the fields it set as JSON:
//! ids and values, never a secret) and the config version it produced.

use std::fmt::Display;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::QueryBuilder;

use super::{Bump, Store, StoreError, Tx};

/// Who makes admin changes through a store ([`Store::acting_as`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// How they proved they may: `admin token`, `console session`.
    pub principal: String,
    /// Where from: the peer's address, or `in-process`.
    pub source: String,
}

impl Actor {
    /// A change made through a store no caller named (tests, tools).
    pub(super) fn unnamed() -> Self {
        Self {
            principal: "unnamed".into(),
            source: "in-process".into(),
        }
    }
}

/// One admin change, to record: admin changes of what data planes see always bump the config
/// version, so as a [`Bump`] it bumps and then records itself with the new version.
#[derive(Debug, Clone)]
pub(super) struct Change {
    action: &'static str,
    target: String,
    detail: String,
}

impl Change {
    /// `action` (`upstream.create`) on `target` (`upstream 3`), setting `detail`'s fields.
    pub(super) fn new(action: &'static str, target: impl Display, detail: &impl Serialize) -> Self {
        Self {
            action,
            target: target.to_string(),
            // Serializing plain rows and patches cannot fail; an empty detail says so if it did.
            detail: serde_json::to_string(detail).unwrap_or_default(),
        }
    }

    /// Writes the entry inside `tx`.
    pub(super) async fn record(
        &self,
        tx: &mut Tx,
        actor: &Actor,
        version: Option<i64>,
    ) -> Result<(), StoreError> {
        db_run!(tx(tx), |c| {
            sqlx::query(
                "INSERT INTO audit_log (at, principal, source, action, target, detail, \
                 config_version) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(Utc::now())
            .bind(&actor.principal)
            .bind(&actor.source)
            .bind(self.action)
            .bind(&self.target)
            .bind(&self.detail)
            .bind(version)
            .execute(c)
            .await?;
        });
        Ok(())
    }
}

impl Bump for Change {
    type Version = i64;
    async fn apply(self, tx: &mut Tx, actor: &Actor) -> Result<i64, StoreError> {
        let version = tx.bump().await?;
        self.record(tx, actor, Some(version)).await?;
        Ok(version)
    }
}

impl Store {
    /// This store, recording `actor` as the author of the admin changes made through it.
    pub fn acting_as(&self, actor: Actor) -> Self {
        Self {
            actor: std::sync::Arc::new(actor),
            ..self.clone()
        }
    }

    /// Audit entries, newest first: up to `limit` of those older than entry `before` and made
    /// at or after `since`.
    pub async fn list_audit(
        &self,
        limit: i64,
        before: Option<i64>,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<super::AuditRow>, StoreError> {
        Ok(db_run!(pool(&self.db), |c| {
            let mut q = QueryBuilder::new(
                "SELECT id, at, principal, source, action, target, detail, config_version \
                 FROM audit_log WHERE 1 = 1",
            );
            if let Some(before) = before {
                q.push(" AND id < ").push_bind(before);
            }
            if let Some(since) = since {
                q.push(" AND at >= ").push_bind(since);
            }
            q.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
            q.build_query_as().fetch_all(c).await?
        }))
    }
}
