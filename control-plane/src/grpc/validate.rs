//! Validation of admin input, with messages that tell the operator how to fix it.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use gateway_proto::{
    money::Micros,
    names::{Named, name_of},
    v1::{SpendLimit, SpendWindow},
};
use tonic::Status;

use crate::store::SpendCaps;

/// Default per-upstream timeout: connect + response head, and any silence between chunks.
pub(crate) const DEFAULT_TIMEOUT_MS: u32 = 120_000;
const MIN_TIMEOUT_MS: u32 = 1_000;
const MAX_TIMEOUT_MS: u32 = 3_600_000;
const MAX_WEIGHT: u32 = 10_000;
const MAX_RETRIES: u32 = 10;
const MAX_NAME_LEN: usize = 100;
/// Far more than any pool serves; a bound so one row cannot grow without limit.
const MAX_UPSTREAM_MODELS: usize = 256;
const MAX_MODEL_LEN: usize = 128;

/// A key's spending caps: each in a known window, above zero, at most one per window.
pub(crate) fn spend_limits(limits: Vec<SpendLimit>) -> Result<SpendCaps, Status> {
    let mut caps = SpendCaps::default();
    for limit in limits {
        let slot = SpendWindow::try_from(limit.window)
            .ok()
            .and_then(|w| caps.slot(w))
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "spend limit window {} is not one of: {}",
                    limit.window,
                    SpendWindow::ALL
                        .iter()
                        .map(|w| w.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        if limit.limit_micros <= 0 {
            return Err(Status::invalid_argument(format!(
                "spend limit {limit} must be above zero"
            )));
        }
        if let Some(existing) = slot.replace(Micros(limit.limit_micros)) {
            return Err(Status::invalid_argument(format!(
                "two spend limits for the {} window ({} and {limit}); give one per window",
                name_of::<SpendWindow>(limit.window),
                SpendLimit {
                    window: limit.window,
                    limit_micros: existing.get(),
                },
            )));
        }
    }
    Ok(caps)
}

pub(crate) fn name(kind: &str, value: &str) -> Result<String, Status> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{kind} name must not be empty"
        )));
    }
    if value.chars().count() > MAX_NAME_LEN {
        return Err(Status::invalid_argument(format!(
            "{kind} name must be at most {MAX_NAME_LEN} characters"
        )));
    }
    Ok(value.to_owned())
}

/// An upstream base URL: http(s), no query, and never ending in `/v1`.
pub(crate) fn base_url(value: &str) -> Result<String, Status> {
    let url = url::Url::parse(value.trim()).map_err(|e| {
        Status::invalid_argument(format!(
            "base URL {value:?} is not a valid URL ({e}); expected e.g. https://pool.example.com/openai"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(Status::invalid_argument(format!(
            "base URL {value:?} must be an http:// or https:// URL with a host"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(Status::invalid_argument(format!(
            "base URL {value:?} must not carry a query, fragment or credentials (put the key in --api-key)"
        )));
    }
    let normalized = url.as_str().trim_end_matches('/').to_owned();
    if normalized.ends_with("/v1") {
        let suggestion = normalized.trim_end_matches("/v1");
        return Err(Status::invalid_argument(format!(
            "base URL {value:?} ends in /v1, but the gateway appends /v1/... itself; \
             use {suggestion:?} instead"
        )));
    }
    Ok(normalized)
}

pub(crate) fn api_key(value: &str) -> Result<String, Status> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Status::invalid_argument(
            "upstream API key must not be empty",
        ));
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
    {
        return Err(Status::invalid_argument(
            "upstream API key must be printable ASCII without spaces",
        ));
    }
    Ok(value.to_owned())
}

pub(crate) fn priority(value: i32) -> Result<i32, Status> {
    if !(0..=1000).contains(&value) {
        return Err(Status::invalid_argument(format!(
            "priority must be between 0 and 1000 (lower number = preferred, 0 is the best tier), got {value}"
        )));
    }
    Ok(value)
}

pub(crate) fn weight(value: u32) -> Result<i32, Status> {
    if value == 0 || value > MAX_WEIGHT {
        return Err(Status::invalid_argument(format!(
            "weight must be between 1 and {MAX_WEIGHT}, got {value}"
        )));
    }
    Ok(value as i32)
}

pub(crate) fn max_retries(value: u32) -> Result<i32, Status> {
    if value > MAX_RETRIES {
        return Err(Status::invalid_argument(format!(
            "max_retries must be at most {MAX_RETRIES}, got {value}"
        )));
    }
    Ok(value as i32)
}

pub(crate) fn timeout_ms(value: u32) -> Result<i32, Status> {
    if !(MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(&value) {
        return Err(Status::invalid_argument(format!(
            "timeout must be between {} s and {} s, got {} ms (it bounds waiting for the response head \
             and silences between chunks, never a whole stream)",
            MIN_TIMEOUT_MS / 1000,
            MAX_TIMEOUT_MS / 1000,
            value
        )));
    }
    Ok(value as i32)
}

/// A probe path: empty (checks off) or an absolute path.
pub(crate) fn probe_path(value: &str) -> Result<String, Status> {
    let value = value.trim();
    if value.is_empty() || (value.starts_with('/') && !value.contains(char::is_whitespace)) {
        Ok(value.to_owned())
    } else {
        Err(Status::invalid_argument(format!(
            "probe path {value:?} must start with / (e.g. /v1/models), or be empty to disable active checks"
        )))
    }
}

pub(crate) fn timestamp(field: &str, value: &str) -> Result<DateTime<Utc>, Status> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            Status::invalid_argument(format!(
                "{field} {value:?} is not an RFC 3339 time ({e}); expected e.g. 2027-01-31T00:00:00Z"
            ))
        })
}

pub(crate) fn models(values: Vec<String>) -> Result<Vec<String>, Status> {
    values
        .into_iter()
        .map(|m| {
            let m = m.trim().to_owned();
            if m.is_empty() {
                Err(Status::invalid_argument("model names must not be empty"))
            } else {
                Ok(m)
            }
        })
        .collect()
}

/// The models an upstream serves: trimmed, each named once; empty means every model, so `*`
/// is refused rather than stored as a name no request would ever carry.
pub(crate) fn upstream_models(values: Vec<String>) -> Result<Vec<String>, Status> {
    if values.len() > MAX_UPSTREAM_MODELS {
        return Err(Status::invalid_argument(format!(
            "an upstream serves at most {MAX_UPSTREAM_MODELS} models, got {}; \
             an empty list means every model",
            values.len()
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(values.len());
    let mut models = Vec::with_capacity(values.len());
    for value in values {
        let model = value.trim();
        if model.is_empty() {
            return Err(Status::invalid_argument(
                "upstream model names must not be empty",
            ));
        }
        if model == "*" {
            return Err(Status::invalid_argument(
                "\"*\" is not a model name; an empty list means the upstream serves every model",
            ));
        }
        if model.chars().count() > MAX_MODEL_LEN {
            return Err(Status::invalid_argument(format!(
                "upstream model name {model:?} is longer than {MAX_MODEL_LEN} characters"
            )));
        }
        if model
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',')
        {
            return Err(Status::invalid_argument(format!(
                "upstream model name {model:?} must not contain spaces, commas or control characters"
            )));
        }
        if !seen.insert(model.to_owned()) {
            return Err(Status::invalid_argument(format!(
                "upstream model {model:?} is listed twice"
            )));
        }
        models.push(model.to_owned());
    }
    Ok(models)
}

/// IP allow-list entries: an address or a CIDR block.
pub(crate) fn cidrs(values: Vec<String>) -> Result<Vec<String>, Status> {
    values
        .into_iter()
        .map(|v| {
            let v = v.trim().to_owned();
            let (addr, prefix) = match v.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (v.as_str(), None),
            };
            let ip: IpAddr = addr.parse().map_err(|_| {
                Status::invalid_argument(format!(
                    "{v:?} is not an IP address or CIDR block (e.g. 10.0.0.0/8)"
                ))
            })?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            if let Some(p) = prefix {
                match p.parse::<u8>() {
                    Ok(bits) if bits <= max => {}
                    _ => {
                        return Err(Status::invalid_argument(format!(
                            "{v:?} has an invalid prefix length (0..={max})"
                        )));
                    }
                }
            }
            Ok(v)
        })
        .collect()
}

pub(crate) fn positive_limit(field: &str, value: Option<u32>) -> Result<Option<i32>, Status> {
    match value {
        None => Ok(None),
        Some(0) => Err(Status::invalid_argument(format!(
            "{field} must be at least 1 (to remove the limit: gatewayctl key update ID \
             --no-{field}-limit, or clear_{field} over the API)"
        ))),
        Some(v) => i32::try_from(v)
            .map(Some)
            .map_err(|_| Status::invalid_argument(format!("{field} is too large"))),
    }
}

pub(crate) fn price_micros(field: &str, value: i64) -> Result<Micros, Status> {
    if value < 0 {
        return Err(Status::invalid_argument(format!(
            "{field} must not be negative"
        )));
    }
    Ok(Micros(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_with_v1_is_refused_with_a_hint() {
        let err = base_url("https://pool.example.com/openai/v1").unwrap_err();
        assert!(err.message().contains("appends /v1"), "{}", err.message());
        assert!(
            err.message()
                .contains("\"https://pool.example.com/openai\"")
        );
        assert!(base_url("https://pool.example.com/v1/").is_err());
        assert_eq!(
            base_url("https://pool.example.com/openai/").unwrap(),
            "https://pool.example.com/openai"
        );
        assert_eq!(
            base_url("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(base_url("ftp://x").is_err());
        assert!(base_url("pool.example.com").is_err());
        assert!(base_url("https://u:p@pool.example.com").is_err());
    }

    #[test]
    fn ranges() {
        assert!(weight(0).is_err());
        assert_eq!(weight(3).unwrap(), 3);
        assert!(priority(-1).is_err());
        assert!(timeout_ms(10).is_err());
        assert!(max_retries(11).is_err());
        assert!(cidrs(vec!["10.0.0.0/8".into(), "::1".into()]).is_ok());
        assert!(cidrs(vec!["10.0.0.0/33".into()]).is_err());
        assert!(cidrs(vec!["nope".into()]).is_err());
        assert!(timestamp("expires", "2027-01-01T00:00:00Z").is_ok());
        assert!(timestamp("expires", "tomorrow").is_err());
        assert!(api_key("sk abc").is_err());
    }

    #[test]
    fn upstream_models_are_trimmed_unique_and_never_a_wildcard() {
        assert_eq!(
            upstream_models(vec![" gpt-5 ".into(), "gpt-5-codex".into()]).unwrap(),
            ["gpt-5", "gpt-5-codex"]
        );
        assert!(upstream_models(Vec::new()).unwrap().is_empty());

        let duplicate = upstream_models(vec!["gpt-5".into(), " gpt-5".into()]).unwrap_err();
        assert_eq!(duplicate.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            duplicate.message(),
            "upstream model \"gpt-5\" is listed twice"
        );

        let wildcard = upstream_models(vec!["*".into()]).unwrap_err();
        assert!(
            wildcard.message().contains("an empty list means"),
            "{}",
            wildcard.message()
        );
        assert!(upstream_models(vec!["  ".into()]).is_err());
        assert!(upstream_models(vec!["a b".into()]).is_err());
        assert!(upstream_models(vec!["a,b".into()]).is_err());
        assert!(upstream_models(vec!["m".repeat(MAX_MODEL_LEN + 1)]).is_err());
        assert!(upstream_models(vec!["m".repeat(MAX_MODEL_LEN)]).is_ok());
        let many: Vec<String> = (0..=MAX_UPSTREAM_MODELS).map(|i| format!("m{i}")).collect();
        assert!(upstream_models(many).is_err());
    }
}
