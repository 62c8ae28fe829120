use std::time::{Duration, Instant};

use gateway_proto::ring::{self, Ring, RingMember};

use super::*;
use gateway_proto::ids::UpstreamId;

fn upstream(id: i64, priority: i32, healthy: bool) -> v1::SnapshotUpstream {
    v1::SnapshotUpstream {
        id,
        name: format!("u{id}"),
        base_url: format!("http://pool-{id}.example/openai/"),
        api_key: format!("sk-upstream-{id}"),
        priority,
        weight: 1,
        max_retries: 1,
        timeout_ms: 5_000,
        healthy,
        models: vec![],
    }
}

fn ring_for(priority: i32, ids: &[i64]) -> v1::HashRing {
    let ring = Ring::new(7, ids.iter().map(|&id| RingMember { id, weight: 1 })).unwrap();
    v1::HashRing {
        priority,
        algorithm: ring::ALGORITHM.into(),
        seed: 7,
        members: ids
            .iter()
            .map(|&id| v1::RingMember {
                upstream_id: id,
                weight: 1,
            })
            .collect(),
        checksum: ring.checksum(),
    }
}

fn snapshot() -> v1::Snapshot {
    v1::Snapshot {
        version: 5,
        upstreams: vec![
            upstream(1, 0, true),
            upstream(2, 0, true),
            upstream(3, 1, true),
        ],
        keys: vec![v1::SnapshotKey {
            digest: KeyDigest::of_secret("cgw-test").as_bytes().to_vec(),
            id: 10,
            user_id: 20,
            ..Default::default()
        }],
        users: vec![v1::SnapshotUser {
            id: 20,
            balance_micros: 5,
            multiplier_ppm: 1_000_000,
        }],
        prices: vec![
            v1::Price {
                model: "*".into(),
                input_micros: 1,
                cached_input_micros: 1,
                output_micros: 1,
            },
            v1::Price {
                model: "gpt-5".into(),
                input_micros: 2,
                cached_input_micros: 3,
                output_micros: 4,
            },
        ],
        // Deliberately out of order: the table sorts tiers.
        rings: vec![ring_for(1, &[3]), ring_for(0, &[1, 2])],
        affinity: 0,
        built_at_ms: 0,
    }
}

#[test]
fn builds_lookup_tables() {
    let t = AppliedSnapshot::try_from(snapshot()).unwrap();
    assert_eq!(t.version, 5);
    let key = t.key(&KeyDigest::of_secret("cgw-test")).unwrap();
    assert_eq!((key.id, key.user_id), (KeyId(10), UserId(20)));
    assert!(t.key(&KeyDigest::of_secret("cgw-other")).is_none());
    assert_eq!(t.user(UserId(20)).unwrap().balance, Micros(5));
    assert_eq!(t.pricing("gpt-5").price.unwrap().output, Micros(4));
    assert_eq!(t.pricing("other").price.unwrap().output, Micros(1));
    // Priced models keep their names as metrics labels; any other shares one.
    let priced = t.pricing("gpt-5");
    assert_eq!(
        (priced.price.unwrap().output, &*priced.label),
        (Micros(4), "gpt-5")
    );
    let unnamed = t.pricing("made-up");
    assert_eq!(unnamed.price.unwrap().output, Micros(1));
    assert_eq!(&*unnamed.label, OTHER_MODEL_LABEL);
    let u = t.router().upstream(UpstreamId(1)).unwrap();
    assert_eq!(u.base_url, "http://pool-1.example/openai");
    assert!(u.authorization.is_sensitive());
}

#[test]
fn picks_best_tier_and_skips_without_moving_others() {
    let t = AppliedSnapshot::try_from(snapshot()).unwrap();
    for i in 0..200 {
        let key = format!("user:{i}");
        let home = t.router().pick(key.as_bytes(), |_| true).unwrap().id;
        assert!(home.get() == 1 || home.get() == 2, "tier 0 is preferred");
        // Skipping the other tier-0 upstream never moves this user.
        let other = UpstreamId(3 - home.get());
        assert_eq!(
            t.router()
                .pick(key.as_bytes(), |u| u.id != other)
                .unwrap()
                .id,
            home
        );
        // With tier 0 unavailable, everyone lands on tier 1.
        assert_eq!(
            t.router()
                .pick(key.as_bytes(), |u| u.priority > 0)
                .unwrap()
                .id,
            UpstreamId(3)
        );
    }
    assert!(t.router().pick(b"user:1", |_| false).is_none());
}

#[test]
fn rejects_inconsistent_snapshots() {
    let mut bad = snapshot();
    bad.rings[1].checksum ^= 1;
    assert!(matches!(
        AppliedSnapshot::try_from(bad),
        Err(SnapshotRejected::Routing(RouteRejected::Ring {
            priority: 0,
            ..
        }))
    ));

    let mut bad = snapshot();
    bad.keys[0].user_id = 99;
    assert!(matches!(
        AppliedSnapshot::try_from(bad),
        Err(SnapshotRejected::UnknownUser {
            key: KeyId(10),
            user: UserId(99)
        })
    ));

    let mut bad = snapshot();
    bad.keys[0].digest = vec![1, 2, 3];
    assert!(matches!(
        AppliedSnapshot::try_from(bad),
        Err(SnapshotRejected::Digest { key: KeyId(10), .. })
    ));

    let mut bad = snapshot();
    bad.rings[0] = ring_for(1, &[3, 4]);
    assert!(matches!(
        AppliedSnapshot::try_from(bad),
        Err(SnapshotRejected::Routing(RouteRejected::UnknownMember {
            upstream: UpstreamId(4),
            ..
        }))
    ));

    let mut bad = snapshot();
    bad.upstreams.push(upstream(9, 0, true));
    assert!(matches!(
        AppliedSnapshot::try_from(bad),
        Err(SnapshotRejected::Routing(RouteRejected::Unrouted(
            UpstreamId(9)
        )))
    ));
}

#[test]
fn choose_skips_tried_and_unavailable_and_falls_through_tiers() {
    let t = AppliedSnapshot::try_from(snapshot()).unwrap();
    let now = Instant::now();
    for i in 0..100 {
        let key = format!("user:{i}");
        let first = t.router().choose(key.as_bytes(), "m", &[], now).unwrap();
        assert_eq!(
            first.id,
            t.router().pick(key.as_bytes(), |_| true).unwrap().id
        );
        let second = t
            .router()
            .choose(key.as_bytes(), "m", &[first.id], now)
            .unwrap();
        assert_eq!(
            second.id.get(),
            3 - first.id.get(),
            "the other tier-0 upstream next"
        );
        let [one, two, three] = [1, 2, 3].map(UpstreamId);
        let third = t
            .router()
            .choose(key.as_bytes(), "m", &[one, two], now)
            .unwrap();
        assert_eq!(third.id, three, "then the less preferred tier");
        assert!(
            t.router()
                .choose(key.as_bytes(), "m", &[one, two, three], now)
                .is_none()
        );
    }
    // A cooling upstream is skipped; only its users move.
    let cooling = t.router().upstream(UpstreamId(1)).unwrap();
    cooling.state.cool_down(now, Duration::from_secs(60));
    for i in 0..100 {
        let key = format!("user:{i}");
        let home = t.router().pick(key.as_bytes(), |_| true).unwrap().id;
        let chosen = t.router().choose(key.as_bytes(), "m", &[], now).unwrap().id;
        assert_eq!(chosen, UpstreamId(2), "{key} (home {home})");
    }
}

#[test]
fn bounded_loads_spill_to_the_users_own_next_choice() {
    let t = AppliedSnapshot::try_from(snapshot()).unwrap();
    let now = Instant::now();
    let key = b"user:7";
    let home = t.router().choose(key, "m", &[], now).unwrap();
    let other = t
        .router()
        .upstream(UpstreamId(3 - home.id.get()))
        .unwrap()
        .clone();
    // Fill the home upstream far above a fair share while the other is idle.
    let guards: Vec<_> = (0..10).map(|_| home.state.start()).collect();
    let chosen = t.router().choose(key, "m", &[], now).unwrap();
    assert_eq!(chosen.id, other.id, "spilled to the next choice");
    // When everyone is loaded evenly, the home choice holds.
    let others: Vec<_> = (0..10).map(|_| other.state.start()).collect();
    assert_eq!(t.router().choose(key, "m", &[], now).unwrap().id, home.id);
    drop(guards);
    drop(others);
    assert_eq!(t.router().choose(key, "m", &[], now).unwrap().id, home.id);
}

#[test]
fn when_every_upstream_is_marked_unhealthy_health_is_ignored() {
    let mut s = snapshot();
    for u in &mut s.upstreams {
        u.healthy = false;
    }
    let t = AppliedSnapshot::try_from(s).unwrap();
    let now = Instant::now();
    let home = t.router().pick(b"user:1", |_| true).unwrap().id;
    assert_eq!(
        t.router().choose(b"user:1", "m", &[], now).unwrap().id,
        home,
        "panic mode keeps routing"
    );
    // A healthy upstream anywhere ends panic mode: only it is used.
    let mut s = snapshot();
    s.upstreams[0].healthy = false;
    s.upstreams[1].healthy = false;
    let t = AppliedSnapshot::try_from(s).unwrap();
    assert_eq!(
        t.router().choose(b"user:1", "m", &[], now).unwrap().id,
        UpstreamId(3)
    );
}

/// Tier 0 of `snapshot()` with upstream 2 serving only `mini`.
fn with_mini_on_2() -> AppliedSnapshot {
    let mut s = snapshot();
    s.upstreams[1].models = vec!["mini".into()];
    AppliedSnapshot::try_from(s).unwrap()
}

#[test]
fn only_upstreams_serving_the_model_are_chosen_and_nobody_else_moves() {
    let before = AppliedSnapshot::try_from(snapshot()).unwrap();
    let after = with_mini_on_2();
    let now = Instant::now();
    let (mut moved, mut users) = (0, 0);
    for i in 0..2_000 {
        let key = format!("user:{i}");
        let home = before
            .router()
            .choose(key.as_bytes(), "big", &[], now)
            .unwrap()
            .id;
        // `big` is no longer served by upstream 2: its users fall to their own next choice
        // (upstream 1), everyone else stays.
        let big = after
            .router()
            .choose(key.as_bytes(), "big", &[], now)
            .unwrap()
            .id;
        assert_eq!(big, UpstreamId(1), "{key}");
        // `mini` is served by both: nobody moves.
        let mini = after
            .router()
            .choose(key.as_bytes(), "mini", &[], now)
            .unwrap()
            .id;
        assert_eq!(mini, home, "{key}");
        users += 1;
        moved += usize::from(big != home);
        // Failover for `big` goes to tier 1, never to upstream 2.
        let next = after
            .router()
            .choose(key.as_bytes(), "big", &[UpstreamId(1)], now)
            .unwrap()
            .id;
        assert_eq!(next, UpstreamId(3), "{key}");
    }
    // About half the users were homed on upstream 2 for `big`: they, and only they, moved.
    assert!((800..1_200).contains(&moved), "{moved} of {users} moved");
}

#[test]
fn adding_a_model_moves_only_its_users_who_now_land_there() {
    // Upstream 3 (tier 1) serves only `x`; tier 0 serves every model. Declaring `y` on a
    // tier-0 upstream that did not serve it changes only `y`'s picks.
    let mut s = snapshot();
    s.upstreams[0].models = vec!["x".into()];
    let before = AppliedSnapshot::try_from(s.clone()).unwrap();
    s.upstreams[0].models = vec!["x".into(), "y".into()];
    let after = AppliedSnapshot::try_from(s).unwrap();
    let now = Instant::now();
    for i in 0..2_000 {
        let key = format!("user:{i}");
        let pick = |t: &AppliedSnapshot, model| {
            t.router()
                .choose(key.as_bytes(), model, &[], now)
                .unwrap()
                .id
        };
        assert_eq!(
            pick(&before, "x"),
            pick(&after, "x"),
            "{key}: x never moves"
        );
        let (was, is) = (pick(&before, "y"), pick(&after, "y"));
        if was != is {
            assert_eq!(
                is,
                UpstreamId(1),
                "{key}: y moves only onto the upstream that added it"
            );
        }
    }
}

#[test]
fn models_served_and_listed() {
    let t = with_mini_on_2();
    assert!(t.router().serves("mini") && t.router().serves("anything"));
    let mut s = snapshot();
    for u in &mut s.upstreams {
        u.models = vec!["mini".into()];
    }
    s.upstreams[2].models = vec!["big".into()];
    let t = AppliedSnapshot::try_from(s).unwrap();
    assert!(
        !t.router().serves("gpt-5"),
        "priced but served by no upstream"
    );
    let every = t.key(&KeyDigest::of_secret("cgw-test")).unwrap();
    assert_eq!(t.models_for(every), ["big", "mini"]);
    let limited = KeyEntry {
        models: vec!["mini".into(), "gpt-5".into()],
        ..every.clone()
    };
    assert_eq!(t.models_for(&limited), ["mini"]);
    // A model an upstream declares is named, unpriced ones priced by the default.
    let declared = t.pricing("big");
    assert_eq!(
        (&*declared.label, declared.price),
        ("big", t.pricing("*").price)
    );
    // With an upstream that serves every model, priced models are listed too.
    let t = with_mini_on_2();
    let every = t.key(&KeyDigest::of_secret("cgw-test")).unwrap();
    assert_eq!(t.models_for(every), ["gpt-5", "mini"]);
}
