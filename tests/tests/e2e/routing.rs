//! Routing across the fleet: every data plane sends a user to the same upstream, and that
//! upstream is the shared ring's choice.

use std::collections::{HashMap, HashSet};

use gateway_proto::ring::{Ring, RingMember};
use gateway_tests::{Harness, body_bytes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_data_planes_send_each_of_100_users_to_the_same_upstream() {
    let mut h = Harness::start(2).await;
    let mut upstreams = HashMap::new();
    for (name, weight) in [("pool-a", 1), ("pool-b", 2), ("pool-c", 3)] {
        let (u, _) = h.add_upstream(name, 0, weight).await;
        upstreams.insert(format!("Bearer sk-upstream-{name}"), (u.id, weight));
    }
    // A less preferred tier that must receive nothing while tier 0 is healthy.
    let (backup, _) = h.add_upstream("backup", 1, 10).await;
    let mut users = Vec::new();
    let mut last_version = 0;
    for i in 0..100 {
        let (user, _) = h.add_user(&format!("user-{i}"), 1_000_000_000).await;
        let (_, secret, version) = h.add_key(user.id).await;
        users.push((user.id, secret));
        last_version = version;
    }
    h.wait_applied(last_version).await;

    for (i, (_, secret)) in users.iter().enumerate() {
        let auth = format!("Bearer {secret}");
        for dp in 0..2 {
            // The body names the user so the mock's record says who it was.
            let body = format!(
                r#"{{"model":"mock-model","stream":false,"input":"hi","metadata":{{"who":"{i}"}}}}"#
            );
            let response = h
                .post(dp, "/v1/responses", &[("authorization", &auth)], body)
                .await;
            assert_eq!(response.status(), 200);
            body_bytes(response).await;
        }
    }

    let mut seen: HashMap<String, HashSet<String>> = HashMap::new();
    for r in h.mock.recorded() {
        let who = r.json()["metadata"]["who"].as_str().unwrap().to_owned();
        seen.entry(who)
            .or_default()
            .insert(r.authorization().to_owned());
    }
    assert_eq!(seen.len(), 100);
    let ring = Ring::new(
        control_plane::config::DEFAULT_RING_SEED,
        upstreams
            .values()
            .map(|&(id, weight)| RingMember { id, weight }),
    )
    .unwrap();
    let mut per_upstream: HashMap<String, usize> = HashMap::new();
    for (i, (user_id, _)) in users.iter().enumerate() {
        let hit = &seen[&i.to_string()];
        assert_eq!(
            hit.len(),
            1,
            "user {i} reached {hit:?} through two data planes"
        );
        let auth = hit.iter().next().unwrap();
        assert_ne!(auth, &format!("Bearer sk-upstream-{}", backup.name));
        let expected = ring
            .pick(format!("user:{user_id}").as_bytes(), |_| true)
            .unwrap();
        assert_eq!(
            upstreams[auth].0, expected,
            "user {i} is routed by the shared ring"
        );
        *per_upstream.entry(auth.clone()).or_default() += 1;
    }
    // Weighted 1:2:3 over 100 users: every pool gets some.
    assert_eq!(per_upstream.len(), 3, "{per_upstream:?}");
    h.shutdown().await;
}
