//! Spend this proxy has metered that the snapshot's balances and key spend may not include yet.
//!
//! A snapshot carries each user's balance, and each capped key's spend per window, as of the
//! moment it was built, and the control plane only sends a new one when something changes (a
//! balance reaching zero, a key reaching a cap, an hour passing for rolling caps, an admin
//! edit). Between snapshots the proxy counts what it has spent itself, per user and per capped
//! key, and refuses a user once the snapshot balance minus that local spend is used up (a key
//! once its snapshot spend plus local spend reaches a cap). One proxy can then overspend by at
//! most the requests it already has in flight, however long the control plane is away.
//!
//! An event is "since the snapshot" when it finished no earlier than [`SETTLE_MARGIN_MS`] before
//! the snapshot was built: the margin covers the time an event takes from this proxy to the
//! ledger, and clock skew. Spend inside the margin may be counted twice (once in the snapshot
//! balance, once here), which errs on refusing a nearly exhausted user slightly early rather
//! than letting them overspend.

use gateway_proto::{
    ids::{KeyId, UserId},
    money::Micros,
};
use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
    sync::Mutex,
};

/// How far before a snapshot's build time local spend is still counted against it.
pub const SETTLE_MARGIN_MS: i64 = 5_000;
/// Entries kept per user or key; older ones are merged into their successor (counted later, so never
/// dropped too early).
const MAX_ENTRIES: usize = 32;

/// Per-user and per-capped-key spend since the current snapshot.
#[derive(Debug, Default)]
pub struct Unsettled {
    inner: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Entries older than this are settled; raised as newer snapshots arrive.
    floor_ms: i64,
    users: Ledger<UserId>,
    keys: Ledger<KeyId>,
}

/// Spend entries by user or key, oldest first.
type Ledger<K> = HashMap<K, VecDeque<Entry>>;

#[derive(Debug, Clone, Copy)]
struct Entry {
    at_ms: i64,
    micros: Micros,
}

impl Unsettled {
    /// The floor for a snapshot built at `built_at_ms`.
    pub fn floor(built_at_ms: i64) -> i64 {
        built_at_ms.saturating_sub(SETTLE_MARGIN_MS)
    }

    /// Records `micros` spent by `user_id` (through `key_id`, when the key has caps) at
    /// `at_ms`, under a snapshot whose floor is `floor_ms`.
    pub fn record(
        &self,
        user_id: UserId,
        key_id: Option<KeyId>,
        at_ms: i64,
        micros: Micros,
        floor_ms: i64,
    ) {
        if !micros.is_positive() {
            return;
        }
        let mut state = self.lock();
        state.settle(floor_ms);
        add(&mut state.users, user_id, at_ms, micros);
        if let Some(key_id) = key_id {
            add(&mut state.keys, key_id, at_ms, micros);
        }
    }

    /// What `user_id` has spent here since the snapshot whose floor is `floor_ms`.
    pub fn spent(&self, user_id: UserId, floor_ms: i64) -> Micros {
        let mut state = self.lock();
        state.settle(floor_ms);
        since(&state.users, user_id, floor_ms)
    }

    /// What the capped key `key_id` has spent here since the snapshot whose floor is
    /// `floor_ms`.
    pub fn key_spent(&self, key_id: KeyId, floor_ms: i64) -> Micros {
        let mut state = self.lock();
        state.settle(floor_ms);
        since(&state.keys, key_id, floor_ms)
    }

    /// Users with unsettled spend (for tests and metrics).
    pub fn users(&self) -> usize {
        self.lock().users.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a cache of sums: a panic elsewhere cannot leave it inconsistent.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    /// Drops every entry the snapshot with `floor_ms` already accounts for, once per snapshot.
    fn settle(&mut self, floor_ms: i64) {
        if floor_ms <= self.floor_ms {
            return;
        }
        self.floor_ms = floor_ms;
        settle(&mut self.users, floor_ms);
        settle(&mut self.keys, floor_ms);
    }
}

fn add<K: Hash + Eq>(ledger: &mut Ledger<K>, id: K, at_ms: i64, micros: Micros) {
    let entries = ledger.entry(id).or_default();
    match entries.back_mut() {
        Some(last) if last.at_ms >= at_ms => last.micros = last.micros.saturating_add(micros),
        _ => entries.push_back(Entry { at_ms, micros }),
    }
    if entries.len() > MAX_ENTRIES
        && let Some(oldest) = entries.pop_front()
        && let Some(next) = entries.front_mut()
    {
        next.micros = next.micros.saturating_add(oldest.micros);
    }
}

fn since<K: Hash + Eq>(ledger: &Ledger<K>, id: K, floor_ms: i64) -> Micros {
    ledger.get(&id).map_or(Micros::ZERO, |entries| {
        entries
            .iter()
            .filter(|e| e.at_ms >= floor_ms)
            .map(|e| e.micros)
            .sum()
    })
}

fn settle<K>(ledger: &mut Ledger<K>, floor_ms: i64) {
    ledger.retain(|_, entries| {
        while entries.front().is_some_and(|e| e.at_ms < floor_ms) {
            entries.pop_front();
        }
        !entries.is_empty()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_spend_since_the_snapshot_floor() {
        let u = Unsettled::default();
        let floor = Unsettled::floor(10_000);
        assert_eq!(floor, 5_000);
        u.record(UserId(1), None, 4_000, Micros(100), floor);
        u.record(UserId(1), Some(KeyId(10)), 6_000, Micros(200), floor);
        u.record(UserId(1), None, 6_000, Micros(300), floor);
        u.record(UserId(2), Some(KeyId(20)), 7_000, Micros(50), floor);
        u.record(UserId(2), Some(KeyId(20)), 7_000, Micros(0), floor);
        assert_eq!(
            u.spent(UserId(1), floor),
            Micros(500),
            "before the floor is settled"
        );
        assert_eq!(u.spent(UserId(2), floor), Micros(50));
        assert_eq!(u.spent(UserId(3), floor), Micros(0));
        // Keys count only what was recorded through them.
        assert_eq!(u.key_spent(KeyId(10), floor), Micros(200));
        assert_eq!(u.key_spent(KeyId(20), floor), Micros(50));
        assert_eq!(u.key_spent(KeyId(11), floor), Micros(0));
        // A newer snapshot settles what came before its floor, for every user.
        assert_eq!(u.spent(UserId(1), 6_500), Micros(0));
        assert_eq!(u.users(), 1);
        assert_eq!(u.spent(UserId(2), 6_500), Micros(50));
        assert_eq!(u.key_spent(KeyId(10), 6_500), Micros(0));
        assert_eq!(u.key_spent(KeyId(20), 6_500), Micros(50));
        // An older floor (a stale table still in use) never resurrects settled spend.
        assert_eq!(u.spent(UserId(1), floor), Micros(0));
    }

    #[test]
    fn merging_keeps_every_micro() {
        let u = Unsettled::default();
        for i in 0..1_000 {
            u.record(UserId(7), Some(KeyId(70)), 1_000 + i, Micros(3), 0);
        }
        assert_eq!(u.spent(UserId(7), 0), Micros(3_000));
        // Merged spend moves later, never earlier: it is not settled before its time...
        assert_eq!(u.spent(UserId(7), 1_500), Micros(3_000));
        assert_eq!(u.key_spent(KeyId(70), 1_500), Micros(3_000));
        // ...while the most recent entries stay exact.
        assert_eq!(u.spent(UserId(7), 1_990), Micros(30));
        assert_eq!(u.key_spent(KeyId(70), 1_990), Micros(30));
    }
}
