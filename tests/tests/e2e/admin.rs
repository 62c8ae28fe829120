//! The admin surface: key limits, user multipliers, usage summaries, tokens and the standard
//! gRPC services grpcurl relies on.

use clap::Parser;
use gateway_proto::{
    auth::BearerAuth,
    v1::{self, config_discovery_client::ConfigDiscoveryClient},
};
use gateway_tests::{Harness, body_bytes, body_json, codex_request};
use serde_json::Value;

async fn ctl(h: &Harness, args: &[&str]) -> Result<Value, String> {
    let cli =
        gatewayctl::Cli::try_parse_from(h.gatewayctl_args(args)).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    gatewayctl::run(cli, &mut out)
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&out).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_limits_multipliers_and_usage_summaries() {
    let mut h = Harness::start(1).await;
    h.add_upstream("pool-a", 0, 1).await;
    h.set_price("mock-model", 1_000_000, 0, 2_000_000).await;
    h.set_price("other-model", 0, 0, 0).await;
    let (alice, _) = h.add_user("alice", 10_000_000).await;
    let (bob, _) = h.add_user("bob", 10_000_000).await;
    let (alice_key, alice_secret, _) = h.add_key(alice.id).await;
    let (_, bob_secret, _) = h.add_key(bob.id).await;

    let uid = bob.id.to_string();
    let bob_json = ctl(
        &h,
        &["-o", "json", "user", "update", &uid, "--multiplier", "1.5"],
    )
    .await
    .unwrap();
    assert_eq!(bob_json["multiplier_ppm"], 1_500_000);

    let kid = alice_key.id.to_string();
    let key = ctl(
        &h,
        &[
            "-o",
            "json",
            "key",
            "update",
            &kid,
            "--models",
            "mock-model",
            "--rpm",
            "100",
            "--expires",
            "2999-01-01T00:00:00Z",
        ],
    )
    .await
    .unwrap();
    assert_eq!(key["models"], serde_json::json!(["mock-model"]));
    assert_eq!(key["rpm"], 100);
    assert_eq!(key["expires_at"], "2999-01-01T00:00:00.000Z");
    let key = ctl(
        &h,
        &[
            "-o",
            "json",
            "key",
            "update",
            &kid,
            "--no-rpm-limit",
            "--no-expiry",
        ],
    )
    .await
    .unwrap();
    assert!(key["rpm"].is_null() && key["expires_at"].is_null(), "{key}");
    // A zero is never taken for "remove" or "default": it is refused with the way to say it.
    let err = ctl(&h, &["key", "update", &kid, "--rpm", "0"])
        .await
        .unwrap_err();
    assert!(
        err.contains("rpm must be at least 1 (to remove the limit: gatewayctl key update ID --no-rpm-limit, or clear_rpm over the API)"),
        "{err}"
    );
    assert!(
        ctl(&h, &["key", "update", &kid, "--ip-allow", "10.0.0.0/33"])
            .await
            .unwrap_err()
            .contains("prefix")
    );
    assert!(
        ctl(&h, &["key", "update", "999999", "--rpm", "1"])
            .await
            .unwrap_err()
            .contains("not found")
    );
    // The same change over the API reports the version a data plane must reach.
    let latest = h
        .admin()
        .await
        .update_key(v1::UpdateKeyRequest {
            id: alice_key.id,
            models: Some(v1::StringList {
                values: vec!["mock-model".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    h.wait_applied(gateway_tests::version_of(&latest)).await;

    // The model allow-list is enforced by the data plane.
    let alice_auth = format!("Bearer {alice_secret}");
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", &alice_auth)],
            codex_request("other-model", false, "c"),
        )
        .await;
    assert_eq!(response.status(), 403);
    assert_eq!(
        body_json(response).await["error"]["code"],
        "model_not_allowed"
    );

    let bob_auth = format!("Bearer {bob_secret}");
    for auth in [&alice_auth, &bob_auth, &bob_auth] {
        let response = h
            .post(
                0,
                "/v1/responses",
                &[("authorization", auth)],
                codex_request("mock-model", false, "c"),
            )
            .await;
        assert_eq!(response.status(), 200);
        body_bytes(response).await;
    }
    h.wait_ingested(3).await;

    // Default mock usage: 1200 in (1000 cached), 300 out → 200·1 + 1000·0 + 300·2 = 800 µ.
    let by_user = ctl(&h, &["-o", "json", "usage", "summary", "--by", "user"])
        .await
        .unwrap();
    let rows = by_user.as_array().unwrap();
    let row = |id: i64| {
        rows.iter()
            .find(|r| r["group"].as_str() == Some(id.to_string().as_str()))
            .unwrap()
            .clone()
    };
    assert_eq!(row(alice.id)["requests"], 1);
    assert_eq!(row(alice.id)["cost_micros"], 800);
    assert_eq!(row(bob.id)["requests"], 2);
    assert_eq!(row(bob.id)["cost_micros"], 2 * 1_200, "bob pays 1.5×");
    let by_model = ctl(&h, &["-o", "json", "usage", "summary", "--by", "model"])
        .await
        .unwrap();
    assert_eq!(by_model[0]["group"], "mock-model");
    assert_eq!(by_model[0]["requests"], 3);
    assert_eq!(by_model[0]["cost_micros"], 3_200);
    let by_day = ctl(&h, &["-o", "json", "usage", "summary", "--by", "day"])
        .await
        .unwrap();
    assert_eq!(by_day[0]["group"].as_str().unwrap().len(), 10);
    let by_upstream = ctl(
        &h,
        &[
            "-o", "json", "usage", "summary", "--by", "upstream", "--user", &uid,
        ],
    )
    .await
    .unwrap();
    assert_eq!(by_upstream.as_array().unwrap().len(), 1);
    assert_eq!(by_upstream[0]["requests"], 2);
    let filtered = ctl(&h, &["-o", "json", "usage", "list", "--user", &uid])
        .await
        .unwrap();
    assert_eq!(filtered.as_array().unwrap().len(), 2);
    for (until, rows) in [("2000-01-01T00:00:00Z", 0), ("2999-01-01T00:00:00Z", 2)] {
        let bounded = ctl(
            &h,
            &[
                "-o", "json", "usage", "list", "--user", &uid, "--until", until,
            ],
        )
        .await
        .unwrap();
        assert_eq!(bounded.as_array().unwrap().len(), rows, "--until {until}");
    }
    for field in [
        "id",
        "request_id",
        "user_id",
        "key_id",
        "upstream_id",
        "model",
        "input_tokens",
        "cached_tokens",
        "output_tokens",
        "reasoning_tokens",
        "cost_micros",
        "estimated",
        "status",
        "stream",
    ] {
        assert!(
            filtered[0].get(field).is_some(),
            "usage event lacks {field}"
        );
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_separate_and_standard_services_need_none() {
    let h = Harness::start(0).await;
    let url = format!("http://{}", h.control_plane.as_ref().unwrap().addr);
    let channel = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();

    // The data-plane token cannot administer.
    let mut as_data_plane = v1::admin_service_client::AdminServiceClient::with_interceptor(
        channel.clone(),
        BearerAuth::new(&h.data_plane_token).unwrap(),
    );
    let err = as_data_plane
        .list_users(v1::ListUsersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    // The admin token cannot subscribe as a data plane.
    let mut discovery = ConfigDiscoveryClient::with_interceptor(
        channel.clone(),
        BearerAuth::new(&h.admin_token).unwrap(),
    );
    let subscribe = v1::DiscoveryRequest {
        kind: Some(v1::discovery_request::Kind::Subscribe(v1::Subscribe {
            node_id: "x".into(),
            last_version: 0,
        })),
    };
    let err = discovery
        .stream_config(tokio_stream::iter(vec![subscribe]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    // Usage reports and key usage take the data-plane token, not the admin token.
    let mut usage = v1::usage_service_client::UsageServiceClient::with_interceptor(
        channel.clone(),
        BearerAuth::new(&h.admin_token).unwrap(),
    );
    let err = usage
        .report_usage(v1::ReportUsageRequest { events: vec![] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut usage = v1::usage_service_client::UsageServiceClient::with_interceptor(
        channel.clone(),
        BearerAuth::new(&h.data_plane_token).unwrap(),
    );
    let reported = usage
        .report_usage(v1::ReportUsageRequest { events: vec![] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reported.inserted, 0);

    // Health and reflection answer without a token, as grpcurl expects.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "codex_gateway.v1.AdminService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"codex_gateway.v1.AdminService".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"codex_gateway.v1.ConfigDiscovery".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"codex_gateway.v1.UsageService".to_owned()),
        "{names:?}"
    );
    h.shutdown().await;
}
