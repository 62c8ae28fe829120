use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

fn members(spec: &[(i64, u32)]) -> Vec<RingMember> {
    spec.iter()
        .map(|&(id, weight)| RingMember { id, weight })
        .collect()
}

fn user_key(i: u32) -> String {
    format!("user:{i}")
}

/// The mapping this algorithm id promises forever. If this test fails, routing of existing
/// users would move on upgrade: keep the old algorithm and give the new one a new id.
#[test]
fn golden_vectors() {
    let ring = Ring::new(
        0x636f_6465_7867_7721,
        members(&[(1, 1), (2, 1), (3, 2), (7, 5)]),
    )
    .unwrap();
    let picks: Vec<i64> = (0..16)
        .map(|i| ring.pick(user_key(i).as_bytes(), |_| true).unwrap())
        .collect();
    assert_eq!(picks, GOLDEN_PICKS, "pick mapping drifted");
    assert_eq!(
        ring.ranked(b"user:42"),
        GOLDEN_RANKED_42,
        "failover order drifted"
    );
    assert_eq!(ring.checksum(), GOLDEN_CHECKSUM, "checksum drifted");
}

const GOLDEN_PICKS: [i64; 16] = [1, 1, 7, 7, 7, 7, 1, 7, 3, 7, 2, 7, 3, 7, 3, 7];
const GOLDEN_RANKED_42: [i64; 4] = [1, 2, 7, 3];
const GOLDEN_CHECKSUM: u64 = 0xf94c_4070_15ad_7eab;

#[test]
fn rejects_bad_rings() {
    assert_eq!(Ring::new(0, []).unwrap_err(), RingError::Empty);
    assert_eq!(
        Ring::new(0, members(&[(1, 1), (2, 0)])).unwrap_err(),
        RingError::ZeroWeight(2)
    );
    assert_eq!(
        Ring::new(0, members(&[(1, 1), (1, 2)])).unwrap_err(),
        RingError::Duplicate(1)
    );
    let ring = Ring::new(9, members(&[(1, 1), (2, 3)])).unwrap();
    let sum = ring.checksum();
    assert!(Ring::verified(ALGORITHM, 9, ring.members(), sum).is_ok());
    assert!(matches!(
        Ring::verified(ALGORITHM, 9, ring.members(), sum ^ 1),
        Err(RingError::ChecksumMismatch { .. })
    ));
    assert!(matches!(
        Ring::verified("ketama-v0", 9, ring.members(), sum),
        Err(RingError::UnknownAlgorithm(_))
    ));
    // A different weight derives a different ring.
    assert_ne!(
        Ring::new(9, members(&[(1, 1), (2, 4)])).unwrap().checksum(),
        sum
    );
}

#[test]
fn member_order_does_not_matter() {
    let a = Ring::new(5, members(&[(3, 1), (1, 2), (2, 1)])).unwrap();
    let b = Ring::new(5, members(&[(1, 2), (2, 1), (3, 1)])).unwrap();
    assert_eq!(a.checksum(), b.checksum());
    for i in 0..1000 {
        let k = user_key(i);
        assert_eq!(a.ranked(k.as_bytes()), b.ranked(k.as_bytes()));
    }
}

#[test]
fn weight_shares_within_three_percent() {
    let spec = [(1, 1), (2, 2), (3, 3), (4, 4), (5, 10)];
    let ring = Ring::new(77, members(&spec)).unwrap();
    let total_weight: u32 = spec.iter().map(|s| s.1).sum();
    let users = 100_000;
    let mut counts: HashMap<i64, u32> = HashMap::new();
    for i in 0..users {
        *counts
            .entry(ring.pick(user_key(i).as_bytes(), |_| true).unwrap())
            .or_default() += 1;
    }
    for (id, weight) in spec {
        let expected = f64::from(users) * f64::from(weight) / f64::from(total_weight);
        let got = f64::from(counts[&id]);
        let err = (got - expected).abs() / expected;
        assert!(
            err <= 0.03,
            "upstream {id}: expected {expected}, got {got} ({err:.3})"
        );
    }
}

#[test]
fn pick_agrees_with_ranked_and_skips_to_own_next_choice() {
    let ring = Ring::new(3, members(&[(1, 1), (2, 1), (3, 1), (4, 2)])).unwrap();
    for i in 0..2000 {
        let k = user_key(i);
        let ranked = ring.ranked(k.as_bytes());
        assert_eq!(ring.pick(k.as_bytes(), |_| true), Some(ranked[0]));
        let first = ranked[0];
        assert_eq!(ring.pick(k.as_bytes(), |id| id != first), Some(ranked[1]));
        assert_eq!(ring.pick(k.as_bytes(), |_| false), None);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Removing one of n members moves only that member's users, about 1/n of all.
    #[test]
    fn removing_one_of_n_moves_at_most_its_share(n in 3usize..24, removed in 0usize..24, seed in any::<u64>()) {
        let removed = (removed % n) as i64 + 1;
        let all: Vec<RingMember> = (1..=n as i64).map(|id| RingMember { id, weight: 1 }).collect();
        let before = Ring::new(seed, all.clone()).unwrap();
        let after = Ring::new(seed, all.into_iter().filter(|m| m.id != removed)).unwrap();
        let users = 20_000u32;
        let mut moved = 0u32;
        for i in 0..users {
            let k = user_key(i);
            let b = before.pick(k.as_bytes(), |_| true).unwrap();
            let a = after.pick(k.as_bytes(), |_| true).unwrap();
            if b != a {
                prop_assert_eq!(b, removed, "a user of a surviving upstream moved");
                moved += 1;
            }
        }
        let bound = 1.1 / n as f64 * f64::from(users);
        // Sampling noise at 20k users: allow three standard deviations above the bound.
        let p = 1.0 / n as f64;
        let slack = 3.0 * (f64::from(users) * p * (1.0 - p)).sqrt();
        prop_assert!(f64::from(moved) <= bound + slack, "moved {} of {} (n = {})", moved, users, n);
    }

    /// Skipping (disabling) a member moves only its users, and they come back when it returns.
    #[test]
    fn skipping_moves_only_its_users_and_they_return(n in 2usize..16, skipped in 0usize..16, seed in any::<u64>()) {
        let skipped = (skipped % n) as i64 + 1;
        let ring = Ring::new(seed, (1..=n as i64).map(|id| RingMember { id, weight: 1 + (id as u32 % 3) })).unwrap();
        for i in 0..3000 {
            let k = user_key(i);
            let home = ring.pick(k.as_bytes(), |_| true).unwrap();
            let while_skipped = ring.pick(k.as_bytes(), |id| id != skipped).unwrap();
            if home != skipped {
                prop_assert_eq!(home, while_skipped);
            } else {
                prop_assert_eq!(while_skipped, ring.ranked(k.as_bytes())[1]);
            }
            prop_assert_eq!(ring.pick(k.as_bytes(), |_| true).unwrap(), home);
        }
    }
}
