//! Model-aware routing: a model goes only to the upstreams that serve it, a model nobody
//! serves is refused before any upstream call and never billed, and every data plane picks
//! the same upstream for a user within each model's set.

use gateway_proto::v1;
use gateway_tests::{Behaviour, Fault, Harness, body_bytes, body_json, codex_request};

async fn post_model(h: &Harness, dp: usize, secret: &str, model: &str) -> http::StatusCode {
    let auth = format!("Bearer {secret}");
    let response = h
        .post(
            dp,
            "/v1/responses",
            &[("authorization", &auth)],
            codex_request(model, false, "c"),
        )
        .await;
    let status = response.status();
    body_bytes(response).await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_goes_only_to_the_pools_that_serve_it() {
    let mut h = Harness::start(1).await;
    h.add_upstream_serving("pool-mini", 0, 1, &["gpt-5-mini"])
        .await;
    h.add_upstream_serving("pool-codex", 0, 1, &["gpt-5.1-codex"])
        .await;
    let (user, _) = h.add_user("ada", 100_000_000).await;
    let (_, secret, _) = h.add_key(user.id).await;
    let version = h.set_price("*", 1_000_000, 100_000, 2_000_000).await;
    h.wait_applied(version).await;

    for _ in 0..5 {
        assert_eq!(post_model(&h, 0, &secret, "gpt-5-mini").await, 200);
        assert_eq!(post_model(&h, 0, &secret, "gpt-5.1-codex").await, 200);
    }
    let model_of = |r: &gateway_tests::Recorded| r.json()["model"].as_str().unwrap().to_owned();
    let mini: Vec<String> = h.mock.posts("pool-mini").iter().map(model_of).collect();
    let codex: Vec<String> = h.mock.posts("pool-codex").iter().map(model_of).collect();
    assert_eq!(mini, vec!["gpt-5-mini"; 5]);
    assert_eq!(codex, vec!["gpt-5.1-codex"; 5]);

    // Failover stays within the model's pools: pool-mini failing is not a reason to send
    // gpt-5-mini to pool-codex.
    h.mock.set_pool_behaviour(
        "pool-mini",
        Some(Behaviour::fault(Fault::Status(500, None))),
    );
    assert_eq!(post_model(&h, 0, &secret, "gpt-5-mini").await, 502);
    assert_eq!(h.mock.posts("pool-codex").len(), 5, "nothing failed over");
    h.mock.set_pool_behaviour("pool-mini", None);

    // A model no upstream serves: 404 in OpenAI's shape, before any upstream call.
    let before = h.mock.recorded().len();
    let auth = format!("Bearer {secret}");
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", &auth)],
            codex_request("gpt-9", true, "c"),
        )
        .await;
    assert_eq!(response.status(), 404);
    let body = body_json(response).await;
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(h.mock.recorded().len(), before, "no upstream was called");

    // The key sees the models some upstream serves (no upstream serves every model, so the
    // `*` price adds none).
    let models = body_json(
        h.get_with(0, "/v1/models", &[("authorization", &auth)])
            .await,
    )
    .await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gpt-5-mini", "gpt-5.1-codex"]);

    // A key's allow-list still applies first: a served model it may not use is 403.
    let response = h
        .admin()
        .await
        .create_key(v1::CreateKeyRequest {
            user_id: user.id,
            name: "mini-only".into(),
            models: vec!["gpt-5-mini".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let version = gateway_tests::version_of(&response);
    let limited = response.into_inner().secret;
    h.wait_applied(version).await;
    assert_eq!(post_model(&h, 0, &limited, "gpt-5.1-codex").await, 403);
    assert_eq!(post_model(&h, 0, &limited, "gpt-9").await, 403);

    // Billed: the ten answered requests and the failed one; never gpt-9.
    h.wait_ingested(11).await;
    let pool = h.db.pool().await;
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT model, COUNT(*) FROM usage_events GROUP BY model ORDER BY model")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![
            ("gpt-5-mini".to_owned(), 6),
            ("gpt-5.1-codex".to_owned(), 5)
        ]
    );
    pool.close().await;
    h.shutdown().await;
}

/// Each user's pool for `model` (the pool the mock saw last), asserting both data planes
/// agree.
async fn picks(h: &Harness, users: &[String], model: &str) -> Vec<String> {
    let mut picks = Vec::new();
    for secret in users {
        let mut seen = Vec::new();
        for dp in 0..2 {
            assert_eq!(post_model(h, dp, secret, model).await, 200);
            let last = h.mock.recorded().last().unwrap().path.clone();
            seen.push(last.split('/').nth(1).unwrap().to_owned());
        }
        assert_eq!(seen[0], seen[1], "both data planes pick alike for {model}");
        picks.push(seen.swap_remove(0));
    }
    picks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_data_plane_picks_alike_within_a_models_set_and_follows_a_models_change() {
    let mut h = Harness::start(2).await;
    let (a, _) = h.add_upstream("pool-a", 0, 1).await;
    h.add_upstream("pool-b", 0, 1).await;
    h.add_upstream_serving("pool-c", 0, 1, &["m2"]).await;
    let mut users = Vec::new();
    for i in 0..12 {
        let (user, _) = h.add_user(&format!("u{i}"), 100_000_000).await;
        let (_, secret, version) = h.add_key(user.id).await;
        h.wait_applied(version).await;
        users.push(secret);
    }
    let m1 = picks(&h, &users, "m1").await;
    assert!(
        m1.iter().all(|p| p != "pool-c"),
        "m1 never goes to pool-c: {m1:?}"
    );
    let m2 = picks(&h, &users, "m2").await;

    // pool-a now serves only m2: m1's users on pool-a move (to pool-b, the only other m1
    // pool), nobody else's m1 pick changes, and m2 is unaffected.
    let response = h
        .admin()
        .await
        .update_upstream(v1::UpdateUpstreamRequest {
            id: a.id,
            models: Some(v1::StringList {
                values: vec!["m2".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let version = gateway_tests::version_of(&response);
    for dp in &mut h.data_planes {
        dp.wait_applied(version).await;
    }
    let m1_after = picks(&h, &users, "m1").await;
    for (before, after) in m1.iter().zip(&m1_after) {
        let expected = if before == "pool-a" { "pool-b" } else { before };
        assert_eq!(after, expected);
    }
    assert_eq!(picks(&h, &users, "m2").await, m2);
    h.shutdown().await;
}
