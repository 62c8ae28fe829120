//! Admission, the first phase of a proxied request: the presented key, looked up by digest
//! in the applied snapshot; its expiry; the user's balance less this data plane's unsettled
//! spend; the key's spending caps, its snapshot spend plus the unsettled; the key's IP
//! allow-list; its per-minute and concurrency limits. Nothing but memory.
//! The model allow-list is checked once the body has named the model.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use gateway_proto::digest::KeyDigest;
use http::HeaderMap;

use super::{
    error::ProxyError,
    limits::{self, KeyLimits, KeySlot},
};
use crate::{
    metering::Unsettled,
    snapshot::{AppliedSnapshot, KeyEntry, UserEntry},
};

/// What admission needs besides the snapshot: who may forward client addresses, the keys'
/// local counters, and this data plane's spend not yet in the snapshot's balances.
#[derive(Debug)]
pub(super) struct Admission {
    trusted_proxies: Vec<ipnet::IpNet>,
    key_limits: KeyLimits,
    unsettled: Arc<Unsettled>,
}

/// An admitted request: its key, its user, and the key's concurrency slot (held until the
/// response body ends).
#[derive(Debug)]
pub(super) struct Admitted<'s> {
    pub(super) key: &'s KeyEntry,
    pub(super) user: &'s UserEntry,
    pub(super) slot: Option<KeySlot>,
}

impl Admission {
    pub(super) fn new(trusted_proxies: Vec<ipnet::IpNet>) -> Self {
        Self {
            trusted_proxies,
            key_limits: KeyLimits::default(),
            unsettled: Arc::default(),
        }
    }

    /// This data plane's unsettled spend, which every meter records into.
    pub(super) fn unsettled(&self) -> &Arc<Unsettled> {
        &self.unsettled
    }

    /// Admits a request of the presented key from `peer`, or says why not.
    pub(super) fn admit<'s>(
        &self,
        snapshot: &'s AppliedSnapshot,
        headers: &HeaderMap,
        peer: SocketAddr,
        now: Instant,
        now_ms: i64,
    ) -> Result<Admitted<'s>, ProxyError> {
        let (key, user) = authenticate(snapshot, headers, now_ms, &self.unsettled)?;
        let client_ip = limits::client_ip(peer.ip(), headers, &self.trusted_proxies);
        limits::check_ip(key, client_ip)?;
        let slot = self.key_limits.admit(key, now)?;
        Ok(Admitted { key, user, slot })
    }
}

/// The gateway key presented as `Authorization: Bearer <key>` or `x-api-key: <key>`.
pub(super) fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The key and its user, if the key exists and has not expired.
pub(super) fn authenticate_key<'t>(
    table: &'t AppliedSnapshot,
    headers: &HeaderMap,
    now_ms: i64,
) -> Result<(&'t KeyEntry, &'t UserEntry), ProxyError> {
    let secret = presented_key(headers).ok_or(ProxyError::MissingKey)?;
    let key = table
        .key(&KeyDigest::of_secret(secret))
        .ok_or(ProxyError::InvalidKey)?;
    if key.expires_at_ms != 0 && key.expires_at_ms <= now_ms {
        return Err(ProxyError::KeyExpired);
    }
    let user = table.user(key.user_id).ok_or(ProxyError::InvalidKey)?;
    Ok((key, user))
}

/// [`authenticate_key`], and the user and key may spend: the snapshot balance, less what this
/// proxy has spent for them since the snapshot, is not used up, and no cap of the key is
/// reached by its snapshot spend plus this proxy's. Whichever binds first refuses.
fn authenticate<'t>(
    table: &'t AppliedSnapshot,
    headers: &HeaderMap,
    now_ms: i64,
    unsettled: &Unsettled,
) -> Result<(&'t KeyEntry, &'t UserEntry), ProxyError> {
    let (key, user) = authenticate_key(table, headers, now_ms)?;
    let floor = Unsettled::floor(table.built_at_ms);
    let local = unsettled.spent(user.id, floor);
    if !user.balance.saturating_sub(local).is_positive() {
        return Err(ProxyError::InsufficientQuota);
    }
    if !key.caps.is_empty() {
        let local = unsettled.key_spent(key.id, floor);
        if let Some(cap) = key
            .caps
            .iter()
            .find(|c| c.spent.saturating_add(local).get() >= c.limit.limit_micros)
        {
            return Err(ProxyError::SpendLimitReached {
                limit: cap.limit,
                spent: cap.spent.saturating_add(local),
                frees_at_ms: cap.frees_at_ms,
            });
        }
    }
    Ok((key, user))
}

/// Whether the key may use `model`.
pub(super) fn check_model(key: &KeyEntry, model: &str) -> Result<(), ProxyError> {
    if key.models.is_empty() || key.models.iter().any(|m| m == model) {
        Ok(())
    } else {
        Err(ProxyError::ModelNotAllowed(model.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn key_from_either_header() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert("x-api-key", HeaderValue::from_static("cgw-a"));
        assert_eq!(presented_key(&h), Some("cgw-a"));
        h.insert("authorization", HeaderValue::from_static("Bearer cgw-b"));
        assert_eq!(presented_key(&h), Some("cgw-b"));
        h.insert("authorization", HeaderValue::from_static("Basic xyz"));
        assert_eq!(presented_key(&h), None);
    }
}
