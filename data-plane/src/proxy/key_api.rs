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
        limit: u32,
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

fn json(value: &serde_json::Value) -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::from(value.to_string())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
