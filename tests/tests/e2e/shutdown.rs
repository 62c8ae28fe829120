//! Graceful shutdown of a data plane, session affinity, and robustness against malformed
//! input.

use std::{collections::HashSet, sync::Arc};

use control_plane::config::Affinity;
use gateway_proto::ring::{Ring, RingMember};
use gateway_tests::{Behaviour, Harness, body_bytes, codex_request, read_until};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_open_streams_finish_and_flushes_their_usage() {
    let mut h = Harness::start(1).await;
    h.add_upstream("pool-a", 0, 1).await;
    let (user, _) = h.add_user("mia", 10_000_000).await;
    let (_, secret, version) = h.add_key(user.id).await;
    h.wait_applied(version).await;
    let gate = Arc::new(tokio::sync::Notify::new());
    h.mock.queue(Behaviour {
        gate: Some(gate.clone()),
        ..Behaviour::default()
    });
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
    let mut body = response.into_body();
    let mut seen = read_until(&mut body, "word0").await;
    assert!(seen.contains("word0"), "the stream is open: {seen}");

    // SIGTERM while the stream is open: it is allowed to finish.
    let mut dp = h.data_planes.remove(0);
    let addr = dp.addr;
    dp.signal_shutdown();
    // The listener closes: new connections are refused.
    let mut refused = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(refused, "the data plane stops accepting");
    gate.notify_one();
    let rest = body.collect().await.expect("stream finishes").to_bytes();
    seen.push_str(&String::from_utf8_lossy(&rest));
    assert!(seen.contains("response.completed"));
    dp.stop().await;
    // Its usage was flushed before exit and reaches the ledger.
    h.wait_ingested(1).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_a_stream_its_client_left_and_bills_the_upstreams_usage() {
    let mut h = Harness::start(1).await;
    h.add_upstream("pool-a", 0, 1).await;
    let (user, _) = h.add_user("liv", 10_000_000).await;
    let (_, secret, version) = h.add_key(user.id).await;
    h.wait_applied(version).await;
    // A stream of about two seconds, well inside the harness's 5 s grace period.
    h.mock.queue(Behaviour {
        deltas: 200,
        gap: Some(std::time::Duration::from_millis(10)),
        ..Behaviour::default()
    });
    let auth = format!("Bearer {secret}");
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", &auth)],
            codex_request("mock-model", true, "leave"),
        )
        .await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let seen = read_until(&mut body, "word0").await;
    assert!(seen.contains("word0"), "the stream is open: {seen}");
    // The client leaves; the data plane reads on for the upstream's own usage.
    drop(body);
    let mut dp = h.data_planes.remove(0);
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while dp.drains.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the abandoned stream is being drained");

    // SIGTERM while the upstream is still streaming: shutdown waits for the drain.
    dp.signal_shutdown();
    dp.stop().await;
    h.wait_ingested(1).await;
    let pool = h.db.pool().await;
    let rows: Vec<(String, i64, i64, i64, bool)> = sqlx::query_as(
        "SELECT status, input_tokens, cached_tokens, output_tokens, estimated FROM usage_events WHERE user_id = $1",
    )
    .bind(user.id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![("client_cancelled".to_owned(), 1200, 1000, 300, false)],
        "billed exactly once, from the upstream's usage"
    );
    pool.close().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_still_open_when_the_grace_period_ends_is_closed_and_billed() {
    let mut h = Harness::start(1).await;
    // The upstream's idle timeout is well past the 5 s grace period: it is the grace period
    // that ends this stream, not the upstream going quiet.
    let mut upstream = h.upstream_request("pool-a", 0, 1);
    upstream.timeout_ms = Some(60_000);
    h.create_upstream(upstream).await;
    let (user, _) = h.add_user("max", 10_000_000).await;
    let (_, secret, version) = h.add_key(user.id).await;
    h.wait_applied(version).await;
    // The upstream stalls after its first output and never finishes.
    let gate = Arc::new(tokio::sync::Notify::new());
    h.mock.queue(Behaviour {
        gate: Some(gate.clone()),
        ..Behaviour::default()
    });
    let auth = format!("Bearer {secret}");
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", &auth)],
            codex_request("mock-model", true, "stall"),
        )
        .await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let seen = read_until(&mut body, "word0").await;
    assert!(seen.contains("word0"), "the stream is open: {seen}");

    // SIGTERM; the client keeps listening past the harness's 5 s grace period.
    let mut dp = h.data_planes.remove(0);
    dp.signal_shutdown();
    dp.stop().await;
    h.wait_ingested(1).await;
    let pool = h.db.pool().await;
    let rows: Vec<(String, bool, i64)> = sqlx::query_as(
        "SELECT status, estimated, output_tokens FROM usage_events WHERE user_id = $1",
    )
    .bind(user.id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![("client_cancelled".to_owned(), true, 25)],
        "billed once, estimated from the one delta it streamed"
    );
    drop(body);
    pool.close().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_session_affinity_keeps_each_session_on_its_own_upstream() {
    let mut h = Harness::start_with(1, Affinity::UserSession).await;
    let (a, _) = h.add_upstream("pool-a", 0, 1).await;
    let (b, _) = h.add_upstream("pool-b", 0, 1).await;
    let (user, _) = h.add_user("noah", 100_000_000).await;
    let (_, secret, version) = h.add_key(user.id).await;
    h.wait_applied(version).await;
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
    let auth = format!("Bearer {secret}");
    let mut used = HashSet::new();
    for i in 0..20 {
        let session = format!("session-{i}");
        let expected = ring
            .pick(
                format!("user:{}|session:{session}", user.id).as_bytes(),
                |_| true,
            )
            .unwrap();
        let expected = if expected == a.id { "pool-a" } else { "pool-b" };
        for header in ["session_id", "session-id"] {
            let before = h.mock.recorded().len();
            let response = h
                .post(
                    0,
                    "/v1/responses",
                    &[("authorization", &auth), (header, &session)],
                    codex_request("mock-model", false, "other"),
                )
                .await;
            assert_eq!(response.status(), 200);
            body_bytes(response).await;
            let got = h.mock.recorded()[before]
                .path
                .split('/')
                .nth(1)
                .unwrap()
                .to_owned();
            assert_eq!(got, expected, "session {session} via {header}");
            used.insert(got);
        }
    }
    assert_eq!(
        used.len(),
        2,
        "different sessions of one user spread over upstreams"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_truncated_requests_do_not_hurt_the_data_plane() {
    let mut h = Harness::start(1).await;
    h.add_upstream("pool-a", 0, 1).await;
    let (user, _) = h.add_user("olga", 10_000_000).await;
    let (_, secret, version) = h.add_key(user.id).await;
    h.wait_applied(version).await;
    let auth = format!("Bearer {secret}");

    // A body cut short by a client that goes away.
    let mut conn = tokio::net::TcpStream::connect(h.data_planes[0].addr)
        .await
        .unwrap();
    let head = format!(
        "POST /v1/responses HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\ncontent-type: application/json\r\ncontent-length: 5000\r\n\r\n{{\"model\":\"mock"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest).await;

    // Garbage that is not HTTP at all.
    let mut conn = tokio::net::TcpStream::connect(h.data_planes[0].addr)
        .await
        .unwrap();
    conn.write_all(b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest).await;

    // A JSON body sent with the wrong content type is still read as JSON.
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", &auth), ("content-type", "text/plain")],
            codex_request("mock-model", false, "c"),
        )
        .await;
    assert_eq!(response.status(), 200);
    body_bytes(response).await;
    // Non-UTF-8 bytes where JSON is expected.
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", &auth)],
            vec![0xff, 0xfe, 0x00],
        )
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        h.mock.recorded().len(),
        1,
        "only the well-formed request reached the upstream"
    );
    assert_eq!(h.get(0, "/healthz").await.status(), 200);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_redis_never_took_goes_to_the_control_plane_at_shutdown() {
    // In Kubernetes the spool lives on an emptyDir: a pod that stops while Redis is down must
    // not take its usage with it.
    let mut redis = gateway_tests::faults::RedisServer::start().await;
    let mut h = Harness::start_opts(gateway_tests::HarnessOptions {
        data_planes: 1,
        redis_url: Some(redis.url()),
        ..gateway_tests::HarnessOptions::default()
    })
    .await;
    h.add_upstream("pool-a", 0, 1).await;
    let (user, _) = h.add_user("sol", 10_000_000).await;
    let (_, secret, version) = h.add_key(user.id).await;
    h.wait_applied(version).await;
    redis.stop().await;
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", &format!("Bearer {secret}"))],
            codex_request("mock-model", true, "c"),
        )
        .await;
    assert_eq!(response.status(), 200);
    body_bytes(response).await;
    let dp = h.data_planes.remove(0);
    dp.stop().await;
    // Redis never came back: the control plane took the event over ReportUsage.
    h.wait_ingested(1).await;
    let pool = h.db.pool().await;
    let (rows, user_rows): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE user_id = $1) FROM usage_events")
            .bind(user.id)
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    assert_eq!((rows, user_rows), (1, 1));
    // Events that arrive over ReportUsage count in the ledger's metrics like consumed ones.
    let metrics = body_bytes(h.get_control_plane("/metrics").await).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("codex_gateway_ledger_events_total 1\n"),
        "{metrics}"
    );
    h.shutdown().await;
}
