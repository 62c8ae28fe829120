//! The applied snapshot: one validated config version from the control plane, turned into
//! what the request path looks up — keys by digest with their limits and spending caps,
//! users and their balances, the models it names with their prices, and
//! the [`Router`] built from the upstreams and their rings. Immutable; replaced whole.
//! `proxy::auth` admits against it, `routing` picks from its router, `metering` prices
//! with its prices.

use std::{collections::HashMap, sync::Arc};

use gateway_proto::{
    digest::{BadDigest, KeyDigest},
    ids::{KeyId, UserId},
    money::Micros,
    v1,
};

use crate::{
    metering::Price,
    routing::{Affinity, RouteRejected, Router, passive::StateRegistry},
};

/// A gateway key's identity and limits.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub id: KeyId,
    pub user_id: UserId,
    /// Unix milliseconds; 0 = never.
    pub expires_at_ms: i64,
    /// Empty = every model.
    pub models: Vec<String>,
    /// Empty = every client address.
    pub ip_allow: Vec<ipnet::IpNet>,
    pub rpm: u32,
    pub concurrency: u32,
    /// Spending caps (most keys have none).
    pub caps: Vec<SpendCap>,
}

/// A key's spending cap, with what the ledger held as spent in its window when the snapshot
/// was built (this data plane adds its own spend since).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpendCap {
    pub limit: v1::SpendLimit,
    pub spent: Micros,
    /// Unix ms when the oldest spend in the window leaves it; 0 = not by itself.
    pub frees_at_ms: i64,
}

/// A user's billing state as of the snapshot.
#[derive(Debug, Clone, Copy)]
pub struct UserEntry {
    pub id: UserId,
    pub balance: Micros,
    pub multiplier_ppm: u64,
}

/// One config version, ready for the request path.
#[derive(Debug)]
pub struct AppliedSnapshot {
    pub version: u64,
    /// When the control plane built the snapshot (its clock, Unix ms): the balances are as of then.
    pub built_at_ms: i64,
    pub affinity: Affinity,
    keys: HashMap<KeyDigest, KeyEntry>,
    users: HashMap<UserId, UserEntry>,
    router: Router,
    /// Every model the snapshot names: priced, or declared by an upstream.
    models: HashMap<String, KnownModel>,
    default_price: Option<Price>,
    /// The metrics label of a model the snapshot does not name.
    other_label: Arc<str>,
}

/// A model the snapshot names.
#[derive(Debug)]
struct KnownModel {
    /// Its own price (else the `*` default applies).
    price: Option<Price>,
    /// Its name as a metrics label, shared by every request for it.
    label: Arc<str>,
}

/// What metering needs to know of a request's model.
#[derive(Debug, Clone)]
pub struct ModelPricing {
    /// Its price, or the `*` default; `None` without either.
    pub price: Option<Price>,
    /// Its metrics label: its name if the snapshot names it, else [`OTHER_MODEL_LABEL`], so
    /// clients cannot grow a metric's series with made-up model names.
    pub label: Arc<str>,
}

/// The metrics label of every model the snapshot does not name.
pub const OTHER_MODEL_LABEL: &str = "other";

/// Why a snapshot is rejected; the previous one stays in use.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotRejected {
    #[error(transparent)]
    Routing(#[from] RouteRejected),
    #[error("key {key}: {source}")]
    Digest {
        key: KeyId,
        #[source]
        source: BadDigest,
    },
    #[error("key {key} belongs to unknown user {user}")]
    UnknownUser { key: KeyId, user: UserId },
    #[error("key {key} has an invalid IP allow-list entry {entry:?}")]
    BadCidr { key: KeyId, entry: String },
    #[error("snapshot version {got} is not newer than the applied version {applied}")]
    Stale { got: u64, applied: u64 },
}

impl TryFrom<v1::Snapshot> for AppliedSnapshot {
    type Error = SnapshotRejected;

    fn try_from(s: v1::Snapshot) -> Result<Self, Self::Error> {
        Self::build(s, &StateRegistry::default())
    }
}

impl AppliedSnapshot {
    /// Validates and indexes `s`, attaching each upstream's long-lived state from `states`.
    pub fn build(s: v1::Snapshot, states: &StateRegistry) -> Result<Self, SnapshotRejected> {
        let router = Router::build(s.upstreams, s.rings, states)?;
        let users: HashMap<UserId, UserEntry> = s
            .users
            .into_iter()
            .map(|u| {
                let user = UserEntry {
                    id: UserId(u.id),
                    balance: Micros(u.balance_micros),
                    multiplier_ppm: u.multiplier_ppm,
                };
                (user.id, user)
            })
            .collect();

        let mut keys = HashMap::with_capacity(s.keys.len());
        for k in s.keys {
            let (id, user_id) = (KeyId(k.id), UserId(k.user_id));
            let digest = KeyDigest::from_slice(&k.digest)
                .map_err(|source| SnapshotRejected::Digest { key: id, source })?;
            if !users.contains_key(&user_id) {
                return Err(SnapshotRejected::UnknownUser {
                    key: id,
                    user: user_id,
                });
            }
            let ip_allow = k
                .ip_allow
                .iter()
                .map(|e| {
                    parse_net(e).ok_or_else(|| SnapshotRejected::BadCidr {
                        key: id,
                        entry: e.clone(),
                    })
                })
                .collect::<Result<_, _>>()?;
            let entry = KeyEntry {
                id,
                user_id,
                expires_at_ms: k.expires_at_ms,
                models: k.models,
                ip_allow,
                rpm: k.rpm,
                concurrency: k.concurrency,
                // A window this build does not know is still a cap: its amounts compare the
                // same.
                caps: k
                    .spend_limits
                    .iter()
                    .map(|c| SpendCap {
                        limit: v1::SpendLimit {
                            window: c.window,
                            limit_micros: c.limit_micros,
                        },
                        spent: Micros(c.spent_micros),
                        frees_at_ms: c.frees_at_ms,
                    })
                    .collect(),
            };
            keys.insert(digest, entry);
        }

        let mut models: HashMap<String, KnownModel> = router
            .declared_models()
            .map(|m| {
                let known = KnownModel {
                    price: None,
                    label: m.into(),
                };
                (m.to_owned(), known)
            })
            .collect();
        let mut default_price = None;
        for p in s.prices {
            let price = Price {
                input: Micros(p.input_micros),
                cached_input: Micros(p.cached_input_micros),
                output: Micros(p.output_micros),
            };
            if p.model == "*" {
                default_price = Some(price);
            } else {
                models
                    .entry(p.model)
                    .or_insert_with_key(|m| KnownModel {
                        price: None,
                        label: m.as_str().into(),
                    })
                    .price = Some(price);
            }
        }

        Ok(Self {
            version: s.version,
            built_at_ms: s.built_at_ms,
            // A mode this build does not know falls back to the default, per user.
            affinity: Affinity::try_from(s.affinity).unwrap_or(Affinity::User),
            keys,
            users,
            router,
            models,
            default_price,
            other_label: OTHER_MODEL_LABEL.into(),
        })
    }

    /// The key with this digest.
    pub fn key(&self, digest: &KeyDigest) -> Option<&KeyEntry> {
        self.keys.get(digest)
    }

    /// A user's billing state.
    pub fn user(&self, id: UserId) -> Option<&UserEntry> {
        self.users.get(&id)
    }

    /// The price of `model` (else the `*` default) and its metrics label, in one lookup.
    pub fn pricing(&self, model: &str) -> ModelPricing {
        match self.models.get(model) {
            Some(m) => ModelPricing {
                price: m.price.or(self.default_price),
                label: m.label.clone(),
            },
            None => ModelPricing {
                price: self.default_price,
                label: self.other_label.clone(),
            },
        }
    }

    /// Models a key may use that some upstream serves: its allow-list (or, without one,
    /// every model named anywhere: priced or declared by an upstream), kept to the models an
    /// upstream serves. An upstream that serves every model serves all of them.
    pub fn models_for(&self, key: &KeyEntry) -> Vec<String> {
        let router = &self.router;
        let mut models: Vec<String> = if key.models.is_empty() {
            if router.serves_every_model() {
                // The models it names: every priced one and every declared one.
                self.models.keys().cloned().collect()
            } else {
                router.declared_models().map(str::to_owned).collect()
            }
        } else {
            key.models
                .iter()
                .filter(|m| router.serves(m))
                .cloned()
                .collect()
        };
        models.sort();
        models.dedup();
        models
    }

    /// The upstreams and their rings.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Number of keys.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}

/// Parses an allow-list entry: an address or a CIDR block.
pub fn parse_net(entry: &str) -> Option<ipnet::IpNet> {
    entry.parse::<ipnet::IpNet>().ok().or_else(|| {
        entry
            .parse::<std::net::IpAddr>()
            .ok()
            .map(ipnet::IpNet::from)
    })
}

#[cfg(test)]
mod tests;
