//! Store state → an immutable, validated `Snapshot` message.

use std::collections::{BTreeMap, HashSet};

use gateway_proto::{
    ids::{UpstreamId, UserId},
    ring::{self, Ring, RingError, RingMember},
    v1::{self, UpstreamHealth},
};

use crate::{config::Affinity, crypto::Cipher, store::SnapshotState};

/// What the snapshot carries besides the store's rows.
#[derive(Debug, Clone, Copy)]
pub struct BuildSettings {
    /// Seed of every tier's ring.
    pub ring_seed: u64,
    /// Affinity mode the data planes apply.
    pub affinity: Affinity,
}

/// Why a snapshot could not be built; the previous one stays published.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// An upstream key does not decrypt: wrong `ENCRYPTION_KEY`.
    #[error("upstream {0}: {1}")]
    Decrypt(UpstreamId, crate::crypto::DecryptError),
    /// A tier's ring is invalid.
    #[error("ring for priority {0}: {1}")]
    Ring(i32, RingError),
    /// Rows refer to each other inconsistently.
    #[error("inconsistent state: {0}")]
    Inconsistent(String),
}

/// Builds the snapshot for `state`.
pub fn build(
    state: SnapshotState,
    cipher: &Cipher,
    settings: BuildSettings,
) -> Result<v1::Snapshot, SnapshotError> {
    let version = u64::try_from(state.version)
        .map_err(|_| SnapshotError::Inconsistent(format!("negative version {}", state.version)))?;

    let built_at_ms = state.read_at.timestamp_millis();
    let mut upstreams = Vec::new();
    let mut tiers: BTreeMap<i32, Vec<RingMember>> = BTreeMap::new();
    for row in state.upstreams.into_iter().filter(|r| r.upstream.enabled) {
        let u = row.upstream;
        let weight = u32::try_from(u.weight)
            .ok()
            .filter(|w| *w > 0)
            .ok_or_else(|| {
                SnapshotError::Inconsistent(format!("upstream {} weight {}", u.id, u.weight))
            })?;
        let api_key = cipher
            .decrypt(&row.api_key_enc)
            .map_err(|e| SnapshotError::Decrypt(u.id, e))?;
        tiers.entry(u.priority).or_default().push(RingMember {
            id: u.id.get(),
            weight,
        });
        upstreams.push(v1::SnapshotUpstream {
            id: u.id.get(),
            name: u.name,
            base_url: u.base_url,
            api_key,
            priority: u.priority,
            weight,
            max_retries: u32::try_from(u.max_retries).unwrap_or(0),
            timeout_ms: u32::try_from(u.timeout_ms).unwrap_or(1),
            healthy: u.health != UpstreamHealth::Unhealthy,
            models: u.models,
        });
    }

    let mut rings = Vec::with_capacity(tiers.len());
    for (priority, members) in tiers {
        let ring = Ring::new(settings.ring_seed, members.iter().copied())
            .map_err(|e| SnapshotError::Ring(priority, e))?;
        rings.push(v1::HashRing {
            priority,
            algorithm: ring::ALGORITHM.to_owned(),
            seed: settings.ring_seed,
            members: ring
                .members()
                .map(|m| v1::RingMember {
                    upstream_id: m.id,
                    weight: m.weight,
                })
                .collect(),
            checksum: ring.checksum(),
        });
    }

    let user_ids: HashSet<UserId> = state.users.iter().map(|u| u.id).collect();
    let mut keys = Vec::with_capacity(state.keys.len());
    for k in state.keys {
        if !user_ids.contains(&k.user_id) {
            return Err(SnapshotError::Inconsistent(format!(
                "key {} belongs to missing user {}",
                k.id, k.user_id
            )));
        }
        keys.push(v1::SnapshotKey {
            digest: k.digest,
            id: k.id.get(),
            user_id: k.user_id.get(),
            expires_at_ms: k.expires_at.map_or(0, |t| t.timestamp_millis()),
            models: k.models,
            ip_allow: k.ip_allow,
            rpm: k.rpm.and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
            concurrency: k
                .concurrency
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0),
            spend_limits: k.caps.states(state.key_spend.get(&k.id)),
        });
    }

    Ok(v1::Snapshot {
        version,
        upstreams,
        keys,
        users: state
            .users
            .into_iter()
            .map(|u| v1::SnapshotUser {
                id: u.id.get(),
                balance_micros: u.balance_micros.get(),
                multiplier_ppm: u64::try_from(u.multiplier_ppm).unwrap_or(0),
            })
            .collect(),
        prices: state
            .prices
            .into_iter()
            .map(|p| v1::Price {
                model: p.model,
                input_micros: p.input_micros.get(),
                cached_input_micros: p.cached_input_micros.get(),
                output_micros: p.output_micros.get(),
            })
            .collect(),
        rings,
        affinity: settings.affinity as i32,
        // Balances and spend are as of the read; data planes count their own spend from then.
        built_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use gateway_proto::money::Micros;

    use super::*;
    use crate::{
        crypto::EncryptionKey,
        store::{UpstreamRow, UpstreamSecretRow},
    };

    fn upstream(cipher: &Cipher, id: i64, models: &[&str]) -> UpstreamSecretRow {
        let now = Utc::now();
        UpstreamSecretRow {
            upstream: UpstreamRow {
                id: UpstreamId(id),
                name: format!("u{id}"),
                base_url: format!("http://pool-{id}.example"),
                api_key_hint: "sk-…".into(),
                priority: 0,
                weight: 1,
                max_retries: 1,
                timeout_ms: 5_000,
                enabled: true,
                health: UpstreamHealth::Unknown,
                created_at: now,
                updated_at: now,
                probe_path: String::new(),
                health_error: String::new(),
                health_checked_at: None,
                models: models.iter().map(|m| (*m).to_owned()).collect(),
            },
            api_key_enc: cipher.encrypt("sk-upstream"),
        }
    }

    #[test]
    fn snapshot_upstreams_carry_the_models_they_serve() {
        let cipher = Cipher::new(&EncryptionKey::generate());
        let state = SnapshotState {
            version: 3,
            upstreams: vec![
                upstream(&cipher, 1, &[]),
                upstream(&cipher, 2, &["gpt-5", "o3"]),
            ],
            keys: vec![],
            key_spend: Default::default(),
            read_at: Utc::now(),
            users: vec![],
            prices: vec![crate::store::PriceRow {
                model: "*".into(),
                input_micros: Micros(1),
                cached_input_micros: Micros(1),
                output_micros: Micros(1),
            }],
        };
        let settings = BuildSettings {
            ring_seed: 7,
            affinity: crate::config::Affinity::User,
        };
        let snapshot = build(state, &cipher, settings).unwrap();
        let models: Vec<(i64, Vec<String>)> = snapshot
            .upstreams
            .into_iter()
            .map(|u| (u.id, u.models))
            .collect();
        assert_eq!(
            models,
            [(1, vec![]), (2, vec!["gpt-5".to_owned(), "o3".to_owned()])]
        );
    }
}
