//! Routing: which upstream a request goes to. The snapshot's upstreams and per-tier rings
//! become a [`Router`]; a pick takes the best priority tier with an available upstream, then
//! that tier's ring for the request's affinity key, with bounded loads. An unavailable
//! upstream is skipped, never removed, so no other user moves.

pub mod passive;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use gateway_proto::{
    ids::{UpstreamId, UserId},
    ring::{Ring, RingError, RingMember},
    v1,
};
use http::{HeaderMap, HeaderValue};

use self::passive::{StateRegistry, UpstreamState};
use crate::upstream::Target;

/// An upstream as the proxy uses it.
#[derive(Debug)]
pub struct Upstream {
    pub id: UpstreamId,
    /// Shared with the metric labels that name it (a count per attempt clones no text).
    pub name: Arc<str>,
    /// Without a trailing slash; never contains `/v1`.
    pub base_url: String,
    /// Where its requests go, from `base_url`.
    pub target: Target,
    /// `Bearer <upstream key>`, marked sensitive so it is never logged by hyper.
    pub authorization: HeaderValue,
    pub priority: i32,
    pub weight: u32,
    pub max_retries: u32,
    /// Connect + response head, and any silence between chunks.
    pub timeout: Duration,
    /// As the control plane's active checks last saw it.
    pub healthy: bool,
    /// The models it serves; empty = every model.
    pub models: Box<[Box<str>]>,
    /// This data plane's own view: in-flight streams, circuit, cool-down.
    pub state: Arc<UpstreamState>,
}

impl Upstream {
    /// Whether a request may go to this upstream now.
    pub fn available(&self, now: Instant) -> bool {
        self.healthy && self.state.available(now)
    }

    /// Whether it serves `model`.
    pub fn serves(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| &**m == model)
    }
}

/// An upstream already above this multiple of its fair share of in-flight streams spills the
/// user to their own next choice (consistent hashing with bounded loads).
const LOAD_FACTOR: f64 = 1.25;

/// What keeps a client on the same upstream: the wire's own enum.
pub use gateway_proto::v1::AffinityMode as Affinity;

#[derive(Debug)]
struct Tier {
    ring: Ring,
    members: Vec<Arc<Upstream>>,
}

/// The upstreams of one snapshot and their rings. Immutable; replaced with the snapshot.
#[derive(Debug)]
pub struct Router {
    upstreams: HashMap<UpstreamId, Arc<Upstream>>,
    /// Best (lowest priority number) first.
    tiers: Vec<Tier>,
    /// Some upstream serves every model.
    every_model: bool,
    /// The models upstreams declare, sorted, each once: whether a model is served at all is
    /// answered per request without walking the upstreams.
    declared: Vec<Box<str>>,
}

/// Why the snapshot's upstreams and rings cannot route.
#[derive(Debug, thiserror::Error)]
pub enum RouteRejected {
    #[error("ring for priority {priority}: {source}")]
    Ring {
        priority: i32,
        #[source]
        source: RingError,
    },
    #[error(
        "ring for priority {priority} names upstream {upstream}, which the snapshot lacks or puts in another tier"
    )]
    UnknownMember { priority: i32, upstream: UpstreamId },
    #[error("upstream {0} has an API key that cannot be sent as a header")]
    BadApiKey(UpstreamId),
    #[error("upstream {0} has a base URL with no scheme or host")]
    BadBaseUrl(UpstreamId),
    #[error("upstream {0} is in no ring")]
    Unrouted(UpstreamId),
}

impl Router {
    /// Builds the router, checking every ring against its checksum and every upstream is in
    /// exactly its tier's ring, and attaching each upstream's long-lived state from `states`.
    pub fn build(
        snapshot_upstreams: Vec<v1::SnapshotUpstream>,
        mut rings: Vec<v1::HashRing>,
        states: &StateRegistry,
    ) -> Result<Self, RouteRejected> {
        let mut upstreams = HashMap::with_capacity(snapshot_upstreams.len());
        for u in snapshot_upstreams {
            let id = UpstreamId(u.id);
            let mut authorization = HeaderValue::try_from(format!("Bearer {}", u.api_key))
                .map_err(|_| RouteRejected::BadApiKey(id))?;
            authorization.set_sensitive(true);
            let base_url = u.base_url.trim_end_matches('/').to_owned();
            let target = Target::parse(&base_url).map_err(|_| RouteRejected::BadBaseUrl(id))?;
            upstreams.insert(
                id,
                Arc::new(Upstream {
                    id,
                    name: u.name.into(),
                    base_url,
                    target,
                    authorization,
                    priority: u.priority,
                    weight: u.weight.max(1),
                    max_retries: u.max_retries,
                    timeout: Duration::from_millis(u64::from(u.timeout_ms.max(1))),
                    healthy: u.healthy,
                    models: u.models.into_iter().map(String::into_boxed_str).collect(),
                    state: states.get(id),
                }),
            );
        }

        rings.sort_by_key(|r| r.priority);
        let mut tiers = Vec::with_capacity(rings.len());
        let mut routed = 0;
        for r in rings {
            for m in &r.members {
                match upstreams.get(&UpstreamId(m.upstream_id)) {
                    Some(u) if u.priority == r.priority => routed += 1,
                    _ => {
                        return Err(RouteRejected::UnknownMember {
                            priority: r.priority,
                            upstream: UpstreamId(m.upstream_id),
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
            .map_err(|source| RouteRejected::Ring {
                priority: r.priority,
                source,
            })?;
            let members = r
                .members
                .iter()
                .filter_map(|m| upstreams.get(&UpstreamId(m.upstream_id)).cloned())
                .collect();
            tiers.push(Tier { ring, members });
        }
        if routed != upstreams.len()
            && let Some(id) = upstreams.keys().find(|id| {
                !tiers
                    .iter()
                    .any(|t| t.ring.members().any(|m| m.id == id.get()))
            })
        {
            return Err(RouteRejected::Unrouted(*id));
        }
        let every_model = upstreams.values().any(|u| u.models.is_empty());
        let mut declared: Vec<Box<str>> = upstreams
            .values()
            .flat_map(|u| u.models.iter().cloned())
            .collect();
        declared.sort_unstable();
        declared.dedup();
        Ok(Self {
            upstreams,
            tiers,
            every_model,
            declared,
        })
    }
}

impl Router {
    /// An upstream by id.
    pub fn upstream(&self, id: UpstreamId) -> Option<&Arc<Upstream>> {
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
                    self.upstreams
                        .get(&UpstreamId(id))
                        .is_some_and(|u| eligible(u))
                })
                .and_then(|id| self.upstreams.get(&UpstreamId(id)))
        })
    }

    /// The upstream for the next attempt of a request: the best tier with an available
    /// upstream not yet `tried`, and in it the ring's first choice — unless that one already
    /// carries more than its bounded share of in-flight streams, in which case the key's own
    /// next choice under the cap (or, if all are over it, the first choice after all).
    ///
    /// Only upstreams that serve `model` are candidates; the others are skipped like an
    /// unavailable one, so within each model's set a user keeps their place and adding a model
    /// to an upstream moves only the users of that model whose first choice it now is.
    ///
    /// If active health checks have marked every upstream that serves the model unhealthy,
    /// they are ignored (panic mode): a probe that fails everywhere — a pool without
    /// `/v1/models`, say — must not take the whole gateway down. Circuits and cool-downs
    /// still apply.
    pub fn choose(
        &self,
        affinity_key: &[u8],
        model: &str,
        tried: &[UpstreamId],
        now: Instant,
    ) -> Option<Arc<Upstream>> {
        self.choose_with(affinity_key, tried, |u| u.serves(model) && u.available(now))
            .or_else(|| {
                if self
                    .upstreams
                    .values()
                    .any(|u| u.healthy && u.serves(model))
                {
                    return None;
                }
                self.choose_with(affinity_key, tried, |u| {
                    u.serves(model) && u.state.available(now)
                })
            })
    }

    /// Whether any upstream serves `model` (available or not).
    pub fn serves(&self, model: &str) -> bool {
        self.every_model || self.declared.binary_search_by(|m| (**m).cmp(model)).is_ok()
    }

    /// Whether some upstream serves every model.
    pub fn serves_every_model(&self) -> bool {
        self.every_model
    }

    /// The models upstreams declare, each once, sorted.
    pub fn declared_models(&self) -> impl Iterator<Item = &str> + '_ {
        self.declared.iter().map(|m| &**m)
    }

    fn choose_with(
        &self,
        affinity_key: &[u8],
        tried: &[UpstreamId],
        available: impl Fn(&Upstream) -> bool,
    ) -> Option<Arc<Upstream>> {
        let mut over_cap: Vec<UpstreamId> = Vec::new();
        for tier in &self.tiers {
            let hash = tier.ring.hash_key(affinity_key);
            let eligible = |id: UpstreamId| {
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
                .pick_hashed(hash, |id| {
                    let id = UpstreamId(id);
                    eligible(id) && !over_cap.contains(&id)
                })
                .map(UpstreamId)
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

    /// The shortest remaining cool-down among upstreams serving `model` that are cooling
    /// down, if every routable one is (a hint for the client's `Retry-After`).
    pub fn all_cooling(&self, model: &str, now: Instant) -> Option<Duration> {
        let mut shortest: Option<Duration> = None;
        for u in self
            .upstreams
            .values()
            .filter(|u| u.healthy && u.serves(model))
        {
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
    pub fn upstream_ids(&self) -> impl Iterator<Item = UpstreamId> + '_ {
        self.upstreams.keys().copied()
    }
}

/// The key that keeps a client on one upstream: the user, or the user and session (the
/// first of the `session-id`/`session_id`/`conversation_id` headers, else the body's
/// `prompt_cache_key`).
pub fn affinity_key(
    mode: Affinity,
    user_id: UserId,
    headers: &HeaderMap,
    prompt_cache_key: Option<&str>,
) -> String {
    let session = match mode {
        Affinity::User => None,
        Affinity::UserSession => ["session-id", "session_id", "conversation_id"]
            .iter()
            .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
            .or(prompt_cache_key)
            .filter(|s| !s.is_empty()),
    };
    match session {
        Some(s) => format!("user:{user_id}|session:{s}"),
        None => format!("user:{user_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_modes() {
        let mut h = HeaderMap::new();
        assert_eq!(
            affinity_key(Affinity::User, UserId(7), &h, Some("pck")),
            "user:7"
        );
        assert_eq!(
            affinity_key(Affinity::UserSession, UserId(7), &h, Some("pck")),
            "user:7|session:pck"
        );
        h.insert("session_id", HeaderValue::from_static("s1"));
        assert_eq!(
            affinity_key(Affinity::UserSession, UserId(7), &h, Some("pck")),
            "user:7|session:s1"
        );
        assert_eq!(
            affinity_key(Affinity::UserSession, UserId(7), &HeaderMap::new(), None),
            "user:7"
        );
    }
}
