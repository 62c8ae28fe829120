//! Key limits and client protection: IP allow-lists (behind a trusted load balancer too),
//! requests per minute, concurrent streams, expiry and slow request bodies.

use std::{sync::Arc, time::Duration};

use gateway_proto::v1;
use gateway_tests::{
    Behaviour, DataPlaneOptions, Harness, body_bytes, codex_request, fake_control_plane,
};
use http_body_util::BodyExt;

async fn key_with(h: &mut Harness, request: v1::CreateKeyRequest) -> String {
    let created = h.admin().await.create_key(request).await.unwrap();
    h.wait_applied(gateway_tests::version_of(&created)).await;
    format!("Bearer {}", created.into_inner().secret)
}

async fn status_of(
    h: &Harness,
    dp: usize,
    auth: &str,
    extra: &[(&str, &str)],
) -> (u16, serde_json::Value, Option<String>) {
    let mut headers = vec![("authorization", auth)];
    headers.extend_from_slice(extra);
    let response = h
        .post(
            dp,
            "/v1/responses",
            &headers,
            codex_request("mock-model", false, "c"),
        )
        .await;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let json = serde_json::from_slice(&body_bytes(response).await).unwrap_or_default();
    (status, json, retry_after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_allow_lists_use_the_peer_or_a_trusted_proxys_forwarded_for() {
    let mut h = Harness::start(1).await;
    h.start_data_plane_opts(DataPlaneOptions {
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..DataPlaneOptions::default()
    })
    .await;
    h.add_upstream("pool-a", 0, 1).await;
    let (user, _) = h.add_user("ines", 10_000_000).await;
    let office = key_with(
        &mut h,
        v1::CreateKeyRequest {
            user_id: user.id,
            ip_allow: vec!["10.0.0.0/8".into()],
            ..Default::default()
        },
    )
    .await;
    let local = key_with(
        &mut h,
        v1::CreateKeyRequest {
            user_id: user.id,
            ip_allow: vec!["127.0.0.1".into()],
            ..Default::default()
        },
    )
    .await;

    let (status, json, _) = status_of(&h, 0, &office, &[]).await;
    assert_eq!(status, 403);
    assert_eq!(json["error"]["code"], "ip_not_allowed");
    assert_eq!(status_of(&h, 0, &local, &[]).await.0, 200);
    // Data plane 0 does not trust its peer: a forged header changes nothing.
    assert_eq!(
        status_of(&h, 0, &office, &[("x-forwarded-for", "10.1.1.1")])
            .await
            .0,
        403
    );
    // Data plane 1 sits behind a trusted balancer on loopback.
    assert_eq!(
        status_of(&h, 1, &office, &[("x-forwarded-for", "10.1.1.1")])
            .await
            .0,
        200
    );
    assert_eq!(
        status_of(&h, 1, &office, &[("x-forwarded-for", "192.168.1.1")])
            .await
            .0,
        403
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_minute_are_limited_with_retry_after() {
    let mut h = Harness::start(1).await;
    h.add_upstream("pool-a", 0, 1).await;
    let (user, _) = h.add_user("jack", 10_000_000).await;
    let auth = key_with(
        &mut h,
        v1::CreateKeyRequest {
            user_id: user.id,
            rpm: Some(2),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(status_of(&h, 0, &auth, &[]).await.0, 200);
    assert_eq!(status_of(&h, 0, &auth, &[]).await.0, 200);
    let (status, json, retry_after) = status_of(&h, 0, &auth, &[]).await;
    assert_eq!(status, 429);
    assert_eq!(json["error"]["code"], "rate_limit_exceeded");
    let after: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&after), "{after}");
    assert_eq!(h.mock.recorded().len(), 2);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_are_limited_and_freed_when_a_stream_ends() {
    let mut h = Harness::start(1).await;
    h.add_upstream("pool-a", 0, 1).await;
    let (user, _) = h.add_user("kate", 10_000_000).await;
    let auth = key_with(
        &mut h,
        v1::CreateKeyRequest {
            user_id: user.id,
            concurrency: Some(1),
            ..Default::default()
        },
    )
    .await;
    let gate = Arc::new(tokio::sync::Notify::new());
    h.mock.queue(Behaviour {
        gate: Some(gate.clone()),
        ..Behaviour::default()
    });
    let open = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", &auth)],
            codex_request("mock-model", true, "c"),
        )
        .await;
    assert_eq!(open.status(), 200);
    let (status, json, retry_after) = status_of(&h, 0, &auth, &[]).await;
    assert_eq!(status, 429);
    assert_eq!(json["error"]["code"], "concurrency_limit_exceeded");
    assert_eq!(retry_after.as_deref(), Some("1"));
    gate.notify_one();
    body_bytes(open).await;
    assert_eq!(status_of(&h, 0, &auth, &[]).await.0, 200);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_is_refused() {
    let mut h = Harness::start(0).await;
    let mut fake = fake_control_plane::FakeControlPlane::start().await;
    h.start_data_plane_with(fake.url()).await;
    let mut snapshot =
        fake_control_plane::snapshot(1, &h.mock.base_url("pool"), &["cgw-old", "cgw-new"]);
    snapshot.keys[0].expires_at_ms = 1_000; // 1970
    snapshot.keys[1].expires_at_ms = 32_503_680_000_000; // 3000
    fake.snapshots.send(snapshot).await.unwrap();
    fake.reply().await;
    let (status, json, _) = status_of(&h, 0, "Bearer cgw-old", &[]).await;
    assert_eq!(status, 401);
    assert_eq!(json["error"]["code"], "expired_api_key");
    assert_eq!(status_of(&h, 0, "Bearer cgw-new", &[]).await.0, 200);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_its_body_gets_408() {
    let mut h = Harness::start(0).await;
    h.start_data_plane_opts(DataPlaneOptions {
        body_timeout: Some(Duration::from_millis(300)),
        ..DataPlaneOptions::default()
    })
    .await;
    h.add_upstream("pool-a", 0, 1).await;
    let (user, _) = h.add_user("liam", 10_000_000).await;
    let (_, secret, version) = h.add_key(user.id).await;
    h.wait_applied(version).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<
        Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>,
    >(1);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::StreamBody<tokio_stream::wrappers::ReceiverStream<_>>>(
    );
    let request = http::Request::post(h.data_planes[0].url("/v1/responses"))
        .header("authorization", format!("Bearer {secret}"))
        .header("content-length", "1000")
        .body(http_body_util::StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap();
    tx.send(Ok(hyper::body::Frame::data(bytes::Bytes::from_static(
        b"{\"model\":",
    ))))
    .await
    .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 408);
    let json: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(json["error"]["code"], "request_timeout");
    drop(tx);
    assert!(h.mock.recorded().is_empty());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_or_idle_clients_are_disconnected_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut h = Harness::start(0).await;
    h.start_data_plane_opts(DataPlaneOptions {
        header_timeout: Some(Duration::from_millis(500)),
        ..DataPlaneOptions::default()
    })
    .await;
    let addr = h.data_planes[0].addr;
    // A head that never completes, and a connection that never sends anything.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /v1/responses HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    for (name, conn) in [("slow", &mut slow), ("idle", &mut idle)] {
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf)).await;
        assert!(
            closed.is_ok(),
            "the data plane closed the {name} connection"
        );
    }
    h.shutdown().await;
}
