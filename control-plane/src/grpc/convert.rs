//! Store rows → wire messages.

use chrono::{DateTime, SecondsFormat, Utc};
use gateway_proto::v1;

use crate::store::{KeyRow, PriceRow, SummaryRow, UpstreamRow, UsageRow, UserRow};

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl From<UpstreamRow> for v1::Upstream {
    fn from(u: UpstreamRow) -> Self {
        Self {
            id: u.id,
            name: u.name,
            base_url: u.base_url,
            api_key_hint: u.api_key_hint,
            priority: u.priority,
            weight: u32::try_from(u.weight).unwrap_or(0),
            max_retries: u32::try_from(u.max_retries).unwrap_or(0),
            timeout_ms: u32::try_from(u.timeout_ms).unwrap_or(0),
            enabled: u.enabled,
            health: u.health,
            created_at: time(u.created_at),
            updated_at: time(u.updated_at),
            probe_path: u.probe_path,
            health_error: u.health_error,
            health_checked_at: u.health_checked_at.map(time),
        }
    }
}

impl From<UserRow> for v1::User {
    fn from(u: UserRow) -> Self {
        Self {
            id: u.id,
            name: u.name,
            balance_micros: u.balance_micros,
            multiplier_ppm: u64::try_from(u.multiplier_ppm).unwrap_or(0),
            created_at: time(u.created_at),
        }
    }
}

impl From<KeyRow> for v1::Key {
    fn from(k: KeyRow) -> Self {
        Self {
            id: k.id,
            user_id: k.user_id,
            name: k.name,
            prefix: k.prefix,
            revoked: k.revoked_at.is_some(),
            expires_at: k.expires_at.map(time),
            models: k.models,
            ip_allow: k.ip_allow,
            rpm: k.rpm.and_then(|v| u32::try_from(v).ok()),
            concurrency: k.concurrency.and_then(|v| u32::try_from(v).ok()),
            created_at: time(k.created_at),
        }
    }
}

impl From<PriceRow> for v1::Price {
    fn from(p: PriceRow) -> Self {
        Self {
            model: p.model,
            input_micros: p.input_micros,
            cached_input_micros: p.cached_input_micros,
            output_micros: p.output_micros,
        }
    }
}

impl From<UsageRow> for v1::UsageRecord {
    fn from(u: UsageRow) -> Self {
        Self {
            id: u.id.to_string(),
            request_id: u.request_id,
            user_id: u.user_id,
            key_id: u.key_id,
            upstream_id: u.upstream_id,
            model: u.model,
            input_tokens: u.input_tokens,
            cached_tokens: u.cached_tokens,
            output_tokens: u.output_tokens,
            reasoning_tokens: u.reasoning_tokens,
            cost_micros: u.cost_micros,
            estimated: u.estimated,
            status: u.status,
            stream: u.stream,
            ttfb_ms: u32::try_from(u.ttfb_ms).unwrap_or(0),
            duration_ms: u32::try_from(u.duration_ms).unwrap_or(0),
            node_id: u.node_id,
            created_at: time(u.started_at),
        }
    }
}

impl From<SummaryRow> for v1::UsageSummaryRow {
    fn from(r: SummaryRow) -> Self {
        Self {
            group: r.grp,
            requests: r.requests,
            input_tokens: r.input_tokens,
            cached_tokens: r.cached_tokens,
            output_tokens: r.output_tokens,
            reasoning_tokens: r.reasoning_tokens,
            cost_micros: r.cost_micros,
            estimated: r.estimated,
        }
    }
}
