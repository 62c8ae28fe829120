//! Per-key limits that need state on this data plane: requests per minute (an exact sliding
//! window) and concurrent streams. Each data plane enforces them for the traffic it sees; a key
//! spread over N data planes can reach up to N times its limit.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use gateway_proto::ids::KeyId;
use http::HeaderMap;
use ipnet::IpNet;

use super::error::ProxyError;
use crate::snapshot::KeyEntry;

const WINDOW: Duration = Duration::from_secs(60);

/// One key's counters.
#[derive(Debug, Default)]
struct KeyState {
    recent: Mutex<VecDeque<Instant>>,
    in_flight: AtomicU32,
}

/// A concurrency slot; dropping it frees the slot.
#[derive(Debug)]
pub(super) struct KeySlot(Arc<KeyState>);

impl Drop for KeySlot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counters of every key that has limits, created on first use.
#[derive(Debug, Default)]
pub(super) struct KeyLimits {
    states: RwLock<HashMap<KeyId, Arc<KeyState>>>,
}

impl KeyLimits {
    fn state(&self, key_id: KeyId) -> Arc<KeyState> {
        if let Some(s) = self
            .states
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key_id)
        {
            return s.clone();
        }
        self.states
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key_id)
            .or_default()
            .clone()
    }

    /// Admits one request of `key` now, or says when to retry.
    pub(super) fn admit(
        &self,
        key: &KeyEntry,
        now: Instant,
    ) -> Result<Option<KeySlot>, ProxyError> {
        if key.rpm == 0 && key.concurrency == 0 {
            return Ok(None);
        }
        let state = self.state(key.id);
        let slot = if key.concurrency > 0 {
            let before = state.in_flight.fetch_add(1, Ordering::AcqRel);
            let slot = KeySlot(state.clone());
            if before >= key.concurrency {
                return Err(ProxyError::ConcurrencyLimited(key.concurrency));
            }
            Some(slot)
        } else {
            None
        };
        if key.rpm > 0 {
            let mut recent = state.recent.lock().unwrap_or_else(|p| p.into_inner());
            while recent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= WINDOW)
            {
                recent.pop_front();
            }
            if recent.len() >= key.rpm as usize {
                let oldest = recent.front().copied().unwrap_or(now);
                let wait = WINDOW.saturating_sub(now.duration_since(oldest));
                return Err(ProxyError::RateLimited {
                    rpm: key.rpm,
                    retry_after: wait.max(Duration::from_secs(1)),
                });
            }
            recent.push_back(now);
        }
        Ok(slot)
    }
}

/// The client's address: the peer, or — when the peer is a trusted proxy — the nearest
/// untrusted address in `X-Forwarded-For`.
pub(super) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    if !trusted.iter().any(|n| n.contains(&peer)) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|a| !trusted.iter().any(|n| n.contains(a)))
        .unwrap_or(peer)
}

/// Whether the key may be used from `ip`.
pub(super) fn check_ip(key: &KeyEntry, ip: IpAddr) -> Result<(), ProxyError> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if key.ip_allow.is_empty() || key.ip_allow.iter().any(|n| n.contains(&ip)) {
        Ok(())
    } else {
        Err(ProxyError::IpNotAllowed(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::parse_net;

    fn key(rpm: u32, concurrency: u32) -> KeyEntry {
        KeyEntry {
            id: KeyId(1),
            user_id: gateway_proto::ids::UserId(1),
            expires_at_ms: 0,
            models: vec![],
            ip_allow: vec![parse_net("10.0.0.0/8").unwrap(), parse_net("::1").unwrap()],
            rpm,
            concurrency,
            caps: vec![],
        }
    }

    #[test]
    fn rpm_is_a_sliding_window() {
        let limits = KeyLimits::default();
        let k = key(2, 0);
        let t0 = Instant::now();
        assert!(limits.admit(&k, t0).is_ok());
        assert!(limits.admit(&k, t0 + Duration::from_secs(10)).is_ok());
        match limits.admit(&k, t0 + Duration::from_secs(20)) {
            Err(ProxyError::RateLimited { retry_after, .. }) => {
                assert_eq!(retry_after, Duration::from_secs(40));
            }
            other => panic!("{other:?}"),
        }
        assert!(limits.admit(&k, t0 + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn concurrency_slots_are_freed_on_drop() {
        let limits = KeyLimits::default();
        let k = key(0, 2);
        let now = Instant::now();
        let a = limits.admit(&k, now).unwrap();
        let _b = limits.admit(&k, now).unwrap();
        assert!(matches!(
            limits.admit(&k, now),
            Err(ProxyError::ConcurrencyLimited(2))
        ));
        drop(a);
        assert!(limits.admit(&k, now).is_ok());
    }

    #[test]
    fn ip_allow_list_and_forwarded_for() {
        let k = key(0, 0);
        assert!(check_ip(&k, "10.1.2.3".parse().unwrap()).is_ok());
        assert!(check_ip(&k, "::ffff:10.1.2.3".parse().unwrap()).is_ok());
        assert!(check_ip(&k, "::1".parse().unwrap()).is_ok());
        assert!(check_ip(&k, "192.168.0.1".parse().unwrap()).is_err());
        let lb: IpAddr = "172.16.0.5".parse().unwrap();
        let trusted = vec![parse_net("172.16.0.0/12").unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "1.2.3.4, 10.9.9.9, 172.16.0.9".parse().unwrap(),
        );
        assert_eq!(
            client_ip(lb, &h, &trusted),
            "10.9.9.9".parse::<IpAddr>().unwrap()
        );
        // An untrusted peer cannot claim another address.
        assert_eq!(
            client_ip("8.8.8.8".parse().unwrap(), &h, &trusted),
            "8.8.8.8".parse::<IpAddr>().unwrap()
        );
    }
}
