//! Wire ↔ domain, once, at the gRPC boundary: store rows → wire messages (ids, amounts and
//! enums back to the wire's plain numbers), and the parts of requests that need more than a
//! newtype around a wire number → the store's types, refusing what does not validate.

use chrono::{DateTime, SecondsFormat, Utc};
use gateway_proto::{
    ids::{KeyId, UpstreamId, UserId},
    names::Named,
    v1::{self, SummaryBy},
};
use tonic::Status;

use super::validate;
use crate::store::{
    AuditRow, DeadLetterRow, KeyRow, KeySpend, PriceRow, SummaryRow, UpstreamRow, UsageFilter,
    UsageRow, UserRow,
};

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The grouping a summary asks for; it is required, and must be one this build knows.
pub(super) fn summary_by(value: i32) -> Result<SummaryBy, Status> {
    let choices = || {
        let names: Vec<&str> = SummaryBy::ALL.iter().map(|by| by.name()).collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.concat(),
        }
    };
    match SummaryBy::try_from(value) {
        Ok(SummaryBy::Unspecified) => Err(Status::invalid_argument(format!(
            "a usage summary needs a grouping: use {}",
            choices()
        ))),
        Ok(by) => Ok(by),
        Err(_) => Err(Status::invalid_argument(format!(
            "cannot summarize by grouping {value}: use {}",
            choices()
        ))),
    }
}

/// The usage a list or summary asks for: the wire's optional ids, a model and RFC 3339 times.
pub(super) fn usage_filter(
    user_id: Option<i64>,
    key_id: Option<i64>,
    upstream_id: Option<i64>,
    model: Option<String>,
    since: Option<&str>,
    until: Option<&str>,
    limit: i64,
) -> Result<UsageFilter, Status> {
    Ok(UsageFilter {
        user_id: user_id.map(UserId),
        key_id: key_id.map(KeyId),
        upstream_id: upstream_id.map(UpstreamId),
        model,
        since: since.map(|t| validate::timestamp("since", t)).transpose()?,
        until: until.map(|t| validate::timestamp("until", t)).transpose()?,
        limit,
        after: None,
        status: None,
    })
}

/// The cursor of the page after `rows` listed by id: a full page may have a next one, a short
/// one is the last.
pub(super) fn next_cursor<T>(rows: &[T], limit: u32, id: impl Fn(&T) -> i64) -> Option<String> {
    (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| id(r).to_string()))
        .flatten()
}

/// The cursor of the page after `row`: its start time, to the nanosecond, and its id.
pub(super) fn usage_cursor(row: &UsageRow) -> String {
    format!(
        "{}/{}",
        row.started_at.to_rfc3339_opts(SecondsFormat::Nanos, true),
        row.id
    )
}

/// A cursor [`usage_cursor`] made.
pub(super) fn parse_usage_cursor(text: &str) -> Result<(DateTime<Utc>, uuid::Uuid), Status> {
    let bad = || Status::invalid_argument(format!("cursor {text:?} is not one this API gave"));
    let (t, id) = text.split_once('/').ok_or_else(bad)?;
    Ok((
        t.parse().map_err(|_| bad())?,
        id.parse().map_err(|_| bad())?,
    ))
}

impl TryFrom<v1::Price> for PriceRow {
    type Error = Status;

    fn try_from(p: v1::Price) -> Result<Self, Status> {
        let model = p.model.trim().to_owned();
        if model.is_empty() {
            return Err(Status::invalid_argument(
                "model must not be empty (use \"*\" for the default price)",
            ));
        }
        Ok(Self {
            model,
            input_micros: validate::price_micros("input price", p.input_micros)?,
            cached_input_micros: validate::price_micros(
                "cached input price",
                p.cached_input_micros,
            )?,
            output_micros: validate::price_micros("output price", p.output_micros)?,
        })
    }
}

impl From<UpstreamRow> for v1::Upstream {
    fn from(u: UpstreamRow) -> Self {
        Self {
            id: u.id.get(),
            name: u.name,
            base_url: u.base_url,
            api_key_hint: u.api_key_hint,
            priority: u.priority,
            weight: u32::try_from(u.weight).unwrap_or(0),
            max_retries: u32::try_from(u.max_retries).unwrap_or(0),
            timeout_ms: u32::try_from(u.timeout_ms).unwrap_or(0),
            enabled: u.enabled,
            health: u.health as i32,
            created_at: time(u.created_at),
            updated_at: time(u.updated_at),
            probe_path: u.probe_path,
            health_error: u.health_error,
            health_checked_at: u.health_checked_at.map(time),
            models: u.models,
        }
    }
}

impl From<UserRow> for v1::User {
    fn from(u: UserRow) -> Self {
        Self {
            id: u.id.get(),
            name: u.name,
            balance_micros: u.balance_micros.get(),
            multiplier_ppm: u64::try_from(u.multiplier_ppm).unwrap_or(0),
            created_at: time(u.created_at),
        }
    }
}

/// A key as the admin API shows it, with its caps and `spend` (none: nothing spent).
pub(super) fn key(k: KeyRow, spend: Option<&KeySpend>) -> v1::Key {
    v1::Key {
        id: k.id.get(),
        user_id: k.user_id.get(),
        name: k.name,
        prefix: k.prefix,
        revoked: k.revoked_at.is_some(),
        expires_at: k.expires_at.map(time),
        models: k.models,
        ip_allow: k.ip_allow,
        rpm: k.rpm.and_then(|v| u32::try_from(v).ok()),
        concurrency: k.concurrency.and_then(|v| u32::try_from(v).ok()),
        created_at: time(k.created_at),
        spend_limits: k.caps.states(spend),
    }
}

impl From<PriceRow> for v1::Price {
    fn from(p: PriceRow) -> Self {
        Self {
            model: p.model,
            input_micros: p.input_micros.get(),
            cached_input_micros: p.cached_input_micros.get(),
            output_micros: p.output_micros.get(),
        }
    }
}

impl From<UsageRow> for v1::UsageRecord {
    fn from(u: UsageRow) -> Self {
        Self {
            id: u.id.to_string(),
            request_id: u.request_id,
            user_id: u.user_id.get(),
            key_id: u.key_id.get(),
            upstream_id: u.upstream_id.map(UpstreamId::get),
            model: u.model,
            input_tokens: u.input_tokens,
            cached_tokens: u.cached_tokens,
            output_tokens: u.output_tokens,
            reasoning_tokens: u.reasoning_tokens,
            cost_micros: u.cost_micros.get(),
            estimated: u.estimated,
            status: u.status as i32,
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
        let t = r.totals;
        Self {
            group: r.grp,
            requests: t.requests,
            input_tokens: t.input_tokens,
            cached_tokens: t.cached_tokens,
            output_tokens: t.output_tokens,
            reasoning_tokens: t.reasoning_tokens,
            cost_micros: t.cost_micros.get(),
            estimated: t.estimated,
            errors: t.errors,
        }
    }
}

impl From<AuditRow> for v1::AuditEntry {
    fn from(a: AuditRow) -> Self {
        Self {
            id: a.id,
            at: time(a.at),
            principal: a.principal,
            source: a.source,
            action: a.action,
            target: a.target,
            detail: a.detail,
            config_version: a.config_version,
        }
    }
}

impl From<DeadLetterRow> for v1::DeadLetter {
    fn from(d: DeadLetterRow) -> Self {
        let event = d
            .payload
            .as_deref()
            .and_then(|p| crate::usage::decode(p).ok())
            .map(Into::into);
        Self {
            id: d.stream_id,
            error: d.error,
            created_at: time(d.created_at),
            payload_bytes: d
                .payload
                .as_ref()
                .map_or(0, |p| u32::try_from(p.len()).unwrap_or(u32::MAX)),
            event,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_needs_a_known_grouping() {
        assert_eq!(summary_by(SummaryBy::Day as i32).unwrap(), SummaryBy::Day);
        let unspecified = summary_by(SummaryBy::Unspecified as i32).unwrap_err();
        assert_eq!(unspecified.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            unspecified.message(),
            "a usage summary needs a grouping: use user, model, upstream, day, key or hour"
        );
        let unknown = summary_by(42).unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            unknown.message(),
            "cannot summarize by grouping 42: use user, model, upstream, day, key or hour"
        );
    }

    #[test]
    fn rows_carry_enums_and_newtypes_back_to_the_wire() {
        let now = Utc::now();
        let row = UsageRow {
            id: uuid::Uuid::now_v7(),
            request_id: "r".into(),
            key_id: KeyId(2),
            user_id: UserId(3),
            upstream_id: Some(UpstreamId(4)),
            model: "m".into(),
            endpoint: "responses".into(),
            input_tokens: 1,
            cached_tokens: 0,
            output_tokens: 1,
            reasoning_tokens: 0,
            cost_micros: gateway_proto::money::Micros(250),
            status: v1::UsageStatus::UpstreamError,
            stream: false,
            estimated: false,
            ttfb_ms: 1,
            duration_ms: 2,
            node_id: "dp".into(),
            started_at: now,
        };
        let wire = v1::UsageRecord::from(row);
        assert_eq!(
            (
                wire.user_id,
                wire.key_id,
                wire.upstream_id,
                wire.cost_micros
            ),
            (3, 2, Some(4), 250)
        );
        assert_eq!(wire.status(), v1::UsageStatus::UpstreamError);
    }
}
