//! The request path: streaming, byte-for-byte forwarding, credentials, errors and billing.

use std::sync::Arc;

use gateway_tests::{
    Behaviour, EVENT_DEADLINE, Harness, MockUsage, body_bytes, body_json, codex_request, request_id,
};
use http_body_util::BodyExt;
use tokio::sync::Notify;

/// Prices of the test model: $1.25 in, $0.125 cached in, $10 out per 1M tokens.
const PRICE: (i64, i64, i64) = (1_250_000, 125_000, 10_000_000);

fn expected_cost(u: MockUsage) -> i64 {
    let per_million = (u.input - u.cached) as i128 * PRICE.0 as i128
        + u.cached as i128 * PRICE.1 as i128
        + u.output as i128 * PRICE.2 as i128;
    ((per_million + 500_000) / 1_000_000) as i64
}

/// A ledger row as the test reads it straight from Postgres.
#[derive(Debug, sqlx::FromRow)]
struct LedgerRow {
    input_tokens: i64,
    cached_tokens: i64,
    output_tokens: i64,
    reasoning_tokens: i64,
    cost_micros: i64,
    status: String,
    stream: bool,
    estimated: bool,
    upstream_id: Option<i64>,
}

async fn billed_setup(h: &mut Harness, balance: i64) -> (i64, i64, String) {
    let (up, _) = h.add_upstream("pool-a", 0, 1).await;
    h.set_price("mock-model", PRICE.0, PRICE.1, PRICE.2).await;
    let (user, _) = h.add_user("alice", balance).await;
    let (key, secret, version) = h.add_key(user.id).await;
    h.wait_applied(version).await;
    assert_eq!(key.user_id, user.id);
    (up.id, user.id, secret)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_response_arrives_unbuffered_byte_exact_and_is_billed_once() {
    let mut h = Harness::start(1).await;
    let (upstream_id, user_id, secret) = billed_setup(&mut h, 10_000_000).await;
    let gate = Arc::new(Notify::new());
    let usage = MockUsage {
        input: 24_000,
        cached: 20_000,
        output: 900,
        reasoning: 400,
    };
    h.mock.set_behaviour(Behaviour {
        usage,
        deltas: 8,
        gate: Some(gate.clone()),
        ..Behaviour::default()
    });

    let body = codex_request("mock-model", true, "conv-1");
    let auth = format!("Bearer {secret}");
    let response = h
        .post(
            0,
            "/v1/responses",
            &[
                ("authorization", &auth),
                ("accept", "text/event-stream"),
                ("session_id", "conv-1"),
                ("conversation_id", "conv-1"),
                ("openai-beta", "responses=experimental"),
                ("originator", "codex_exec"),
                ("x-codex-window-id", "conv-1:0"),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert!(!request_id(response.headers()).is_empty());
    assert_eq!(response.headers()["content-type"], "text/event-stream");

    // The first output arrives while the upstream is still holding the rest back: the gateway
    // forwards chunks as they come rather than buffering the stream.
    let mut body_stream = response.into_body();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("response.output_text.delta") {
        let frame = tokio::time::timeout(EVENT_DEADLINE, body_stream.frame())
            .await
            .expect("first event arrives before the upstream finishes")
            .expect("stream open")
            .expect("frame");
        if let Some(data) = frame.data_ref() {
            seen.extend_from_slice(data);
        }
    }
    assert!(!String::from_utf8_lossy(&seen).contains("response.completed"));
    gate.notify_one();
    let rest = body_stream
        .collect()
        .await
        .expect("rest of stream")
        .to_bytes();
    seen.extend_from_slice(&rest);
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("event: response.completed"), "{text}");
    assert_eq!(text.matches("response.output_text.delta").count(), 8 * 2);

    // The upstream got the client's exact bytes, its own key, and the client's headers.
    let recorded = h.mock.recorded();
    assert_eq!(recorded.len(), 1);
    let r = &recorded[0];
    assert_eq!(r.path, "/pool-a/v1/responses");
    assert_eq!(r.body, body, "body forwarded byte-for-byte");
    assert_eq!(r.authorization(), "Bearer sk-upstream-pool-a");
    assert!(!format!("{:?}", r.headers).contains(&secret));
    assert_eq!(r.headers["session_id"], "conv-1");
    assert_eq!(r.headers["conversation_id"], "conv-1");
    assert_eq!(r.headers["openai-beta"], "responses=experimental");
    assert_eq!(r.headers["originator"], "codex_exec");
    assert_eq!(r.headers["x-codex-window-id"], "conv-1:0");
    assert!(r.headers.get("x-request-id").is_some());

    // Exactly one usage row with the upstream's split, and the balance dropped by its cost.
    h.wait_ingested(1).await;
    let pool = h.db.pool().await;
    let rows: Vec<LedgerRow> = sqlx::query_as(
        "SELECT input_tokens, cached_tokens, output_tokens, reasoning_tokens, cost_micros, status, \
         stream, estimated, upstream_id FROM usage_events WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(
        (
            row.input_tokens,
            row.cached_tokens,
            row.output_tokens,
            row.reasoning_tokens
        ),
        (24_000, 20_000, 900, 400)
    );
    let cost = row.cost_micros;
    assert_eq!(cost, expected_cost(usage));
    assert_eq!(cost, 16_500); // 4k·1.25 + 20k·0.125 + 900·10 = 0.005 + 0.0025 + 0.009 dollars
    assert_eq!(row.status, "completed");
    assert!(row.stream && !row.estimated);
    assert_eq!(row.upstream_id, Some(upstream_id));
    let balance: i64 = sqlx::query_scalar("SELECT balance_micros FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(balance, 10_000_000 - cost);
    pool.close().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_streamed_response_is_forwarded_and_billed() {
    let mut h = Harness::start(1).await;
    let (_, user_id, secret) = billed_setup(&mut h, 5_000_000).await;
    let usage = MockUsage {
        input: 1_000,
        cached: 0,
        output: 50,
        reasoning: 0,
    };
    h.mock.set_behaviour(Behaviour {
        usage,
        ..Behaviour::default()
    });
    let body = codex_request("mock-model", false, "conv-2");
    // x-api-key is accepted as well as Authorization.
    let response = h
        .post(
            0,
            "/responses",
            &[("x-api-key", secret.as_str())],
            body.clone(),
        )
        .await;
    assert_eq!(response.status(), 200);
    let json = body_json(response).await;
    assert_eq!(json["status"], "completed");
    assert_eq!(json["usage"]["output_tokens"], 50);
    let recorded = h.mock.recorded();
    assert_eq!(recorded[0].body, body);
    assert_eq!(recorded[0].path, "/pool-a/v1/responses");
    assert!(recorded[0].headers.get("x-api-key").is_none());

    h.wait_ingested(1).await;
    let pool = h.db.pool().await;
    let (cost, stream, status): (i64, bool, String) =
        sqlx::query_as("SELECT cost_micros, stream, status FROM usage_events WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(cost, expected_cost(usage));
    assert_eq!(cost, 1_750);
    assert!(!stream);
    assert_eq!(status, "completed");
    let balance: i64 = sqlx::query_scalar("SELECT balance_micros FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(balance, 5_000_000 - cost);
    pool.close().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_key_and_exhausted_balance_get_openai_shaped_errors() {
    let mut h = Harness::start(1).await;
    h.add_upstream("pool-a", 0, 1).await;
    let (broke, _) = h.add_user("broke", 0).await;
    let (_, secret, version) = h.add_key(broke.id).await;
    h.wait_applied(version).await;

    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", "Bearer cgw-not-a-key")],
            codex_request("mock-model", true, "c"),
        )
        .await;
    assert_eq!(response.status(), 401);
    let rid = request_id(response.headers());
    let json = body_json(response).await;
    assert_eq!(json["error"]["code"], "invalid_api_key");
    assert_eq!(json["error"]["type"], "invalid_request_error");
    assert!(json["error"]["message"].is_string());
    assert_eq!(json["error"]["request_id"], rid.as_str());

    let response = h
        .post(
            0,
            "/v1/responses",
            &[],
            codex_request("mock-model", true, "c"),
        )
        .await;
    assert_eq!(response.status(), 401);

    let auth = format!("Bearer {secret}");
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", &auth)],
            codex_request("mock-model", true, "c"),
        )
        .await;
    assert_eq!(response.status(), 429);
    assert!(
        response.headers().get("retry-after").is_none(),
        "no Retry-After: retrying cannot help"
    );
    let json = body_json(response).await;
    assert_eq!(json["error"]["code"], "insufficient_quota");
    assert_eq!(json["error"]["type"], "insufficient_quota");
    assert!(
        h.mock.recorded().is_empty(),
        "refused requests never reach the upstream"
    );

    // A top-up lets the same key through once the snapshot carries it.
    let topped = h
        .admin()
        .await
        .adjust_balance(gateway_proto::v1::AdjustBalanceRequest {
            user_id: broke.id,
            amount_micros: 1_000_000,
            reason: "test".into(),
        })
        .await
        .unwrap();
    h.wait_applied(gateway_tests::version_of(&topped)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_client_errors_and_never_forwarded() {
    let mut h = Harness::start(1).await;
    let (_, _, secret) = billed_setup(&mut h, 1_000_000).await;
    let auth = format!("Bearer {secret}");
    for (body, code) in [
        (&b"{not json"[..], 400),
        (&br#"{"stream":true}"#[..], 400),
        (&br#"[1,2]"#[..], 400),
    ] {
        let response = h
            .post(
                0,
                "/v1/responses",
                &[("authorization", &auth)],
                body.to_vec(),
            )
            .await;
        assert_eq!(response.status(), code);
        let json = body_json(response).await;
        assert_eq!(json["error"]["type"], "invalid_request_error");
    }
    let response = h.get(0, "/v1/nope").await;
    assert_eq!(response.status(), 404);
    assert!(h.mock.recorded().is_empty());

    let response = h.get(0, "/healthz").await;
    assert_eq!(response.status(), 200);
    let response = h.get(0, "/readyz").await;
    assert_eq!(response.status(), 200);
    h.shutdown().await;
}

/// Every kind of answer, one after another, as a client sends them.
const ONE_OF_EACH: [(&str, &str); 4] = [
    (
        "/v1/responses",
        r#"{"model":"mock-model","stream":false,"input":"hi"}"#,
    ),
    (
        "/v1/responses",
        r#"{"model":"mock-model","stream":true,"input":"hi"}"#,
    ),
    (
        "/v1/chat/completions",
        r#"{"model":"mock-model","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    ),
    (
        "/v1/chat/completions",
        r#"{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}"#,
    ),
];

/// Sends every kind of answer once, one after another, each read to its end; every one must
/// succeed and carry the model's answer.
async fn one_of_each(h: &Harness, auth: &str) {
    for (path, body) in ONE_OF_EACH {
        let response = h
            .post(0, path, &[("authorization", auth)], body.to_owned())
            .await;
        assert_eq!(response.status(), 200, "{path} {body}");
        let text = String::from_utf8(body_bytes(response).await.to_vec()).unwrap();
        assert!(text.contains("mock-model"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_alive_and_reused_by_every_kind_of_answer() {
    let mut h = Harness::start(1).await;
    let (_, _, secret) = billed_setup(&mut h, 10_000_000).await;
    let auth = format!("Bearer {secret}");
    let before = h.mock.connections();
    one_of_each(&h, &auth).await;
    one_of_each(&h, &auth).await;
    // Eight answers read to the end, one at a time: one connection carried them all.
    assert_eq!(h.mock.connections() - before, 1);
    h.wait_ingested(8).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_upstream_closes_is_never_used_again() {
    let mut h = Harness::start(1).await;
    let (_, _, secret) = billed_setup(&mut h, 10_000_000).await;
    let auth = format!("Bearer {secret}");
    h.mock.set_behaviour(Behaviour {
        close_connection: true,
        ..Behaviour::default()
    });
    let before = h.mock.connections();
    one_of_each(&h, &auth).await;
    // Each answer said `Connection: close`: each request had a new connection, none failed.
    assert_eq!(h.mock.connections() - before, ONE_OF_EACH.len());
    h.mock.set_behaviour(Behaviour::default());
    one_of_each(&h, &auth).await;
    assert_eq!(h.mock.connections() - before, ONE_OF_EACH.len() + 1);
    h.shutdown().await;
}
