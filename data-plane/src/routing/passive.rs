//! Passive health and load of each upstream as this data plane sees it: streams in flight, a
//! circuit that consecutive failures open for a short cool-down (then one trial request is let
//! through, half-open), and a cool-down set by a 429's `Retry-After`. The state is keyed by
//! upstream id and outlives snapshots, so a config change does not reset it; it is local and
//! short-lived by design — the control plane's active checks are the fleet-wide view.

use gateway_proto::ids::UpstreamId;
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Consecutive failures that open the circuit.
const FAILURES_TO_OPEN: u32 = 5;
/// How long an open circuit blocks before a trial request is allowed.
const OPEN_FOR: Duration = Duration::from_secs(5);

/// One upstream's local state.
#[derive(Debug)]
pub struct UpstreamState {
    epoch: Instant,
    in_flight: AtomicU32,
    failures: AtomicU32,
    /// Milliseconds since `epoch`; 0 = closed.
    open_until: AtomicU64,
    cooldown_until: AtomicU64,
    /// A half-open trial request is in flight.
    trial: AtomicBool,
}

impl Default for UpstreamState {
    fn default() -> Self {
        Self::new()
    }
}

impl UpstreamState {
    /// Fresh state: closed circuit, nothing in flight.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            in_flight: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            cooldown_until: AtomicU64::new(0),
            trial: AtomicBool::new(false),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Streams currently open to this upstream from this data plane.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a stream as open until the returned guard is dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Whether a request may be sent now: not cooling down, and the circuit closed or ready
    /// for a half-open trial.
    pub fn available(&self, now: Instant) -> bool {
        let now = self.ms(now);
        if now < self.cooldown_until.load(Ordering::Relaxed) {
            return false;
        }
        let open_until = self.open_until.load(Ordering::Relaxed);
        open_until == 0 || (now >= open_until && !self.trial.load(Ordering::Relaxed))
    }

    /// Claims the attempt: for a half-open circuit only one trial may run at a time.
    pub fn begin_attempt(&self, now: Instant) -> bool {
        let open_until = self.open_until.load(Ordering::Relaxed);
        if open_until == 0 {
            return true;
        }
        self.ms(now) >= open_until
            && self
                .trial
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// The upstream answered well: close the circuit.
    pub fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.open_until.store(0, Ordering::Relaxed);
        self.trial.store(false, Ordering::Release);
    }

    /// The upstream failed; returns whether this opened the circuit.
    pub fn failure(&self, now: Instant) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let was_trial = self.trial.swap(false, Ordering::AcqRel);
        if was_trial || failures >= FAILURES_TO_OPEN {
            let until = self.ms(now + OPEN_FOR);
            self.open_until.store(until, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Stops sending to this upstream for `duration` (a 429's `Retry-After`).
    pub fn cool_down(&self, now: Instant, duration: Duration) {
        self.cooldown_until
            .fetch_max(self.ms(now + duration), Ordering::Relaxed);
    }

    /// Time left in a cool-down, if any.
    pub fn cooldown_left(&self, now: Instant) -> Option<Duration> {
        let until = self.cooldown_until.load(Ordering::Relaxed);
        let now = self.ms(now);
        (until > now).then(|| Duration::from_millis(until - now))
    }
}

/// An open stream to an upstream; dropping it closes the count.
#[derive(Debug)]
pub struct InFlight(Arc<UpstreamState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Upstream states by id, kept across snapshots.
#[derive(Debug, Default)]
pub struct StateRegistry {
    states: Mutex<HashMap<UpstreamId, Arc<UpstreamState>>>,
}

impl StateRegistry {
    /// The state of upstream `id`, created on first use.
    pub fn get(&self, id: UpstreamId) -> Arc<UpstreamState> {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states
            .entry(id)
            .or_insert_with(|| Arc::new(UpstreamState::new()))
            .clone()
    }

    /// Forgets upstreams no longer in the snapshot.
    pub fn retain(&self, ids: impl Fn(UpstreamId) -> bool) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states.retain(|id, _| ids(*id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circuit_opens_after_consecutive_failures_and_half_opens() {
        let s = Arc::new(UpstreamState::new());
        let t0 = Instant::now();
        for _ in 0..FAILURES_TO_OPEN - 1 {
            assert!(!s.failure(t0));
        }
        assert!(s.available(t0));
        assert!(s.failure(t0), "the fifth failure opens the circuit");
        assert!(!s.available(t0));
        let later = t0 + OPEN_FOR + Duration::from_millis(10);
        assert!(s.available(later), "half-open after the cool-down");
        assert!(s.begin_attempt(later), "one trial");
        assert!(!s.begin_attempt(later), "only one trial at a time");
        assert!(!s.available(later));
        assert!(s.failure(later), "a failed trial reopens");
        assert!(!s.available(later));
        let much_later = later + OPEN_FOR + Duration::from_millis(10);
        assert!(s.begin_attempt(much_later));
        s.success();
        assert!(s.available(much_later));
        assert!(s.begin_attempt(much_later));
    }

    #[test]
    fn success_resets_the_streak() {
        let s = UpstreamState::new();
        let t0 = Instant::now();
        for _ in 0..FAILURES_TO_OPEN - 1 {
            s.failure(t0);
        }
        s.success();
        assert!(!s.failure(t0));
    }

    #[test]
    fn cool_down_and_in_flight() {
        let s = Arc::new(UpstreamState::new());
        let t0 = Instant::now();
        s.cool_down(t0, Duration::from_secs(30));
        assert!(!s.available(t0 + Duration::from_secs(29)));
        assert!(s.available(t0 + Duration::from_secs(31)));
        assert!(s.cooldown_left(t0).is_some());
        let a = s.start();
        let b = s.start();
        assert_eq!(s.in_flight(), 2);
        drop(a);
        drop(b);
        assert_eq!(s.in_flight(), 0);
    }
}
