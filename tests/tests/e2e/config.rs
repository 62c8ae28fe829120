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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_snapshot_never_replaces_the_last_good_one() {
    use gateway_tests::fake_control_plane::{FakeControlPlane, Reply, snapshot};

    let mut h = Harness::start(0).await;
    let mut fake = FakeControlPlane::start().await;
    h.start_data_plane_with(fake.url()).await;
    let base = h.mock.base_url("pool");
    fake.snapshots
        .send(snapshot(1, &base, &["cgw-good"]))
        .await
        .unwrap();
    assert_eq!(fake.reply().await, Reply::Ack(1));
    h.wait_applied(1).await;

    // Version 2 drops the key but its ring does not verify: it must be rejected whole.
    let mut broken = snapshot(2, &base, &[]);
    broken.rings[0].checksum ^= 0xdead;
    fake.snapshots.send(broken).await.unwrap();
    match fake.reply().await {
        Reply::Nack(2, reason) => assert!(reason.contains("checksum"), "{reason}"),
        other => panic!("expected a rejection of version 2, got {other:?}"),
    }
    // A stale version is rejected too.
    fake.snapshots.send(snapshot(1, &base, &[])).await.unwrap();
    assert_eq!(
        fake.reply().await,
        Reply::Ack(1),
        "the applied version itself is acknowledged, unchanged"
    );
    fake.snapshots.send(snapshot(0, &base, &[])).await.unwrap();
    assert!(matches!(fake.reply().await, Reply::Nack(0, _)));
    assert_eq!(*h.data_planes[0].applied.borrow(), 1);

    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", "Bearer cgw-good")],
            codex_request("mock-model", false, "c"),
        )
        .await;
    assert_eq!(response.status(), 200, "version 1 still serves");
    body_bytes(response).await;

    // A valid version 3 is applied.
    fake.snapshots.send(snapshot(3, &base, &[])).await.unwrap();
    assert_eq!(fake.reply().await, Reply::Ack(3));
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", "Bearer cgw-good")],
            codex_request("mock-model", false, "c"),
        )
        .await;
    assert_eq!(response.status(), 401);
    h.shutdown().await;
}

/// Where a restarted data plane finds its last good snapshot: a path of its own, or (no
/// flags at all) the default state directory under `HOME`.
#[derive(Debug, Clone, Copy)]
enum Kept {
    AtPath,
    ByDefault,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_plane_restarted_while_the_control_plane_is_down_serves_from_disk() {
    restarted_while_the_control_plane_is_down_serves_from_disk(Kept::AtPath).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_plane_with_default_flags_keeps_its_last_snapshot_and_serves_from_it() {
    restarted_while_the_control_plane_is_down_serves_from_disk(Kept::ByDefault).await;
}

async fn restarted_while_the_control_plane_is_down_serves_from_disk(kept: Kept) {
    use gateway_tests::DataPlaneOptions;

    let mut h = Harness::start(0).await;
    h.add_upstream("pool-a", 0, 1).await;
    let (user, _) = h.add_user("frank", 10_000_000).await;
    let (_, secret, version) = h.add_key(user.id).await;
    let dir = std::env::temp_dir().join(format!("cgw-dp-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let (path, options) = match kept {
        Kept::AtPath => {
            let path = dir.join("snapshot.pb");
            let options = DataPlaneOptions {
                snapshot_path: Some(path.clone()),
                ..DataPlaneOptions::default()
            };
            (path, options)
        }
        Kept::ByDefault => {
            let options = DataPlaneOptions {
                home: Some(dir.clone()),
                ..DataPlaneOptions::default()
            };
            (dir.join(".local/state/codex-gateway/snapshot.bin"), options)
        }
    };
    let cp_url = format!("http://{}", h.control_plane.as_ref().unwrap().addr);
    let options = || DataPlaneOptions {
        control_plane_url: Some(cp_url.clone()),
        snapshot_path: options.snapshot_path.clone(),
        home: options.home.clone(),
        ..DataPlaneOptions::default()
    };
    h.start_data_plane_opts(options()).await;
    h.wait_applied(version).await;
    h.data_planes[0].wait_persisted(version).await;
    assert!(path.is_file(), "the snapshot is kept at {}", path.display());

    h.stop_control_plane().await;
    let old = h.data_planes.remove(0);
    old.stop().await;
    h.start_data_plane_opts(options()).await;
    // Ready at once, from the file, with no control plane to talk to.
    assert_eq!(*h.data_planes[0].applied.borrow(), version);
    assert_eq!(h.get(0, "/readyz").await.status(), 200);
    let metrics = body_bytes(h.get(0, "/metrics").await).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains(&format!("codex_gateway_snapshot_version {version}\n")),
        "a restored snapshot is the one reported: {metrics}"
    );
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
    assert!(String::from_utf8_lossy(&body_bytes(response).await).contains("response.completed"));
    std::fs::remove_dir_all(&dir).unwrap();
    h.start_control_plane().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_control_plane_replicas_serve_the_same_versions() {
    let mut h = Harness::start(1).await;
    let replica = h.spawn_control_plane("replica-b").await;
    h.start_data_plane_with(replica.url()).await;
    h.add_upstream("pool-a", 0, 1).await;
    let (user, _) = h.add_user("gina", 10_000_000).await;

    // A change made through replica A reaches the data plane subscribed to replica B.
    let started = Instant::now();
    let (key, secret, version) = h.add_key(user.id).await;
    h.wait_applied(version).await;
    let propagation = started.elapsed();
    assert!(
        propagation < Duration::from_secs(1),
        "propagation took {propagation:?}"
    );
    eprintln!("key create → applied on both replicas' data planes in {propagation:?}");
    assert_eq!(
        *h.data_planes[0].applied.borrow(),
        *h.data_planes[1].applied.borrow()
    );

    // And one made through replica B reaches replica A's data plane.
    let channel = tonic::transport::Channel::from_shared(replica.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin_b = v1::admin_service_client::AdminServiceClient::with_interceptor(
        channel,
        gateway_proto::auth::BearerAuth::new(&h.admin_token).unwrap(),
    );
    let revoked = admin_b
        .revoke_key(v1::RevokeKeyRequest { id: key.id })
        .await
        .unwrap();
    let version = version_of(&revoked);
    h.wait_applied(version).await;
    let auth = format!("Bearer {secret}");
    for dp in 0..2 {
        let response = h
            .post(
                dp,
                "/v1/responses",
                &[("authorization", &auth)],
                codex_request("mock-model", false, "c"),
            )
            .await;
        assert_eq!(response.status(), 401, "data plane {dp}");
    }
    replica.stop().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_planes_reconnect_after_a_control_plane_restart() {
    let mut h = Harness::start(1).await;
    h.add_upstream("pool-a", 0, 1).await;
    let (user, _) = h.add_user("hank", 10_000_000).await;
    let (_, secret, version) = h.add_key(user.id).await;
    h.wait_applied(version).await;

    h.restart_control_plane_in_place().await;
    // A change made after the restart reaches the data plane over its new subscription.
    let (key, _, version) = h.add_key(user.id).await;
    h.wait_applied(version).await;
    let revoked = h
        .admin()
        .await
        .revoke_key(v1::RevokeKeyRequest { id: key.id })
        .await
        .unwrap();
    h.wait_applied(version_of(&revoked)).await;
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
    h.shutdown().await;
}
