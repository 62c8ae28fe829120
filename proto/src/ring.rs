//! The weighted consistent-hash "ring" of one priority tier, shared by both planes so that the
//! control plane's checksum and every data plane's routing come from the same code.
//!
//! Algorithm `wrh-xxh3-v1`: weighted rendezvous (highest random weight) hashing. For an
//! affinity key `k` and member `m`, `h = fmix64(xxh3(k, seed) ^ salt(m))` is mapped to
//! `u ∈ (0, 1)` and the member's score is `weight(m) / -ln(u)`; members are preferred in
//! descending score (ties: lower id first). This gives, with no virtual nodes and no memory
//! beyond the member list:
//! - each member wins a share of keys proportional to its weight;
//! - removing a member moves exactly the keys it owned (≈ 1/n), adding one takes ≈ 1/n;
//! - skipping a member (unhealthy, cooling down, over its load cap) moves only its keys, and
//!   each of them to *its own* next choice, which is the next element of the preference order.
//!
//! What must stay true: the mapping for a given (seed, members, key) never changes within an
//! algorithm id. The golden vectors in the tests pin it; a change of mapping needs a new id.

use std::cmp::Ordering;

use xxhash_rust::xxh3::{Xxh3, xxh3_64_with_seed};

/// Identifier of the algorithm implemented here, carried in every ring message.
pub const ALGORITHM: &str = "wrh-xxh3-v1";

/// Number of probe keys whose picks are folded into the checksum.
const CHECKSUM_PROBES: u32 = 256;

/// One upstream in a tier, with its weight (> 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RingMember {
    /// The upstream's id.
    pub id: i64,
    /// Relative share of keys; must be positive.
    pub weight: u32,
}

#[derive(Debug, Clone)]
struct Slot {
    id: i64,
    weight: u32,
    salt: u64,
}

/// A ring ready for lookups.
#[derive(Debug, Clone)]
pub struct Ring {
    seed: u64,
    slots: Vec<Slot>,
}

/// Why a ring cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// A ring needs at least one member.
    #[error("ring has no members")]
    Empty,
    /// Weights are relative shares and must be positive.
    #[error("upstream {0} has weight 0")]
    ZeroWeight(i64),
    /// The same upstream twice.
    #[error("upstream {0} appears twice")]
    Duplicate(i64),
    /// The ring message names an algorithm this build does not implement.
    #[error("unknown ring algorithm {0:?} (this build implements {ALGORITHM:?})")]
    UnknownAlgorithm(String),
    /// The checksum derived here differs from the one the control plane computed.
    #[error("ring checksum mismatch: expected {expected:#018x}, derived {derived:#018x}")]
    ChecksumMismatch {
        /// What the snapshot says.
        expected: u64,
        /// What this build derives from the same members.
        derived: u64,
    },
}

impl Ring {
    /// Builds a ring; members may come in any order.
    pub fn new(
        seed: u64,
        members: impl IntoIterator<Item = RingMember>,
    ) -> Result<Self, RingError> {
        let mut slots: Vec<Slot> = members
            .into_iter()
            .map(|m| {
                if m.weight == 0 {
                    return Err(RingError::ZeroWeight(m.id));
                }
                Ok(Slot {
                    id: m.id,
                    weight: m.weight,
                    salt: xxh3_64_with_seed(&m.id.to_le_bytes(), seed),
                })
            })
            .collect::<Result<_, _>>()?;
        if slots.is_empty() {
            return Err(RingError::Empty);
        }
        slots.sort_by_key(|s| s.id);
        if let Some(w) = slots.windows(2).find(|w| w[0].id == w[1].id) {
            return Err(RingError::Duplicate(w[0].id));
        }
        Ok(Self { seed, slots })
    }

    /// Builds a ring from a snapshot message's parts and checks it against the checksum the
    /// control plane computed.
    pub fn verified(
        algorithm: &str,
        seed: u64,
        members: impl IntoIterator<Item = RingMember>,
        checksum: u64,
    ) -> Result<Self, RingError> {
        if algorithm != ALGORITHM {
            return Err(RingError::UnknownAlgorithm(algorithm.to_owned()));
        }
        let ring = Self::new(seed, members)?;
        let derived = ring.checksum();
        if derived != checksum {
            return Err(RingError::ChecksumMismatch {
                expected: checksum,
                derived,
            });
        }
        Ok(ring)
    }

    /// The seed the ring was built with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Members in id order.
    pub fn members(&self) -> impl ExactSizeIterator<Item = RingMember> + '_ {
        self.slots.iter().map(|s| RingMember {
            id: s.id,
            weight: s.weight,
        })
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the ring has no members (never true for a built ring).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Hashes an affinity key once; pass the result to [`Ring::pick_hashed`] and
    /// [`Ring::ranked_hashed`] to avoid hashing it again.
    pub fn hash_key(&self, affinity_key: &[u8]) -> u64 {
        xxh3_64_with_seed(affinity_key, self.seed)
    }

    /// The most preferred member for `affinity_key` among those `eligible` accepts.
    pub fn pick(&self, affinity_key: &[u8], eligible: impl FnMut(i64) -> bool) -> Option<i64> {
        self.pick_hashed(self.hash_key(affinity_key), eligible)
    }

    /// [`Ring::pick`] for an already hashed key. O(members), no allocation.
    pub fn pick_hashed(&self, key_hash: u64, mut eligible: impl FnMut(i64) -> bool) -> Option<i64> {
        let mut best: Option<(f64, i64)> = None;
        for slot in &self.slots {
            if !eligible(slot.id) {
                continue;
            }
            let score = score(slot, key_hash);
            let better = match best {
                None => true,
                Some((best_score, best_id)) => prefer((score, slot.id), (best_score, best_id)),
            };
            if better {
                best = Some((score, slot.id));
            }
        }
        best.map(|(_, id)| id)
    }

    /// Every member, most preferred first: the key's own failover order.
    pub fn ranked(&self, affinity_key: &[u8]) -> Vec<i64> {
        self.ranked_hashed(self.hash_key(affinity_key))
    }

    /// [`Ring::ranked`] for an already hashed key.
    pub fn ranked_hashed(&self, key_hash: u64) -> Vec<i64> {
        let mut scored: Vec<(f64, i64)> = self
            .slots
            .iter()
            .map(|s| (score(s, key_hash), s.id))
            .collect();
        scored.sort_by(|a, b| {
            if prefer(*a, *b) {
                Ordering::Less
            } else if prefer(*b, *a) {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        });
        scored.into_iter().map(|(_, id)| id).collect()
    }

    /// A checksum of the derived ring: algorithm, seed, members and the picks for a fixed set
    /// of probe keys. Two builds that would route any probe differently disagree on it.
    pub fn checksum(&self) -> u64 {
        let mut h = Xxh3::with_seed(0);
        h.update(ALGORITHM.as_bytes());
        h.update(&self.seed.to_le_bytes());
        for slot in &self.slots {
            h.update(&slot.id.to_le_bytes());
            h.update(&slot.weight.to_le_bytes());
        }
        for i in 0..CHECKSUM_PROBES {
            let probe = format!("probe-{i}");
            let ranked = self.ranked(probe.as_bytes());
            // The first two choices pin both the pick and the failover order.
            for id in ranked.iter().take(2) {
                h.update(&id.to_le_bytes());
            }
        }
        h.digest()
    }
}

/// Whether `a` is preferred over `b`: higher score, then lower id.
fn prefer(a: (f64, i64), b: (f64, i64)) -> bool {
    match a.0.partial_cmp(&b.0) {
        Some(Ordering::Greater) => true,
        Some(Ordering::Less) => false,
        _ => a.1 < b.1,
    }
}

fn score(slot: &Slot, key_hash: u64) -> f64 {
    let h = fmix64(key_hash ^ slot.salt);
    // 53 random bits, offset by half a step so u is never 0 or 1.
    let u = ((h >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
    f64::from(slot.weight) / -u.ln()
}

/// MurmurHash3's 64-bit finaliser: full avalanche of the combined key and member bits.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[cfg(test)]
mod tests;
