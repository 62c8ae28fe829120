//! The mock upstream fails in each way DESIGN §2.5/2.6 names; these tests assert what the
//! client sees and which upstreams received attempts, in which order.

use std::time::Duration;

use gateway_proto::v1;
use gateway_tests::{
    Behaviour, Fault, Harness, body_bytes, body_json, codex_request, fake_control_plane,
    read_until, request_id,
};
use http_body_util::BodyExt;

/// Two tier-0 pools and a user whose home is pool-a.
async fn two_pools(h: &mut Harness) -> (i64, i64, String) {
    let (a, _) = h.add_upstream("pool-a", 0, 1).await;
    let (b, _) = h.add_upstream("pool-b", 0, 1).await;
    let (_, secret, version) = h.user_homed_on(&[(a.id, 1), (b.id, 1)], a.id).await;
    h.wait_applied(version).await;
    (a.id, b.id, format!("Bearer {secret}"))
}

/// Pools in the order they received POSTs.
fn attempt_order(h: &Harness) -> Vec<String> {
    h.mock
        .recorded()
        .into_iter()
        .filter(|r| r.method == http::Method::POST)
        .map(|r| r.path.split('/').nth(1).unwrap_or_default().to_owned())
        .collect()
}

async fn usage_rows(h: &mut Harness, n: u64) -> Vec<(String, i64, bool, i64, Option<i64>)> {
    h.wait_ingested(n).await;
    let pool = h.db.pool().await;
    let rows = sqlx::query_as(
        "SELECT status, cost_micros, estimated, output_tokens, upstream_id FROM usage_events ORDER BY started_at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_retry_the_same_upstream_then_fail_over() {
    let mut h = Harness::start(1).await;
    let (_, b, auth) = two_pools(&mut h).await;
    h.mock
        .set_pool_behaviour("pool-a", Some(Behaviour::fault(Fault::Status(503, None))));
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", &auth)],
            codex_request("mock-model", true, "c"),
        )
        .await;
    assert_eq!(response.status(), 200);
    let text = String::from_utf8_lossy(&body_bytes(response).await).into_owned();
    assert!(text.contains("response.completed"));
    // max_retries = 1: two attempts on pool-a, then pool-b.
    assert_eq!(attempt_order(&h), ["pool-a", "pool-a", "pool-b"]);
    let rows = usage_rows(&mut h, 1).await;
    assert_eq!(
        rows.len(),
        1,
        "one event for the request, not one per attempt"
    );
    assert_eq!(rows[0].0, "completed");
    assert_eq!(rows[0].4, Some(b));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_retry_after_cools_the_upstream_down_and_fails_over_at_once() {
    let mut h = Harness::start(1).await;
    let (_, _, auth) = two_pools(&mut h).await;
    h.mock.set_pool_behaviour(
        "pool-a",
        Some(Behaviour::fault(Fault::Status(429, Some(30)))),
    );
    for _ in 0..2 {
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
    }
    // One attempt on pool-a, then pool-b; the second request skips the cooling pool-a.
    assert_eq!(attempt_order(&h), ["pool-a", "pool-b", "pool-b"]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_retry_after_is_waited_out_on_the_same_upstream() {
    let mut h = Harness::start(1).await;
    let (_, _, auth) = two_pools(&mut h).await;
    h.mock
        .queue_for("pool-a", Behaviour::fault(Fault::Status(429, Some(1))));
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
    assert_eq!(attempt_order(&h), ["pool-a", "pool-a"]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_without_retry_after_is_retried_then_failed_over() {
    let mut h = Harness::start(1).await;
    let (_, _, auth) = two_pools(&mut h).await;
    h.mock
        .set_pool_behaviour("pool-a", Some(Behaviour::fault(Fault::Status(429, None))));
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
    assert_eq!(attempt_order(&h), ["pool-a", "pool-a", "pool-b"]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upstream_rate_limiting_gives_503_with_retry_after() {
    let mut h = Harness::start(1).await;
    let (_, _, auth) = two_pools(&mut h).await;
    for pool in ["pool-a", "pool-b"] {
        h.mock
            .set_pool_behaviour(pool, Some(Behaviour::fault(Fault::Status(429, Some(20)))));
    }
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", &auth)],
            codex_request("mock-model", false, "c"),
        )
        .await;
    assert_eq!(response.status(), 503);
    let after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&after), "{after}");
    assert_eq!(body_json(response).await["error"]["code"], "upstreams_busy");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_fail_over_to_the_next_tier() {
    let mut h = Harness::start(1).await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/dead", closed.local_addr().unwrap());
    drop(closed);
    let admin = h.admin().await;
    admin
        .clone()
        .create_upstream(v1::CreateUpstreamRequest {
            name: "dead".into(),
            base_url: dead_url,
            api_key: "sk-dead-key-123456".into(),
            priority: 0,
            max_retries: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    h.add_upstream("backup", 1, 1).await;
    let (user, _) = h.add_user("ivy", 10_000_000).await;
    let (_, secret, version) = h.add_key(user.id).await;
    h.wait_applied(version).await;
    let auth = format!("Bearer {secret}");
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", &auth)],
            codex_request("mock-model", true, "c"),
        )
        .await;
    assert_eq!(response.status(), 200);
    body_bytes(response).await;
    assert_eq!(attempt_order(&h), ["backup"]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hang_before_the_head_times_out_and_fails_over() {
    let mut h = Harness::start(1).await;
    let (a, _, auth) = two_pools(&mut h).await;
    let updated = h
        .admin()
        .await
        .update_upstream(v1::UpdateUpstreamRequest {
            id: a,
            timeout_ms: Some(1_000),
            max_retries: Some(0),
            ..Default::default()
        })
        .await
        .unwrap();
    h.wait_applied(gateway_tests::version_of(&updated)).await;
    h.mock
        .set_pool_behaviour("pool-a", Some(Behaviour::fault(Fault::HangBeforeHead)));
    let started = std::time::Instant::now();
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", &auth)],
            codex_request("mock-model", true, "c"),
        )
        .await;
    assert_eq!(response.status(), 200);
    body_bytes(response).await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(attempt_order(&h), ["pool-a", "pool-b"]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_failed_before_output_is_retried_and_never_seen_by_the_client() {
    let mut h = Harness::start(1).await;
    let (_, b, auth) = two_pools(&mut h).await;
    h.mock
        .set_pool_behaviour("pool-a", Some(Behaviour::fault(Fault::FailedBeforeOutput)));
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", &auth)],
            codex_request("mock-model", true, "c"),
        )
        .await;
    assert_eq!(response.status(), 200);
    let text = String::from_utf8_lossy(&body_bytes(response).await).into_owned();
    assert!(!text.contains("response.failed"), "{text}");
    assert_eq!(
        text.matches("event: response.created").count(),
        1,
        "no splice of two streams"
    );
    assert!(text.contains("response.completed"));
    assert_eq!(attempt_order(&h), ["pool-a", "pool-a", "pool-b"]);
    let rows = usage_rows(&mut h, 1).await;
    assert_eq!((rows.len(), rows[0].4), (1, Some(b)));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_after_output_ends_with_a_terminal_error_event_and_no_retry() {
    let mut h = Harness::start(1).await;
    h.set_price("mock-model", 1_000_000, 0, 1_000_000).await;
    let (_, _, auth) = two_pools(&mut h).await;
    // Events: created, in_progress, item added, part added, delta (gate), delta | cut. The
    // gate makes sure output has reached the client before the upstream breaks.
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    h.mock.set_pool_behaviour(
        "pool-a",
        Some(Behaviour {
            gate: Some(gate.clone()),
            fault: Fault::CutAfter(6),
            ..Behaviour::default()
        }),
    );
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", &auth)],
            codex_request("mock-model", true, "c"),
        )
        .await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut seen = read_until(&mut body, "word0").await;
    assert!(seen.contains("word0"), "the stream is open: {seen}");
    gate.notify_one();
    let rest = body.collect().await.expect("rest").to_bytes();
    seen.push_str(&String::from_utf8_lossy(&rest));
    let text = seen;
    assert_eq!(text.matches("word0").count(), 1, "output is never repeated");
    assert!(!text.contains("response.completed"));
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    assert!(
        last.starts_with("event: response.failed"),
        "terminal error event: {last}"
    );
    assert!(!text.contains("internal.pool"));
    assert_eq!(
        attempt_order(&h),
        ["pool-a"],
        "never retried after the first byte"
    );
    let rows = usage_rows(&mut h, 1).await;
    let (status, cost, estimated, output, _) = rows[0].clone();
    assert_eq!(status, "upstream_error");
    assert!(
        estimated,
        "no usage reported: estimated from what was streamed"
    );
    let deltas = text.matches("event: response.output_text.delta").count() as i64;
    assert_eq!(output, deltas * 25);
    assert!(cost > 0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_usage_is_estimated_and_flagged() {
    let mut h = Harness::start(1).await;
    h.set_price("mock-model", 1_000_000, 0, 1_000_000).await;
    let (_, _, auth) = two_pools(&mut h).await;
    h.mock.set_behaviour(Behaviour {
        deltas: 8,
        fault: Fault::OmitUsage,
        ..Behaviour::default()
    });
    let body = codex_request("mock-model", true, "c");
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", &auth)],
            body.clone(),
        )
        .await;
    assert_eq!(response.status(), 200);
    body_bytes(response).await;
    let rows = usage_rows(&mut h, 1).await;
    let (status, cost, estimated, output, _) = rows[0].clone();
    assert_eq!(status, "completed");
    assert!(estimated);
    assert_eq!(output, 8 * 25);
    let input = body.len() as i64 / 4;
    assert_eq!(cost, ((input + output) * 1_000_000 + 500_000) / 1_000_000);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_client_errors_are_returned_scrubbed_without_retry() {
    let mut h = Harness::start(1).await;
    let (_, _, auth) = two_pools(&mut h).await;
    h.mock
        .set_pool_behaviour("pool-a", Some(Behaviour::fault(Fault::Status(400, None))));
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", &auth)],
            codex_request("mock-model", true, "c"),
        )
        .await;
    assert_eq!(response.status(), 400);
    assert!(!request_id(response.headers()).is_empty());
    let json = body_json(response).await;
    let message = json["error"]["message"].as_str().unwrap();
    assert!(
        !message.contains("internal.pool") && !message.contains("sk-internal"),
        "{message}"
    );
    assert!(message.contains("rejected"), "{message}");
    assert_eq!(attempt_order(&h), ["pool-a"]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_everywhere_end_in_502_and_a_zero_cost_event() {
    let mut h = Harness::start(1).await;
    let (_, _, auth) = two_pools(&mut h).await;
    h.mock
        .set_behaviour(Behaviour::fault(Fault::Status(500, None)));
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", &auth)],
            codex_request("mock-model", true, "c"),
        )
        .await;
    assert_eq!(response.status(), 502);
    let json = body_json(response).await;
    assert!(!json.to_string().contains("internal.pool"));
    assert_eq!(json["error"]["type"], "server_error");
    assert_eq!(attempt_order(&h), ["pool-a", "pool-a", "pool-b", "pool-b"]);
    let rows = usage_rows(&mut h, 1).await;
    assert_eq!((rows[0].0.as_str(), rows[0].1), ("upstream_error", 0));

    // An upstream that rejects its own key is an operator problem: 502, and it fails over.
    h.mock.set_behaviour(Behaviour::default());
    h.mock
        .set_pool_behaviour("pool-a", Some(Behaviour::fault(Fault::Status(401, None))));
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
    h.shutdown().await;
}

/// Upstream timeouts below the admin API's 1 s minimum come from a crafted snapshot.
async fn fast_timeout_gateway(
    h: &mut Harness,
    timeout_ms: u32,
) -> fake_control_plane::FakeControlPlane {
    let mut fake = fake_control_plane::FakeControlPlane::start().await;
    h.start_data_plane_with(fake.url()).await;
    let mut snapshot = fake_control_plane::snapshot(1, &h.mock.base_url("pool"), &["cgw-fast"]);
    snapshot.upstreams[0].timeout_ms = timeout_ms;
    fake.snapshots.send(snapshot).await.unwrap();
    assert_eq!(fake.reply().await, fake_control_plane::Reply::Ack(1));
    fake
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_alive_stream_may_last_many_times_the_timeout() {
    let mut h = Harness::start(0).await;
    let _fake = fast_timeout_gateway(&mut h, 200).await;
    h.mock.set_behaviour(Behaviour {
        deltas: 20,
        gap: Some(Duration::from_millis(100)),
        ..Behaviour::default()
    });
    let started = std::time::Instant::now();
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", "Bearer cgw-fast")],
            codex_request("mock-model", true, "c"),
        )
        .await;
    assert_eq!(response.status(), 200);
    let text = String::from_utf8_lossy(&body_bytes(response).await).into_owned();
    let lasted = started.elapsed();
    assert!(text.contains("response.completed"), "{text}");
    assert!(!text.contains("response.failed"));
    assert!(
        lasted >= Duration::from_millis(2_000),
        "the stream lasted {lasted:?}, 10× the timeout"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_before_any_output_is_retried_then_reported_as_504() {
    let mut h = Harness::start(0).await;
    let _fake = fast_timeout_gateway(&mut h, 200).await;
    h.mock.set_behaviour(Behaviour {
        deltas: 3,
        gap: Some(Duration::from_millis(600)),
        ..Behaviour::default()
    });
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", "Bearer cgw-fast")],
            codex_request("mock-model", true, "c"),
        )
        .await;
    // The first gap comes after created: the prefetch waits out at most one timeout, so this
    // is retried while nothing has been sent, and ends as 504 for the client.
    assert_eq!(response.status(), 504);
    let json = body_json(response).await;
    assert_eq!(json["error"]["code"], "upstream_timeout");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_after_output_longer_than_the_timeout_ends_with_a_terminal_error_event() {
    let mut h = Harness::start(0).await;
    let _fake = fast_timeout_gateway(&mut h, 300).await;
    // The upstream goes quiet after its first delta and never resumes.
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    h.mock.set_behaviour(Behaviour {
        gate: Some(gate.clone()),
        ..Behaviour::default()
    });
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", "Bearer cgw-fast")],
            codex_request("mock-model", true, "c"),
        )
        .await;
    assert_eq!(response.status(), 200);
    let text = String::from_utf8_lossy(&body_bytes(response).await).into_owned();
    assert_eq!(text.matches("word0").count(), 1);
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("event: response.failed"), "{last}");
    assert!(last.contains("stopped sending"), "{last}");
    gate.notify_one();
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_failures_open_the_circuit_so_later_requests_skip_the_upstream() {
    let mut h = Harness::start(1).await;
    let (_, _, auth) = two_pools(&mut h).await;
    h.mock
        .set_pool_behaviour("pool-a", Some(Behaviour::fault(Fault::Status(502, None))));
    // Three requests, two attempts each on pool-a: the fifth failure opens its circuit.
    for _ in 0..3 {
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
    }
    let before = h.mock.posts("pool-a").len();
    assert_eq!(
        before, 5,
        "the circuit opened on the fifth consecutive failure"
    );
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
    assert_eq!(
        h.mock.posts("pool-a").len(),
        before,
        "an open circuit is skipped"
    );
    let metrics =
        String::from_utf8_lossy(&body_bytes(h.get(0, "/metrics").await).await).into_owned();
    assert!(
        metrics.contains(r#"codex_gateway_upstream_available{upstream="pool-a"} 0"#),
        "{metrics}"
    );
    h.shutdown().await;
}
