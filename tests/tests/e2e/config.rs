//! Configuration distribution: versions that survive restarts, and changes that reach a
//! running data plane fast.

use std::time::{Duration, Instant};

use gateway_proto::v1;
use gateway_tests::{Harness, body_bytes, body_json, codex_request, version_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_key_is_refused_by_a_running_data_plane_within_one_second() {
    let mut h = Harness::start(1).await;
    h.add_upstream("pool-a", 0, 1).await;
    let (user, _) = h.add_user("bob", 10_000_000).await;
    let (key, secret, version) = h.add_key(user.id).await;
    h.wait_applied(version).await;
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

    let started = Instant::now();
    let revoked = h
        .admin()
        .await
        .revoke_key(v1::RevokeKeyRequest { id: key.id })
        .await
        .unwrap();
    let version = version_of(&revoked);
    assert!(revoked.into_inner().revoked);
    h.wait_applied(version).await;
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", &auth)],
            codex_request("mock-model", false, "c"),
        )
        .await;
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 401);
    assert_eq!(
        body_json(response).await["error"]["code"],
        "invalid_api_key"
    );
    assert!(
        elapsed < Duration::from_secs(1),
        "revocation took {elapsed:?}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_version_survives_a_control_plane_restart() {
    let mut h = Harness::start(0).await;
    h.add_upstream("pool-a", 0, 1).await;
    let (_, version) = h.add_user("carol", 1).await;
    h.stop_control_plane().await;
    h.start_control_plane().await;
    let (_, next) = h.add_user("dave", 1).await;
    assert_eq!(
        next,
        version + 1,
        "versions continue from Postgres, not from zero"
    );

    // A data plane that connects now gets the current snapshot at once, and it is ready.
    h.start_data_plane().await;
    h.wait_applied(next).await;
    assert_eq!(h.get(0, "/readyz").await.status(), 200);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_plane_without_a_snapshot_is_not_ready_and_refuses_with_503() {
    let mut h = Harness::start(0).await;
    // A control plane address where nothing listens.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    h.start_data_plane_with(url).await;
    assert_eq!(h.get(0, "/healthz").await.status(), 200);
    assert_eq!(h.get(0, "/readyz").await.status(), 503);
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", "Bearer cgw-x")],
            codex_request("mock-model", true, "c"),
        )
        .await;
    assert_eq!(response.status(), 503);
    assert_eq!(body_json(response).await["error"]["code"], "not_ready");
    h.shutdown().await;
}
