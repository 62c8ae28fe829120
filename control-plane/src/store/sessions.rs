//! Console and portal sessions: created at sign-in, looked up by the digest of the cookie's
//! token on every request, ended at sign-out or when they expire.

use chrono::{DateTime, Utc};
use gateway_proto::ids::KeyId;

use super::{Store, StoreError};

/// A signed-in session.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionRow {
    /// SHA-256 of the cookie's token.
    pub digest: Vec<u8>,
    /// `admin` or `portal`.
    pub kind: String,
    /// A portal session's key.
    pub key_id: Option<KeyId>,
    /// The token its forms carry.
    pub csrf: String,
    /// Where it signed in from.
    pub source: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl Store {
    /// Keeps a new session, and forgets the ones that have expired.
    pub async fn create_session(&self, session: &SessionRow) -> Result<(), StoreError> {
        db_run!(pool(&self.db), |c| {
            sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1")
                .bind(session.created_at)
                .execute(c)
                .await?;
            sqlx::query(
                "INSERT INTO console_sessions (digest, kind, key_id, csrf, source, created_at, \
                 expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&session.digest)
            .bind(&session.kind)
            .bind(session.key_id)
            .bind(&session.csrf)
            .bind(&session.source)
            .bind(session.created_at)
            .bind(session.expires_at)
            .execute(c)
            .await?;
        });
        Ok(())
    }

    /// The session of this token digest, unless it has ended or expired by `now`.
    pub async fn session(
        &self,
        digest: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<SessionRow>, StoreError> {
        Ok(db_run!(pool(&self.db), |c| sqlx::query_as(
            "SELECT digest, kind, key_id, csrf, source, created_at, expires_at \
             FROM console_sessions WHERE digest = $1 AND expires_at > $2"
        )
        .bind(digest)
        .bind(now)
        .fetch_optional(c)
        .await?))
    }

    /// Ends a session (signing out); whether there was one.
    pub async fn end_session(&self, digest: &[u8]) -> Result<bool, StoreError> {
        Ok(db_run!(pool(&self.db), |c| sqlx::query(
            "DELETE FROM console_sessions WHERE digest = $1"
        )
        .bind(digest)
        .execute(c)
        .await?
        .rows_affected())
            > 0)
    }
}
