//! Active health checks: probes with the upstream's key, thresholds, skipping an unhealthy
//! upstream without moving anyone else, recovery, one leader among replicas, and on-demand
//! probes from gatewayctl.

use clap::Parser;
use gateway_proto::{
    ring::{Ring, RingMember},
    v1,
};
use gateway_tests::{EVENT_DEADLINE, Harness, HarnessOptions, body_bytes, codex_request};
use http::StatusCode;

fn options(data_planes: usize) -> HarnessOptions {
    HarnessOptions {
        data_planes,
        health_interval_ms: 100,
        ..HarnessOptions::default()
    }
}

async fn upstream_of(h: &Harness, secret: &str) -> String {
    let before = h.mock.recorded().len();
    let auth = format!("Bearer {secret}");
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", &auth)],
            codex_request("mock-model", false, "c"),
        )
        .await;
    assert_eq!(response.status(), 200);
    body_bytes(response).await;
    let recorded = h.mock.recorded();
    recorded[before..]
        .iter()
        .find(|r| r.method == http::Method::POST)
        .map(|r| {
            r.authorization()
                .trim_start_matches("Bearer sk-upstream-")
                .to_owned()
        })
        .expect("the request reached an upstream")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upstream_is_skipped_without_moving_others_and_returns_when_healthy() {
    let mut h = Harness::start_opts(options(1)).await;
    let (a, _) = h.add_upstream("pool-a", 0, 1).await;
    let (b, _) = h.add_upstream("pool-b", 0, 1).await;
    let ring = Ring::new(
        control_plane::config::DEFAULT_RING_SEED,
        [
            RingMember {
                id: a.id,
                weight: 1,
            },
            RingMember {
                id: b.id,
                weight: 1,
            },
        ],
    )
    .unwrap();
    // One user whose home is pool-a and one whose home is pool-b.
    let (mut on_a, mut on_b) = (None, None);
    let mut i = 0;
    let mut version = 0;
    while on_a.is_none() || on_b.is_none() {
        let (user, _) = h.add_user(&format!("u{i}"), 100_000_000).await;
        i += 1;
        let home = ring
            .pick(format!("user:{}", user.id).as_bytes(), |_| true)
            .unwrap();
        let slot = if home == a.id { &mut on_a } else { &mut on_b };
        if slot.is_none() {
            let (_, secret, v) = h.add_key(user.id).await;
            *slot = Some(secret);
            version = v;
        }
    }
    let (on_a, on_b) = (on_a.unwrap(), on_b.unwrap());
    h.wait_applied(version).await;
    assert_eq!(upstream_of(&h, &on_a).await, "pool-a");
    assert_eq!(upstream_of(&h, &on_b).await, "pool-b");

    // pool-a fails its probes: after the threshold it is marked unhealthy, the version moves,
    // and only pool-a's users move (to their own next choice).
    h.mock
        .fail_probes("pool-a", Some(StatusCode::SERVICE_UNAVAILABLE));
    let applied = *h.data_planes[0].applied.borrow();
    h.wait_applied(applied + 1).await;
    let got = h
        .admin()
        .await
        .get_upstream(v1::GetUpstreamRequest { id: a.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.health(), v1::UpstreamHealth::Unhealthy);
    assert!(got.health_error.contains("503"), "{}", got.health_error);
    assert_eq!(upstream_of(&h, &on_a).await, "pool-b");
    assert_eq!(upstream_of(&h, &on_b).await, "pool-b");
    // Probes carried the upstream's own key.
    let probe = h
        .mock
        .recorded()
        .into_iter()
        .find(|r| r.method == http::Method::GET && r.path.starts_with("/pool-a/"))
        .unwrap();
    assert_eq!(probe.path, "/pool-a/v1/models");
    assert_eq!(probe.authorization(), "Bearer sk-upstream-pool-a");

    // Recovery brings the user home.
    h.mock.fail_probes("pool-a", None);
    let applied = *h.data_planes[0].applied.borrow();
    h.wait_applied(applied + 1).await;
    let got = h
        .admin()
        .await
        .get_upstream(v1::GetUpstreamRequest { id: a.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.health(), v1::UpstreamHealth::Healthy);
    assert_eq!(upstream_of(&h, &on_a).await, "pool-a");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_replica_probes_and_another_takes_over_when_it_stops() {
    let mut h = Harness::start_opts(options(0)).await;
    let replica = h.spawn_control_plane("replica-b").await;
    let mut a = h.control_plane.as_ref().unwrap().health_leader.clone();
    let mut b = replica.health_leader.clone();
    tokio::time::timeout(EVENT_DEADLINE, async {
        while !*a.borrow() && !*b.borrow() {
            tokio::select! {
                _ = a.changed() => {}
                _ = b.changed() => {}
            }
        }
    })
    .await
    .expect("a leader is elected");
    let (a_leads, b_leads) = (*a.borrow(), *b.borrow());
    assert!(
        a_leads ^ b_leads,
        "exactly one leader (a: {a_leads}, b: {b_leads})"
    );

    // Stop the leader; the other takes over.
    let mut follower = if a_leads {
        h.stop_control_plane().await;
        h.control_plane = Some(replica);
        b
    } else {
        replica.stop().await;
        a
    };
    tokio::time::timeout(EVENT_DEADLINE, follower.wait_for(|l| *l))
        .await
        .expect("the follower takes over")
        .unwrap();
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gatewayctl_upstream_test_reports_status_latency_and_error() {
    let h = Harness::start(0).await;
    let (up, _) = h.add_upstream("pool-a", 0, 1).await;
    let id = up.id.to_string();
    let run = |args: Vec<String>| async move {
        let mut out = Vec::new();
        gatewayctl::run(gatewayctl::Cli::try_parse_from(args).unwrap(), &mut out)
            .await
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out).unwrap()
    };
    let ok = run(h.gatewayctl_args(&["upstream", "test", &id, "-o", "json"])).await;
    assert_eq!(ok["healthy"], true);
    assert_eq!(ok["status_code"], 200);
    assert!(ok["latency_ms"].is_u64());
    assert!(ok["url"].as_str().unwrap().ends_with("/pool-a/v1/models"));

    h.mock.fail_probes("pool-a", Some(StatusCode::UNAUTHORIZED));
    let bad = run(h.gatewayctl_args(&["upstream", "test", &id, "-o", "json"])).await;
    assert_eq!(bad["healthy"], false);
    assert_eq!(bad["status_code"], 401);
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .contains("rejected its API key"),
        "{bad}"
    );
    // An on-demand probe reports; it does not change the recorded health.
    let got = h
        .admin()
        .await
        .get_upstream(v1::GetUpstreamRequest { id: up.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.health(), v1::UpstreamHealth::Unknown);
    h.shutdown().await;
}
