//! The routing table: a validated snapshot turned into lookup tables for the request path,
//! and the pick of an upstream for an affinity key (priority tiers, then the tier's ring,
//! with bounded loads).

pub mod passive;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use self::passive::{StateRegistry, UpstreamState};

use gateway_proto::{
    digest::{BadDigest, KeyDigest},
    ring::{Ring, RingError, RingMember},
    v1,
};
use http::HeaderValue;

/// An upstream as the proxy uses it.
#[derive(Debug)]
pub struct Upstream {
    pub id: i64,
    pub name: String,
    /// Without a trailing slash; never contains `/v1`.
    pub base_url: String,
    /// `Bearer <upstream key>`, marked sensitive so it is never logged by hyper.
    pub authorization: HeaderValue,
    pub priority: i32,
    pub weight: u32,
    pub max_retries: u32,
    /// Connect + response head, and any silence between chunks.
    pub timeout: Duration,
    /// As the control plane's active checks last saw it.
    pub healthy: bool,
    /// This data plane's own view: in-flight streams, circuit, cool-down.
    pub state: Arc<UpstreamState>,
}

impl Upstream {
    /// Whether a request may go to this upstream now.
    pub fn available(&self, now: Instant) -> bool {
        self.healthy && self.state.available(now)
    }
}

/// An upstream already above this multiple of its fair share of in-flight streams spills the
/// user to their own next choice (consistent hashing with bounded loads).
const LOAD_FACTOR: f64 = 1.25;

/// A gateway key's identity and limits.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub id: i64,
    pub user_id: i64,
    /// Unix milliseconds; 0 = never.
    pub expires_at_ms: i64,
    /// Empty = every model.
    pub models: Vec<String>,
    /// Empty = every client address.
    pub ip_allow: Vec<ipnet::IpNet>,
    pub rpm: u32,
    pub concurrency: u32,
}

/// A user's billing state as of the snapshot.
#[derive(Debug, Clone, Copy)]
pub struct UserEntry {
    pub id: i64,
    pub balance_micros: i64,
    pub multiplier_ppm: u64,
}

/// Prices per 1M tokens in micro-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Price {
    pub input_micros: i64,
    pub cached_input_micros: i64,
    pub output_micros: i64,
}

/// What keeps a client on the same upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affinity {
    User,
    UserSession,
}

#[derive(Debug)]
struct Tier {
    ring: Ring,
    members: Vec<Arc<Upstream>>,
}

/// Lookup tables for one snapshot version. Immutable; replaced whole.
#[derive(Debug)]
pub struct RoutingTable {
    pub version: u64,
    /// When the control plane built the snapshot (its clock, Unix ms): the balances are as of then.
    pub built_at_ms: i64,
    pub affinity: Affinity,
    keys: HashMap<KeyDigest, KeyEntry>,
    users: HashMap<i64, UserEntry>,
    upstreams: HashMap<i64, Arc<Upstream>>,
    /// Best (lowest priority number) first.
    tiers: Vec<Tier>,
    prices: HashMap<String, Price>,
    default_price: Option<Price>,
}

/// Why a snapshot is rejected; the previous table stays in use.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotRejected {
    #[error("ring for priority {priority}: {source}")]
    Ring {
        priority: i32,
        #[source]
        source: RingError,
    },
    #[error("key {key}: {source}")]
    Digest {
        key: i64,
        #[source]
        source: BadDigest,
    },
    #[error("key {key} belongs to unknown user {user}")]
    UnknownUser { key: i64, user: i64 },
    #[error(
        "ring for priority {priority} names upstream {upstream}, which the snapshot lacks or puts in another tier"
    )]
    UnknownMember { priority: i32, upstream: i64 },
    #[error("upstream {0} has an API key that cannot be sent as a header")]
    BadApiKey(i64),
    #[error("upstream {0} is in no ring")]
    Unrouted(i64),
    #[error("key {key} has an invalid IP allow-list entry {entry:?}")]
    BadCidr { key: i64, entry: String },
    #[error("snapshot version {got} is not newer than the applied version {applied}")]
    Stale { got: u64, applied: u64 },
}

impl TryFrom<v1::Snapshot> for RoutingTable {
    type Error = SnapshotRejected;

    fn try_from(s: v1::Snapshot) -> Result<Self, Self::Error> {
        Self::build(s, &StateRegistry::default())
    }
}

impl RoutingTable {
    /// Builds the table, attaching each upstream's long-lived state from `states`.
    pub fn build(s: v1::Snapshot, states: &StateRegistry) -> Result<Self, SnapshotRejected> {
        let mut upstreams = HashMap::with_capacity(s.upstreams.len());
        for u in s.upstreams {
            let mut authorization = HeaderValue::try_from(format!("Bearer {}", u.api_key))
                .map_err(|_| SnapshotRejected::BadApiKey(u.id))?;
            authorization.set_sensitive(true);
            upstreams.insert(
                u.id,
                Arc::new(Upstream {
                    id: u.id,
                    name: u.name,
                    base_url: u.base_url.trim_end_matches('/').to_owned(),
                    authorization,
                    priority: u.priority,
                    weight: u.weight.max(1),
                    max_retries: u.max_retries,
                    timeout: Duration::from_millis(u64::from(u.timeout_ms.max(1))),
                    healthy: u.healthy,
                    state: states.get(u.id),
                }),
            );
        }

        let mut rings = s.rings;
        rings.sort_by_key(|r| r.priority);
        let mut tiers = Vec::with_capacity(rings.len());
        let mut routed = 0;
        for r in rings {
            for m in &r.members {
                match upstreams.get(&m.upstream_id) {
                    Some(u) if u.priority == r.priority => routed += 1,
                    _ => {
                        return Err(SnapshotRejected::UnknownMember {
                            priority: r.priority,
                            upstream: m.upstream_id,
                        });
                    }
                }
            }
            let ring = Ring::verified(
                &r.algorithm,
                r.seed,
                r.members.iter().map(|m| RingMember {
                    id: m.upstream_id,
                    weight: m.weight,
                }),
                r.checksum,
            )
            .map_err(|source| SnapshotRejected::Ring {
                priority: r.priority,
                source,
            })?;
            let members = r
                .members
                .iter()
                .filter_map(|m| upstreams.get(&m.upstream_id).cloned())
                .collect();
            tiers.push(Tier { ring, members });
        }
        if routed != upstreams.len()
            && let Some(id) = upstreams
                .keys()
                .find(|id| !tiers.iter().any(|t| t.ring.members().any(|m| m.id == **id)))
        {
            return Err(SnapshotRejected::Unrouted(*id));
        }

        let users: HashMap<i64, UserEntry> = s
            .users
            .into_iter()
            .map(|u| {
                (
                    u.id,
                    UserEntry {
                        id: u.id,
                        balance_micros: u.balance_micros,
                        multiplier_ppm: u.multiplier_ppm,
                    },
                )
            })
            .collect();

        let mut keys = HashMap::with_capacity(s.keys.len());
        for k in s.keys {
            let digest = KeyDigest::from_slice(&k.digest)
                .map_err(|source| SnapshotRejected::Digest { key: k.id, source })?;
            if !users.contains_key(&k.user_id) {
                return Err(SnapshotRejected::UnknownUser {
                    key: k.id,
                    user: k.user_id,
                });
            }
            keys.insert(
                digest,
                KeyEntry {
                    id: k.id,
                    user_id: k.user_id,
                    expires_at_ms: k.expires_at_ms,
                    models: k.models,
                    ip_allow: k
                        .ip_allow
                        .iter()
                        .map(|e| {
                            crate::proxy::limits::parse_net(e).ok_or_else(|| {
                                SnapshotRejected::BadCidr {
                                    key: k.id,
                                    entry: e.clone(),
                                }
                            })
                        })
                        .collect::<Result<_, _>>()?,
                    rpm: k.rpm,
                    concurrency: k.concurrency,
                },
            );
        }

        let mut prices = HashMap::with_capacity(s.prices.len());
        let mut default_price = None;
        for p in s.prices {
            let price = Price {
                input_micros: p.input_micros,
                cached_input_micros: p.cached_input_micros,
                output_micros: p.output_micros,
            };
            if p.model == "*" {
                default_price = Some(price);
            } else {
                prices.insert(p.model, price);
            }
        }

        Ok(Self {
            version: s.version,
            built_at_ms: s.built_at_ms,
            affinity: match v1::AffinityMode::try_from(s.affinity) {
                Ok(v1::AffinityMode::UserSession) => Affinity::UserSession,
                _ => Affinity::User,
            },
            keys,
            users,
            upstreams,
            tiers,
            prices,
            default_price,
        })
    }
}

impl RoutingTable {
    /// The key with this digest.
    pub fn key(&self, digest: &KeyDigest) -> Option<&KeyEntry> {
        self.keys.get(digest)
    }

    /// A user's billing state.
    pub fn user(&self, id: i64) -> Option<&UserEntry> {
        self.users.get(&id)
    }

    /// The price of `model`, else the `*` default.
    pub fn price(&self, model: &str) -> Option<Price> {
        self.prices.get(model).copied().or(self.default_price)
    }

    /// Models a key may use: its allow-list, or every priced model.
    pub fn models_for(&self, key: &KeyEntry) -> Vec<String> {
        let mut models: Vec<String> = if key.models.is_empty() {
            self.prices.keys().cloned().collect()
        } else {
            key.models.clone()
        };
        models.sort();
        models
    }

    /// An upstream by id.
    pub fn upstream(&self, id: i64) -> Option<&Arc<Upstream>> {
        self.upstreams.get(&id)
    }

    /// The most preferred upstream for `affinity_key` that `eligible` accepts: the best tier
    /// with any eligible member, and within it the ring's choice. Ineligible upstreams are
    /// skipped, never removed, so no other key moves.
    pub fn pick(
        &self,
        affinity_key: &[u8],
        mut eligible: impl FnMut(&Upstream) -> bool,
    ) -> Option<&Arc<Upstream>> {
        self.tiers.iter().find_map(|tier| {
            tier.ring
                .pick(affinity_key, |id| {
                    self.upstreams.get(&id).is_some_and(|u| eligible(u))
                })
                .and_then(|id| self.upstreams.get(&id))
        })
    }

    /// The upstream for the next attempt of a request: the best tier with an available
    /// upstream not yet `tried`, and in it the ring's first choice — unless that one already
    /// carries more than its bounded share of in-flight streams, in which case the key's own
    /// next choice under the cap (or, if all are over it, the first choice after all).
    ///
    /// If active health checks have marked every upstream unhealthy, they are ignored (panic
    /// mode): a probe that fails everywhere — a pool without `/v1/models`, say — must not take
    /// the whole gateway down. Circuits and cool-downs still apply.
    pub fn choose(
        &self,
        affinity_key: &[u8],
        tried: &[i64],
        now: Instant,
    ) -> Option<Arc<Upstream>> {
        self.choose_with(affinity_key, tried, |u| u.available(now))
            .or_else(|| {
                if self.upstreams.values().any(|u| u.healthy) {
                    return None;
                }
                self.choose_with(affinity_key, tried, |u| u.state.available(now))
            })
    }

    fn choose_with(
        &self,
        affinity_key: &[u8],
        tried: &[i64],
        available: impl Fn(&Upstream) -> bool,
    ) -> Option<Arc<Upstream>> {
        let mut over_cap: Vec<i64> = Vec::new();
        for tier in &self.tiers {
            let hash = tier.ring.hash_key(affinity_key);
            let eligible = |id: i64| {
                !tried.contains(&id) && self.upstreams.get(&id).is_some_and(|u| available(u))
            };
            let (load, weights) = tier
                .members
                .iter()
                .filter(|u| eligible(u.id))
                .fold((0u64, 0u64), |(l, w), u| {
                    (l + u64::from(u.state.in_flight()), w + u64::from(u.weight))
                });
            let mut fallback = None;
            over_cap.clear();
            while let Some(id) = tier
                .ring
                .pick_hashed(hash, |id| eligible(id) && !over_cap.contains(&id))
            {
                let upstream = self.upstreams.get(&id)?;
                let fair = (load + 1) as f64 * f64::from(upstream.weight) / weights.max(1) as f64;
                let cap = (LOAD_FACTOR * fair).ceil() as u64;
                if u64::from(upstream.state.in_flight()) < cap {
                    return Some(upstream.clone());
                }
                fallback.get_or_insert_with(|| upstream.clone());
                over_cap.push(id);
            }
            if fallback.is_some() {
                return fallback;
            }
        }
        None
    }

    /// The shortest remaining cool-down among upstreams that are cooling down, if every
    /// routable upstream is (a hint for the client's `Retry-After`).
    pub fn all_cooling(&self, now: Instant) -> Option<Duration> {
        let mut shortest: Option<Duration> = None;
        for u in self.upstreams.values().filter(|u| u.healthy) {
            match u.state.cooldown_left(now) {
                Some(left) => shortest = Some(shortest.map_or(left, |s| s.min(left))),
                None => return None,
            }
        }
        shortest
    }

    /// Every upstream in the table.
    pub fn upstreams(&self) -> impl Iterator<Item = &Arc<Upstream>> + '_ {
        self.upstreams.values()
    }

    /// Ids of every upstream in the table.
    pub fn upstream_ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.upstreams.keys().copied()
    }

    /// Number of keys.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests;
