//! Admin requests turned into what the store takes: every field checked ([`validate`]),
//! defaults applied, an upstream's key encrypted, and "leave as it is" told apart from "clear".

use chrono::{DateTime, Utc};
use gateway_proto::v1;
use tonic::Status;

use super::validate;
use crate::{
    crypto::{Cipher, key_hint},
    store::{KeyPatch, NewUpstream, UpstreamPatch, UserPatch},
};

/// The probe path an upstream gets when none is given.
pub(super) const DEFAULT_PROBE_PATH: &str = "/v1/models";
/// A user's multiplier when none is given: 1.0.
pub(super) const DEFAULT_MULTIPLIER_PPM: u64 = 1_000_000;

/// A new upstream; its key is encrypted with `cipher` and only a hint is kept in the clear.
pub(super) fn new_upstream(
    r: v1::CreateUpstreamRequest,
    cipher: &Cipher,
) -> Result<NewUpstream, Status> {
    let api_key = validate::api_key(&r.api_key)?;
    Ok(NewUpstream {
        name: validate::name("upstream", &r.name)?,
        base_url: validate::base_url(&r.base_url)?,
        api_key_enc: cipher.encrypt(&api_key),
        api_key_hint: key_hint(&api_key),
        priority: validate::priority(r.priority)?,
        weight: validate::weight(r.weight.unwrap_or(1))?,
        max_retries: validate::max_retries(r.max_retries.unwrap_or(3))?,
        timeout_ms: validate::timeout_ms(r.timeout_ms.unwrap_or(validate::DEFAULT_TIMEOUT_MS))?,
        enabled: !r.disabled,
        probe_path: validate::probe_path(r.probe_path.as_deref().unwrap_or(DEFAULT_PROBE_PATH))?,
        models: validate::upstream_models(r.models)?,
    })
}

/// The fields of an upstream the request changes.
pub(super) fn upstream_patch(
    r: v1::UpdateUpstreamRequest,
    cipher: &Cipher,
) -> Result<UpstreamPatch, Status> {
    Ok(UpstreamPatch {
        name: r
            .name
            .as_deref()
            .map(|n| validate::name("upstream", n))
            .transpose()?,
        base_url: r.base_url.as_deref().map(validate::base_url).transpose()?,
        api_key: r
            .api_key
            .as_deref()
            .map(validate::api_key)
            .transpose()?
            .map(|k| (cipher.encrypt(&k), key_hint(&k))),
        priority: r.priority.map(validate::priority).transpose()?,
        weight: r.weight.map(validate::weight).transpose()?,
        max_retries: r.max_retries.map(validate::max_retries).transpose()?,
        timeout_ms: r.timeout_ms.map(validate::timeout_ms).transpose()?,
        enabled: r.enabled,
        probe_path: r
            .probe_path
            .as_deref()
            .map(validate::probe_path)
            .transpose()?,
        models: r
            .models
            .map(|list| validate::upstream_models(list.values))
            .transpose()?,
    })
}

/// A user's multiplier in parts per million: above zero.
pub(super) fn multiplier(value: u64) -> Result<i64, Status> {
    if value == 0 {
        return Err(Status::invalid_argument(
            "multiplier_ppm must be above 0 (1000000 = 1.0); leave it unset for 1.0",
        ));
    }
    i64::try_from(value).map_err(|_| Status::invalid_argument("multiplier is too large"))
}

/// The fields of a user the request changes.
pub(super) fn user_patch(r: &v1::UpdateUserRequest) -> Result<UserPatch, Status> {
    Ok(UserPatch {
        name: r
            .name
            .as_deref()
            .map(|n| validate::name("user", n))
            .transpose()?,
        multiplier_ppm: r.multiplier_ppm.map(multiplier).transpose()?,
    })
}

/// A key's expiry: a time in the future.
pub(super) fn expires_at(value: &str) -> Result<DateTime<Utc>, Status> {
    let t = validate::timestamp("expires_at", value)?;
    if t <= Utc::now() {
        return Err(Status::invalid_argument("expires_at must be in the future"));
    }
    Ok(t)
}

/// The fields of a key the request changes. A new limit must be positive; removing one is
/// said with its clear flag (or an empty expiry), never a 0.
pub(super) fn key_patch(r: v1::UpdateKeyRequest) -> Result<KeyPatch, Status> {
    let limit = |field: &str, v: Option<u32>, clear: bool| match (v, clear) {
        (Some(_), true) => Err(Status::invalid_argument(format!(
            "{field}: give a new limit or clear it, not both"
        ))),
        (None, true) => Ok(Some(None)),
        (None, false) => Ok(None),
        (v, false) => validate::positive_limit(field, v).map(Some),
    };
    Ok(KeyPatch {
        name: r.name.map(|n| n.trim().to_owned()),
        expires_at: match r.expires_at.as_deref().map(str::trim) {
            None => None,
            Some("") => Some(None),
            Some(t) => Some(Some(expires_at(t)?)),
        },
        models: r.models.map(|l| validate::models(l.values)).transpose()?,
        ip_allow: r.ip_allow.map(|l| validate::cidrs(l.values)).transpose()?,
        rpm: limit("rpm", r.rpm, r.clear_rpm)?,
        concurrency: limit("concurrency", r.concurrency, r.clear_concurrency)?,
        caps: r
            .spend_limits
            .map(|l| validate::spend_limits(l.limits))
            .transpose()?,
    })
}

/// A page's position in a listing by id: the `next_cursor` the previous page gave.
pub(super) fn id_cursor(cursor: Option<&str>) -> Result<Option<i64>, Status> {
    cursor
        .map(|c| {
            c.parse::<i64>().map_err(|_| {
                Status::invalid_argument(format!(
                    "cursor must be the next_cursor of a previous page, got {c:?}"
                ))
            })
        })
        .transpose()
}

/// How many rows a listing returns: `default` when unset, else between 1 and `max`.
pub(super) fn page_limit(value: Option<u32>, default: u32, max: u32) -> Result<u32, Status> {
    match value {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(Status::invalid_argument(format!(
            "limit must be between 1 and {max}, got {n}"
        ))),
    }
}
