//! Every route of DESIGN §2 beyond `/v1/responses`: chat/completions and completions (usage
//! requested on the client's behalf and hidden again), models, the WebSocket refusal, limits.

use gateway_tests::{Behaviour, DataPlaneOptions, Harness, MockUsage, body_bytes, body_json};

async fn setup(h: &mut Harness) -> (i64, String) {
    h.add_upstream("pool-a", 0, 1).await;
    h.set_price("gpt-5", 1_000_000, 100_000, 2_000_000).await;
    let (user, _) = h.add_user("chatter", 10_000_000).await;
    let (_, secret, version) = h.add_key(user.id).await;
    h.wait_applied(version).await;
    (user.id, format!("Bearer {secret}"))
}

async fn ledger(h: &mut Harness) -> (i64, i64, i64, i64, i64) {
    h.wait_ingested(1).await;
    let pool = h.db.pool().await;
    let row = sqlx::query_as(
        "SELECT input_tokens, cached_tokens, output_tokens, reasoning_tokens, cost_micros FROM usage_events",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    row
}

const USAGE: MockUsage = MockUsage {
    input: 1000,
    cached: 400,
    output: 50,
    reasoning: 20,
};
// (600·1 + 400·0.1 + 50·2) µ per token-million → 600 + 40 + 100 = 740.
const COST: i64 = 740;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_stream_usage_is_requested_billed_and_hidden_from_the_client() {
    let mut h = Harness::start(1).await;
    let (_, auth) = setup(&mut h).await;
    h.mock.set_behaviour(Behaviour {
        usage: USAGE,
        deltas: 3,
        ..Behaviour::default()
    });
    let body = r#"{"model":"gpt-5","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let response = h
        .post(0, "/v1/chat/completions", &[("authorization", &auth)], body)
        .await;
    assert_eq!(response.status(), 200);
    let text = String::from_utf8_lossy(&body_bytes(response).await).into_owned();
    assert_eq!(text.matches("word").count(), 3);
    assert!(
        !text.contains("prompt_tokens"),
        "the usage chunk is hidden: {text}"
    );
    assert!(text.trim_end().ends_with("data: [DONE]"));
    let sent = h.mock.recorded()[0].json();
    assert_eq!(
        sent["stream_options"]["include_usage"], true,
        "requested upstream"
    );
    assert_eq!(ledger(&mut h).await, (1000, 400, 50, 20, COST));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_stream_that_asked_for_usage_is_untouched() {
    let mut h = Harness::start(1).await;
    let (_, auth) = setup(&mut h).await;
    h.mock.set_behaviour(Behaviour {
        usage: USAGE,
        ..Behaviour::default()
    });
    let body =
        r#"{"model":"gpt-5","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
    let response = h
        .post(0, "/v1/chat/completions", &[("authorization", &auth)], body)
        .await;
    assert_eq!(response.status(), 200);
    let text = String::from_utf8_lossy(&body_bytes(response).await).into_owned();
    assert!(text.contains("\"prompt_tokens\":1000"), "{text}");
    assert_eq!(
        h.mock.recorded()[0].body,
        body.as_bytes(),
        "forwarded byte-for-byte"
    );
    assert_eq!(ledger(&mut h).await.4, COST);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_json_and_completions_streams_are_billed() {
    let mut h = Harness::start(1).await;
    let (_, auth) = setup(&mut h).await;
    h.mock.set_behaviour(Behaviour {
        usage: USAGE,
        ..Behaviour::default()
    });
    let body = r#"{"model":"gpt-5","messages":[{"role":"user","content":"hi"}]}"#;
    let response = h
        .post(0, "/v1/chat/completions", &[("authorization", &auth)], body)
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(body_json(response).await["usage"]["completion_tokens"], 50);
    let body = r#"{"model":"gpt-5","stream":true,"prompt":"say"}"#;
    let response = h
        .post(0, "/v1/completions", &[("authorization", &auth)], body)
        .await;
    assert_eq!(response.status(), 200);
    let text = String::from_utf8_lossy(&body_bytes(response).await).into_owned();
    assert!(!text.contains("prompt_tokens"));
    let recorded = h.mock.recorded();
    assert_eq!(recorded[0].path, "/pool-a/v1/chat/completions");
    assert_eq!(recorded[1].path, "/pool-a/v1/completions");
    h.wait_ingested(2).await;
    let pool = h.db.pool().await;
    let costs: Vec<(String, i64, bool)> = sqlx::query_as(
        "SELECT endpoint, cost_micros, stream FROM usage_events ORDER BY started_at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_eq!(
        costs,
        vec![
            ("chat_completions".into(), COST, false),
            ("completions".into(), COST, true)
        ]
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_come_from_the_snapshot_and_websockets_get_426() {
    let mut h = Harness::start(1).await;
    let (user_id, auth) = setup(&mut h).await;
    let version = h.set_price("gpt-5-mini", 1, 1, 1).await;
    h.wait_applied(version).await;
    let response = h
        .get_with(0, "/v1/models", &[("authorization", &auth)])
        .await;
    assert_eq!(response.status(), 200);
    let ids: Vec<String> = body_json(response).await["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["gpt-5", "gpt-5-mini"]);
    let created = h
        .admin()
        .await
        .create_key(gateway_proto::v1::CreateKeyRequest {
            user_id,
            models: vec!["gpt-5-mini".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    h.wait_applied(gateway_tests::version_of(&created)).await;
    let limited = format!("Bearer {}", created.into_inner().secret);
    let response = h
        .get_with(0, "/v1/models", &[("authorization", &limited)])
        .await;
    assert_eq!(body_json(response).await["data"][0]["id"], "gpt-5-mini");
    assert_eq!(h.get(0, "/v1/models").await.status(), 401);

    let response = h
        .get_with(
            0,
            "/v1/responses",
            &[("upgrade", "websocket"), ("connection", "upgrade")],
        )
        .await;
    assert_eq!(response.status(), 426);
    assert!(response.headers().get("x-request-id").is_some());
    assert_eq!(
        body_json(response).await["error"]["code"],
        "websocket_not_supported"
    );
    assert_eq!(h.get(0, "/v1/responses").await.status(), 405);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_above_the_limit_get_413_whether_or_not_they_declare_a_length() {
    let mut h = Harness::start(0).await;
    h.start_data_plane_opts(DataPlaneOptions {
        max_body_bytes: Some(64 * 1024),
        ..DataPlaneOptions::default()
    })
    .await;
    let (_, auth) = setup(&mut h).await;
    let big = format!(
        r#"{{"model":"gpt-5","input":"{}"}}"#,
        "x".repeat(100 * 1024)
    );
    let response = h
        .post(0, "/v1/responses", &[("authorization", &auth)], big.clone())
        .await;
    assert_eq!(response.status(), 413);
    assert_eq!(
        body_json(response).await["error"]["code"],
        "request_too_large"
    );

    // Chunked, with no Content-Length: the limit still holds while reading.
    let (tx, rx) = tokio::sync::mpsc::channel::<
        Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>,
    >(4);
    let url = h.data_planes[0].url("/v1/responses");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::StreamBody<tokio_stream::wrappers::ReceiverStream<_>>>(
    );
    let request = http::Request::post(url)
        .header("authorization", &auth)
        .body(http_body_util::StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap();
    let sending = tokio::spawn(async move {
        for chunk in big.as_bytes().chunks(16 * 1024) {
            if tx
                .send(Ok(hyper::body::Frame::data(bytes::Bytes::copy_from_slice(
                    chunk,
                ))))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 413);
    sending.abort();
    assert!(h.mock.recorded().is_empty());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic() {
    let mut h = Harness::start(1).await;
    let (_, auth) = setup(&mut h).await;
    h.mock.set_behaviour(Behaviour {
        usage: USAGE,
        ..Behaviour::default()
    });
    h.mock.queue_for(
        "pool-a",
        Behaviour::fault(gateway_tests::Fault::Status(503, None)),
    );
    let body = r#"{"model":"gpt-5","stream":true,"input":"hi"}"#;
    let response = h
        .post(0, "/v1/responses", &[("authorization", &auth)], body)
        .await;
    assert_eq!(response.status(), 200);
    body_bytes(response).await;
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", "Bearer cgw-nope")],
            body,
        )
        .await;
    assert_eq!(response.status(), 401);

    let response = h.get(0, "/metrics").await;
    assert_eq!(response.status(), 200);
    let text = String::from_utf8_lossy(&body_bytes(response).await).into_owned();
    let has = |needle: &str| assert!(text.contains(needle), "missing {needle} in\n{text}");
    has(r#"codex_gateway_requests_total{route="responses",status="200"} 1"#);
    has(r#"codex_gateway_requests_total{route="responses",status="401"} 1"#);
    has(r#"codex_gateway_upstream_attempts_total{upstream="pool-a",outcome="server_error"} 1"#);
    has(r#"codex_gateway_upstream_attempts_total{upstream="pool-a",outcome="ok"} 1"#);
    has(r#"codex_gateway_retries_total{reason="server_error"} 1"#);
    has(r#"gen_ai_client_token_usage_total{token_type="input",model="gpt-5"} 600"#);
    has(r#"gen_ai_client_token_usage_total{token_type="cached_input",model="gpt-5"} 400"#);
    has(r#"gen_ai_client_token_usage_total{token_type="output",model="gpt-5"} 50"#);
    has(r#"codex_gateway_usage_events_total{status="completed"} 1"#);
    has(r#"codex_gateway_ttfb_seconds_count{endpoint="responses"} 1"#);
    has(r#"codex_gateway_upstream_in_flight{upstream="pool-a"} 0"#);
    has(r#"codex_gateway_upstream_available{upstream="pool-a"} 1"#);
    has(r#"codex_gateway_request_duration_seconds_count{endpoint="responses"} 1"#);
    let version = *h.data_planes[0].applied.borrow();
    has(&format!("codex_gateway_snapshot_version {version}"));
    has("codex_gateway_snapshot_age_seconds ");

    // The control plane's own: the ledger took the one billable event, state gauges follow
    // the snapshot, probes answer.
    h.wait_ingested(1).await;
    let response = h.get_control_plane("/metrics").await;
    assert_eq!(response.status(), 200);
    let text = String::from_utf8_lossy(&body_bytes(response).await).into_owned();
    let has = |needle: &str| assert!(text.contains(needle), "missing {needle} in\n{text}");
    has("codex_gateway_ledger_events_total 1\n");
    has("codex_gateway_ledger_batches_total ");
    has("codex_gateway_ledger_batch_duration_seconds_count ");
    has("codex_gateway_ledger_dead_letters_total 0\n");
    has("codex_gateway_usage_consumer_lag ");
    has("codex_gateway_usage_consumer_pending ");
    has(&format!("codex_gateway_snapshot_version {version}\n"));
    has(r#"codex_gateway_upstream_healthy{upstream="pool-a"} 1"#);
    has("codex_gateway_health_leader ");
    // A fresh database: every migration was applied by this process (its first start).
    has(&format!(
        "codex_gateway_migrations_applied_total {}\n",
        control_plane::store::POSTGRES_MIGRATIONS
    ));
    has("codex_gateway_usage_retention_deleted_total 0\n");
    has("codex_gateway_usage_retention_running 0\n");
    for (path, status) in [("/healthz", 200), ("/readyz", 200), ("/nope", 404)] {
        assert_eq!(h.get_control_plane(path).await.status(), status, "{path}");
    }

    // A model the snapshot does not name (the pool serves any) is counted under one label:
    // made-up names cannot grow the token metric's series.
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", &auth)],
            r#"{"model":"made-up-model-7","stream":true,"input":"hi"}"#,
        )
        .await;
    assert_eq!(response.status(), 200);
    body_bytes(response).await;
    let response = h.get(0, "/metrics").await;
    let text = String::from_utf8_lossy(&body_bytes(response).await).into_owned();
    assert!(
        text.contains(r#"gen_ai_client_token_usage_total{token_type="output",model="other"} 50"#),
        "{text}"
    );
    assert!(!text.contains("made-up-model-7"), "{text}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_is_forwarded_byte_for_byte_from_every_alias() {
    let mut h = Harness::start(1).await;
    let (_, auth) = setup(&mut h).await;
    let body = "{\"model\":\"gpt-5\", \"input\": []}\n";
    for path in [
        "/v1/responses/compact",
        "/backend-api/codex/responses/compact",
        "/openai/v1/responses",
    ] {
        let response = h.post(0, path, &[("authorization", &auth)], body).await;
        assert_eq!(response.status(), 200, "{path}");
        body_bytes(response).await;
    }
    let recorded = h.mock.recorded();
    assert_eq!(recorded[0].path, "/pool-a/v1/responses/compact");
    assert_eq!(recorded[1].path, "/pool-a/v1/responses/compact");
    assert_eq!(recorded[2].path, "/pool-a/v1/responses");
    assert!(recorded.iter().all(|r| r.body == body.as_bytes()));
    h.shutdown().await;
}
