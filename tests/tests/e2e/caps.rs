//! Key spending caps end to end: every endpoint counts toward them, a key at a cap is refused
//! by every data plane with the cap named, balances and caps both bind, and with the control
//! plane away each data plane overspends a cap by no more than its own in-flight requests —
//! on Postgres with Redis, and as standalone runs (SQLite, usage over `ReportUsage`).

use std::{sync::Arc, time::Duration};

use gateway_proto::v1;
use gateway_tests::{Behaviour, Harness, HarnessOptions, MockUsage, body_json, read_until};
use http_body_util::BodyExt;
use tokio::sync::Notify;

const USAGE: MockUsage = MockUsage {
    input: 1200,
    cached: 1000,
    output: 300,
    reasoning: 120,
};
/// What one request with [`USAGE`] costs at the price the tests set: 900 µ.
const EACH: i64 = 900;

/// Prices `gpt-5` so that one request costs [`EACH`] and makes the mock report [`USAGE`].
async fn priced(h: &Harness) {
    h.set_price("gpt-5", 1_000_000, 100_000, 2_000_000).await;
    h.mock.set_behaviour(Behaviour {
        usage: USAGE,
        ..Behaviour::default()
    });
}

/// Creates a key of `user_id` with these caps (`0.005/day`, `1.00`); returns it, its secret
/// and the version that carries it.
async fn add_capped_key(h: &Harness, user_id: i64, caps: &[&str]) -> (v1::Key, String, u64) {
    let response = h
        .admin()
        .await
        .create_key(v1::CreateKeyRequest {
            user_id,
            name: "capped".into(),
            spend_limits: caps.iter().map(|c| c.parse().unwrap()).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    let version = gateway_tests::version_of(&response);
    let created = response.into_inner();
    (created.key.unwrap(), created.secret, version)
}

fn body(path: &str, stream: bool) -> String {
    match path {
        "/v1/chat/completions" => format!(
            r#"{{"model":"gpt-5","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
        ),
        "/v1/completions" => format!(r#"{{"model":"gpt-5","stream":{stream},"prompt":"hi"}}"#),
        _ => format!(r#"{{"model":"gpt-5","stream":{stream},"input":"hi"}}"#),
    }
}

/// Sends one request of `gpt-5` to `path` on data plane `dp`.
async fn send(
    h: &Harness,
    dp: usize,
    auth: &str,
    path: &str,
    stream: bool,
) -> http::Response<hyper::body::Incoming> {
    h.post(dp, path, &[("authorization", auth)], body(path, stream))
        .await
}

/// Sends one request and reads its whole answer; its status and body.
async fn call(h: &Harness, dp: usize, auth: &str, path: &str, stream: bool) -> (u16, String) {
    let response = send(h, dp, auth, path, stream).await;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// The config version the store is at (Postgres).
async fn store_version(h: &Harness) -> u64 {
    let pool = h.db.pool().await;
    let version: i64 = sqlx::query_scalar("SELECT version FROM config_state")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    u64::try_from(version).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_counts_and_a_key_at_its_cap_is_refused_everywhere_with_the_cap_named() {
    let mut h = Harness::start(2).await;
    h.add_upstream("pool", 0, 1).await;
    priced(&h).await;
    let (user, _) = h.add_user("team", 1_000_000_000).await;
    // Six requests' worth a day, and a lifetime cap far above it.
    let (key, secret, version) = add_capped_key(&h, user.id, &["0.0054/day", "10.00"]).await;
    h.wait_applied(version).await;
    let auth = format!("Bearer {secret}");
    let endpoints = [
        ("/v1/responses", true),
        ("/v1/responses", false),
        ("/v1/chat/completions", true),
        ("/v1/chat/completions", false),
        ("/v1/completions", true),
        ("/v1/completions", false),
    ];
    for (path, stream) in endpoints {
        let (status, text) = call(&h, 0, &auth, path, stream).await;
        assert_eq!(status, 200, "{path} stream={stream}: {text}");
    }
    // At the cap: this data plane knows from its own count at once...
    let (status, text) = call(&h, 0, &auth, "/v1/responses", true).await;
    assert_eq!(status, 429, "{text}");
    // ...and once the ledger has the six events, the new snapshot tells the other.
    h.wait_ingested(6).await;
    let version = store_version(&h).await;
    h.wait_applied(version).await;
    let refused = send(&h, 1, &auth, "/v1/completions", false).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().get("retry-after").is_none());
    let json = body_json(refused).await;
    assert_eq!(json["error"]["code"], "insufficient_quota");
    assert_eq!(json["error"]["type"], "insufficient_quota");
    let message = json["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("spending limit of 0.0054/day (spent 0.0054)"),
        "{message}"
    );
    assert!(message.contains("room frees up at 20"), "{message}");

    // Every endpoint's event went to the key: six, 900 µ each, nothing from the refusals.
    let pool = h.db.pool().await;
    let endpoints: Vec<(String, i64)> = sqlx::query_as(
        "SELECT endpoint, cost_micros FROM usage_events WHERE key_id = $1 ORDER BY endpoint",
    )
    .bind(key.id)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_eq!(endpoints.len(), 6, "{endpoints:?}");
    assert!(endpoints.iter().all(|(_, cost)| *cost == EACH));

    // The key sees its caps; so does the operator, with the same figures.
    let usage = body_json(
        h.get_with(0, "/v1/usage", &[("authorization", &auth)])
            .await,
    )
    .await;
    let caps = usage["spend_limits"].as_array().unwrap();
    assert_eq!(caps.len(), 2, "{usage}");
    let day = caps.iter().find(|c| c["window"] == "day").unwrap();
    assert_eq!(day["limit_micros"], 5_400);
    assert_eq!(day["spent_micros"], 6 * EACH);
    assert_eq!(day["left_micros"], 0);
    let lifetime = caps.iter().find(|c| c["window"] == "lifetime").unwrap();
    assert_eq!(lifetime["left_micros"], 10_000_000 - 6 * EACH);
    assert_eq!(
        lifetime["frees_at_ms"], 0,
        "a lifetime cap never frees by itself"
    );
    // Spend of this hour leaves a day window 24 to 25 hours from now.
    let frees = day["frees_at_ms"].as_i64().unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    assert!(
        frees > now + 24 * 3_600_000 - 5_000 && frees <= now + 25 * 3_600_000,
        "frees at {frees}, now {now}"
    );
    let got = h
        .admin()
        .await
        .get_key(v1::GetKeyRequest { id: key.id })
        .await
        .unwrap()
        .into_inner();
    let got_day = got
        .spend_limits
        .iter()
        .find(|c| c.window == v1::SpendWindow::Day as i32)
        .unwrap();
    assert_eq!(
        (
            got_day.spent_micros,
            got_day.left_micros,
            got_day.frees_at_ms
        ),
        (6 * EACH, 0, frees)
    );

    // Raising the cap lets the key through again on every data plane. (Data plane 0 still
    // counts its own last seconds of spend on top of the snapshot's, which holds them too:
    // the settle margin errs toward refusing early, so the raise is well above 2 × spent.)
    let raised = h
        .admin()
        .await
        .update_key(v1::UpdateKeyRequest {
            id: key.id,
            spend_limits: Some(v1::SpendLimits {
                limits: vec!["0.02/day".parse().unwrap()],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let version = gateway_tests::version_of(&raised);
    let raised = raised.into_inner();
    assert_eq!(
        raised.spend_limits.len(),
        1,
        "the update replaced both caps"
    );
    assert_eq!(raised.spend_limits[0].left_micros, 20_000 - 6 * EACH);
    h.wait_applied(version).await;
    for dp in 0..2 {
        let (status, text) = call(&h, dp, &auth, "/v1/responses", false).await;
        assert_eq!(status, 200, "data plane {dp}: {text}");
    }

    // Balance and caps both apply: a key far from its cap is still refused once its user's
    // balance is gone, with the balance named, not the cap.
    let (poor, _) = h.add_user("poor", 100).await;
    let (_, poor_secret, version) = add_capped_key(&h, poor.id, &["5.00/week"]).await;
    h.wait_applied(version).await;
    let poor_auth = format!("Bearer {poor_secret}");
    assert_eq!(call(&h, 0, &poor_auth, "/v1/responses", false).await.0, 200);
    let (status, text) = call(&h, 0, &poor_auth, "/v1/responses", false).await;
    assert_eq!(status, 429);
    assert!(text.contains("balance is exhausted"), "{text}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_that_make_no_sense_are_refused_with_the_reason() {
    let h = Harness::start(0).await;
    let (user, _) = h.add_user("strict", 1_000_000).await;
    let admin = h.admin().await;
    let limit = |window: v1::SpendWindow, micros: i64| v1::SpendLimit {
        window: window as i32,
        limit_micros: micros,
    };
    let refused = |limits: Vec<v1::SpendLimit>| {
        let mut admin = admin.clone();
        async move {
            let status = admin
                .create_key(v1::CreateKeyRequest {
                    user_id: user.id,
                    spend_limits: limits,
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            status.message().to_owned()
        }
    };
    let twice = refused(vec![
        limit(v1::SpendWindow::Day, 5_000_000),
        limit(v1::SpendWindow::Day, 6_000_000),
    ])
    .await;
    assert_eq!(
        twice,
        "two spend limits for the day window (5.00/day and 6.00/day); give one per window"
    );
    let zero = refused(vec![limit(v1::SpendWindow::Week, 0)]).await;
    assert_eq!(zero, "spend limit 0.00/week must be above zero");
    let unknown = refused(vec![v1::SpendLimit {
        window: 42,
        limit_micros: 1,
    }])
    .await;
    assert!(unknown.contains("window 42 is not one of: lifetime, 5h, day, week, month"));
    let unspecified = refused(vec![limit(v1::SpendWindow::Unspecified, 1)]).await;
    assert!(unspecified.contains("window 0 is not one of"));
    // A refused update changes nothing.
    let (key, _, _) = add_capped_key(&h, user.id, &["1.00/5h"]).await;
    let status = admin
        .clone()
        .update_key(v1::UpdateKeyRequest {
            id: key.id,
            spend_limits: Some(v1::SpendLimits {
                limits: vec![limit(v1::SpendWindow::Month, -1)],
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let kept = admin
        .clone()
        .get_key(v1::GetKeyRequest { id: key.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.spend_limits.len(), 1);
    assert_eq!(
        kept.spend_limits[0].to_string(),
        "1.00/5h: 0.00 spent, 1.00 left"
    );
    h.shutdown().await;
}

/// With the control plane stopped, data plane 0 spends one request at a time and data plane
/// 1 has three in flight at once; each may spend what the cap left at the last snapshot plus
/// its own in-flight requests, and no more. Returns (cap, spent by 0, spent by 1).
async fn overspend_with_the_control_plane_away(standalone: bool) -> (i64, i64, i64) {
    let mut h = Harness::start_opts(HarnessOptions {
        data_planes: 2,
        standalone,
        ..HarnessOptions::default()
    })
    .await;
    h.add_upstream("pool", 0, 1).await;
    priced(&h).await;
    let (user, _) = h.add_user("away", 1_000_000_000).await;
    let cap = 1_000;
    let (key, secret, version) = add_capped_key(&h, user.id, &["0.001/day"]).await;
    h.wait_applied(version).await;
    let addr = h.control_plane_addr();
    h.stop_control_plane().await;
    let auth = format!("Bearer {secret}");

    // One at a time: 0 and 900 µ are under the cap, 1800 µ is not.
    assert_eq!(call(&h, 0, &auth, "/v1/responses", true).await.0, 200);
    assert_eq!(call(&h, 0, &auth, "/v1/responses", false).await.0, 200);
    let (status, text) = call(&h, 0, &auth, "/v1/chat/completions", false).await;
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("spending limit of 0.001/day"), "{text}");
    let spent_0 = 2 * EACH;

    // Three at once, each admitted before any has cost anything.
    let gates: Vec<Arc<Notify>> = (0..3).map(|_| Arc::new(Notify::new())).collect();
    for gate in &gates {
        h.mock.queue_for(
            "pool",
            Behaviour {
                usage: USAGE,
                gate: Some(gate.clone()),
                ..Behaviour::default()
            },
        );
    }
    let mut bodies = Vec::new();
    for _ in &gates {
        let response = send(&h, 1, &auth, "/v1/responses", true).await;
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        read_until(&mut body, "response.output_text.delta").await;
        bodies.push(body);
    }
    for gate in &gates {
        gate.notify_one();
    }
    for body in bodies {
        let rest = body.collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&rest).contains("response.completed"));
    }
    assert_eq!(call(&h, 1, &auth, "/v1/responses", false).await.0, 429);
    let spent_1 = 3 * EACH;

    // The control plane returns: the five events settle and the new snapshot carries the
    // key's spend, so both keep refusing on the ledger's word.
    let before = *h.data_planes[0].applied.borrow();
    h.start_control_plane_at(addr).await;
    h.wait_ingested(5).await;
    for dp in 0..2 {
        h.data_planes[dp].wait_applied(before + 1).await;
        assert_eq!(call(&h, dp, &auth, "/v1/responses", true).await.0, 429);
    }
    let got = h
        .admin()
        .await
        .get_key(v1::GetKeyRequest { id: key.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.spend_limits[0].spent_micros, spent_0 + spent_1);
    assert_eq!(got.spend_limits[0].left_micros, 0);
    h.shutdown().await;
    (cap, spent_0, spent_1)
}

fn report_overspend(backend: &str, (cap, spent_0, spent_1): (i64, i64, i64)) {
    // Each data plane: at most what the cap left (all of it) plus its in-flight requests.
    assert!(spent_0 - cap < EACH, "one in flight at a time");
    assert!(spent_1 - cap < 3 * EACH, "three in flight");
    eprintln!(
        "{backend}: cap {cap} µ, one request {EACH} µ; control plane away: data plane 0 \
         (1 in flight) spent {spent_0} µ (over by {}), data plane 1 (3 in flight) spent \
         {spent_1} µ (over by {}); fleet total {} µ",
        spent_0 - cap,
        spent_1 - cap,
        spent_0 + spent_1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overspend_is_bounded_by_in_flight_requests_on_postgres_and_redis() {
    let figures = overspend_with_the_control_plane_away(false).await;
    report_overspend("postgres+redis", figures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overspend_is_bounded_by_in_flight_requests_standalone() {
    let figures = tokio::time::timeout(
        Duration::from_secs(60),
        overspend_with_the_control_plane_away(true),
    )
    .await
    .expect("the standalone run finishes");
    report_overspend("standalone (sqlite, usage over ReportUsage)", figures);
}
