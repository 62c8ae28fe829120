//! Authentication and admission: the presented key, looked up by digest in the snapshot, and
//! the checks that need nothing but the snapshot (expiry, model allow-list, balance).

use gateway_proto::digest::KeyDigest;
use http::HeaderMap;

use super::error::ProxyError;
use crate::{
    metering::Unsettled,
    routing::{KeyEntry, RoutingTable, UserEntry},
};

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
    table: &'t RoutingTable,
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

/// [`authenticate_key`], and the user may spend: the snapshot balance, less what this proxy has
/// spent for them since the snapshot, is not used up.
pub(super) fn authenticate<'t>(
    table: &'t RoutingTable,
    headers: &HeaderMap,
    now_ms: i64,
    unsettled: &Unsettled,
) -> Result<(&'t KeyEntry, &'t UserEntry), ProxyError> {
    let (key, user) = authenticate_key(table, headers, now_ms)?;
    let local = unsettled.spent(user.id, Unsettled::floor(table.built_at_ms));
    if user.balance_micros.saturating_sub(local) <= 0 {
        return Err(ProxyError::InsufficientQuota);
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
