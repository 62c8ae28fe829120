//! What a key may ask about itself: `GET /v1/models` (the models it may use, from the
//! snapshot) and `GET /v1/usage` (its recent usage, its spending caps with what it spent in
//! each window, and its user's balance, from the ledger).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, header};
use tracing::warn;

use super::{Proxy, ProxyBody, auth, error::ProxyError, full, now_ms};

impl Proxy {
    /// `GET /v1/models`: what the presented key may use, from the snapshot.
    pub(super) fn models(&self, headers: &HeaderMap) -> Result<Response<ProxyBody>, ProxyError> {
        let snapshot = self
            .shared
            .snapshot
            .load_full()
            .ok_or(ProxyError::NotReady)?;
        let (key, _) = auth::authenticate_key(&snapshot, headers, now_ms())?;
        let data: Vec<serde_json::Value> = snapshot
            .models_for(key)
            .into_iter()
            .map(|id| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "codex-gateway"}))
            .collect();
        Ok(json(&serde_json::json!({"object": "list", "data": data})))
    }

    /// `GET /v1/usage`: the key's own recent usage and its user's balance, from the ledger.
    pub(super) async fn usage(
        &self,
        headers: &HeaderMap,
        limit: Option<u32>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let snapshot = self
            .shared
            .snapshot
            .load_full()
            .ok_or(ProxyError::NotReady)?;
        let (key, user) = auth::authenticate_key(&snapshot, headers, now_ms())?;
        let mut request = tonic::Request::new(gateway_proto::v1::KeyUsageRequest {
            key_id: key.id.get(),
            user_id: user.id.get(),
            limit,
        });
        request.set_timeout(Duration::from_secs(5));
        let usage = self
            .shared
            .ledger
            .clone()
            .key_usage(request)
            .await
            .map_err(|status| {
                warn!(target: "ProxyHandler", error = %status, "key usage query failed");
                ProxyError::LedgerUnavailable
            })?
            .into_inner();
        Ok(json(&serde_json::json!({
            "object": "list",
            "balance_micros": usage.balance_micros,
            "spend_limits": usage.spend_limits,
            "data": usage.events,
        })))
    }
}

/// Most events `GET /v1/usage` returns.
const MAX_USAGE_LIMIT: u32 = 100;

/// `?limit=N` of `GET /v1/usage`: absent means the default; anything but 1 to 100 is refused
/// rather than quietly replaced.
pub(super) fn usage_limit(query: Option<&str>) -> Result<Option<u32>, ProxyError> {
    let Some(text) = query.and_then(|q| q.split('&').find_map(|p| p.strip_prefix("limit="))) else {
        return Ok(None);
    };
    match text.parse::<u32>() {
        Ok(n @ 1..=MAX_USAGE_LIMIT) => Ok(Some(n)),
        _ => Err(ProxyError::BadRequest(format!(
            "limit must be a whole number from 1 to {MAX_USAGE_LIMIT}, got {text:?}"
        ))),
    }
}

fn json(value: &serde_json::Value) -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::from(value.to_string())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_limit_is_explicit() {
        assert_eq!(usage_limit(None).unwrap(), None);
        assert_eq!(usage_limit(Some("x=1")).unwrap(), None);
        assert_eq!(usage_limit(Some("x=1&limit=7")).unwrap(), Some(7));
        assert_eq!(usage_limit(Some("limit=100")).unwrap(), Some(100));
        for bad in ["limit=0", "limit=101", "limit=ten", "limit=", "limit=-1"] {
            let err = usage_limit(Some(bad)).unwrap_err().to_string();
            assert!(err.contains("from 1 to 100"), "{bad}: {err}");
        }
    }
}
