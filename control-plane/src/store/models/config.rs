//! Upstreams, users, prices, the audit log and the snapshot: rows and changes as the store
//! reads and writes them.

use chrono::{DateTime, Utc};
use gateway_proto::money::Micros;
use gateway_proto::{
    ids::{KeyId, UpstreamId, UserId},
    v1::UpstreamHealth,
};

use super::{KeyRow, KeySpend, TextList};

/// An upstream account pool.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UpstreamRow {
    pub id: UpstreamId,
    pub name: String,
    pub base_url: String,
    pub api_key_hint: String,
    pub priority: i32,
    pub weight: i32,
    pub max_retries: i32,
    pub timeout_ms: i32,
    pub enabled: bool,
    pub health: UpstreamHealth,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub probe_path: String,
    pub health_error: String,
    pub health_checked_at: Option<DateTime<Utc>>,
    /// The models it serves; empty means every model.
    #[sqlx(try_from = "TextList")]
    pub models: Vec<String>,
}

/// An upstream with its encrypted API key, as the snapshot needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UpstreamSecretRow {
    #[sqlx(flatten)]
    pub upstream: UpstreamRow,
    pub api_key_enc: Vec<u8>,
}

/// A new upstream; the key is already encrypted (and never in its audit detail).
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewUpstream {
    pub name: String,
    pub base_url: String,
    #[serde(skip)]
    pub api_key_enc: Vec<u8>,
    pub api_key_hint: String,
    pub priority: i32,
    pub weight: i32,
    pub max_retries: i32,
    pub timeout_ms: i32,
    pub enabled: bool,
    pub probe_path: String,
    /// The models it serves; empty means every model.
    pub models: Vec<String>,
}

/// Changes to an upstream; `None` leaves a field as it is. Its audit detail names the fields
/// set, and a new API key only by its hint.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UpstreamPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The encrypted key and its hint.
    #[serde(rename = "api_key_hint", serialize_with = "hint_only")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<(Vec<u8>, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_path: Option<String>,
    /// Replaces the models it serves; `Some(vec![])` means every model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UserPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multiplier_ppm: Option<i64>,
}

/// The result of one health probe, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthUpdate {
    pub upstream_id: UpstreamId,
    /// Healthy or unhealthy (a probe always has an outcome).
    pub health: UpstreamHealth,
    pub error: String,
    /// Whether routing changes, so data planes need a new snapshot.
    pub bump: bool,
}

/// A user and their balance.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: UserId,
    pub name: String,
    pub balance_micros: Micros,
    pub multiplier_ppm: i64,
    pub created_at: DateTime<Utc>,
}

/// Price of a model per 1M tokens, in micro-units.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct PriceRow {
    pub model: String,
    pub input_micros: Micros,
    pub cached_input_micros: Micros,
    pub output_micros: Micros,
}

/// One admin change as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub principal: String,
    pub source: String,
    /// What was done: `upstream.create`, `key.revoke`, …
    pub action: String,
    /// To what: `upstream 3`, `price gpt-5`.
    pub target: String,
    /// The fields it set, as JSON (never a secret).
    pub detail: String,
    /// The config version it produced, if any.
    pub config_version: Option<i64>,
}

/// Everything a snapshot is built from, read in one consistent transaction.
#[derive(Debug, Clone)]
pub struct SnapshotState {
    pub version: i64,
    pub upstreams: Vec<UpstreamSecretRow>,
    pub keys: Vec<KeyRow>,
    /// What each capped key has spent, as of `read_at`.
    pub key_spend: std::collections::HashMap<KeyId, KeySpend>,
    pub read_at: DateTime<Utc>,
    pub users: Vec<UserRow>,
    pub prices: Vec<PriceRow>,
}

/// An upstream patch's new key as its hint alone.
fn hint_only<S: serde::Serializer>(
    key: &Option<(Vec<u8>, String)>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_some(&key.as_ref().map(|(_, hint)| hint))
}
