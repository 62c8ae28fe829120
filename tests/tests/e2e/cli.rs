//! `gatewayctl` against a real control plane: every command's `-o json` carries the field
//! names scripts rely on (DESIGN §8), and validation errors reach the operator.

use clap::Parser;
use gateway_tests::Harness;
use gatewayctl::Cli;
use serde_json::Value;

async fn ctl(h: &Harness, args: &[&str]) -> Result<Value, String> {
    let cli = Cli::try_parse_from(h.gatewayctl_args(args)).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    gatewayctl::run(cli, &mut out)
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&out).map_err(|e| {
        format!(
            "not one JSON document: {e}: {}",
            String::from_utf8_lossy(&out)
        )
    })
}

async fn ctl_text(h: &Harness, args: &[&str]) -> String {
    let cli = Cli::try_parse_from(h.gatewayctl_args(args)).unwrap();
    let mut out = Vec::new();
    gatewayctl::run(cli, &mut out).await.unwrap();
    String::from_utf8(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gatewayctl_json_output_carries_the_documented_fields() {
    let h = Harness::start(0).await;
    let base = h.mock.base_url("pool-a");

    let up = ctl(
        &h,
        &[
            "-o",
            "json",
            "upstream",
            "add",
            "--name",
            "pool-a",
            "--base-url",
            &base,
            "--api-key",
            "sk-live-abcdefghijkl",
            "--priority",
            "0",
            "--weight",
            "2",
        ],
    )
    .await
    .unwrap();
    for field in [
        "id", "name", "base_url", "priority", "weight", "enabled", "health",
    ] {
        assert!(up.get(field).is_some(), "upstream lacks {field}: {up}");
    }
    assert_eq!(up["weight"], 2);
    assert_eq!(up["enabled"], true);
    assert!(
        !up.to_string().contains("sk-live-abcdefghijkl"),
        "API keys are write-only"
    );
    let id = up["id"].as_i64().unwrap().to_string();

    // -o is global: accepted after the subcommand too.
    let list = ctl(&h, &["upstream", "list", "-o", "json"]).await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let got = ctl(&h, &["upstream", "get", &id, "-o", "json"])
        .await
        .unwrap();
    assert_eq!(got["name"], "pool-a");
    let disabled = ctl(&h, &["-o", "json", "upstream", "disable", &id])
        .await
        .unwrap();
    assert_eq!(disabled["enabled"], false);
    let updated = ctl(
        &h,
        &[
            "-o",
            "json",
            "upstream",
            "update",
            &id,
            "--weight",
            "5",
            "--priority",
            "1",
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        (updated["weight"].as_i64(), updated["priority"].as_i64()),
        (Some(5), Some(1))
    );

    let err = ctl(
        &h,
        &[
            "upstream",
            "add",
            "--name",
            "bad",
            "--base-url",
            "https://pool.example.com/openai/v1",
            "--api-key",
            "k",
        ],
    )
    .await
    .unwrap_err();
    assert!(err.contains("appends /v1"), "{err}");
    assert!(err.contains("https://pool.example.com/openai"), "{err}");
    let err = ctl(
        &h,
        &[
            "upstream",
            "add",
            "--name",
            "pool-a",
            "--base-url",
            &base,
            "--api-key",
            "k2",
        ],
    )
    .await
    .unwrap_err();
    assert!(err.contains("already exists"), "{err}");
    let err = ctl(
        &h,
        &[
            "upstream",
            "add",
            "--name",
            "w0",
            "--base-url",
            &base,
            "--api-key",
            "k2",
            "--weight",
            "0",
        ],
    )
    .await
    .unwrap_err();
    assert!(err.contains("weight"), "{err}");

    let user = ctl(
        &h,
        &[
            "-o",
            "json",
            "user",
            "create",
            "--name",
            "erin",
            "--balance",
            "10.00",
        ],
    )
    .await
    .unwrap();
    assert_eq!(user["balance_micros"], 10_000_000);
    let uid = user["id"].as_i64().unwrap().to_string();
    let topped = ctl(&h, &["-o", "json", "user", "topup", &uid, "2.50"])
        .await
        .unwrap();
    assert_eq!(topped["balance_micros"], 12_500_000);
    let users = ctl(&h, &["-o", "json", "user", "list"]).await.unwrap();
    assert_eq!(users[0]["balance_micros"], 12_500_000);
    assert_eq!(
        ctl(&h, &["-o", "json", "user", "get", &uid]).await.unwrap()["name"],
        "erin"
    );

    let key = ctl(
        &h,
        &[
            "-o",
            "json",
            "key",
            "create",
            "--user",
            &uid,
            "--name",
            "laptop",
            "--models",
            "gpt-5,gpt-5-codex",
            "--rpm",
            "60",
        ],
    )
    .await
    .unwrap();
    let secret = key["secret"].as_str().unwrap();
    assert!(secret.starts_with("cgw-"));
    assert!(key["id"].is_i64());
    assert_eq!(key["models"], serde_json::json!(["gpt-5", "gpt-5-codex"]));
    let kid = key["id"].as_i64().unwrap().to_string();
    let keys = ctl(&h, &["-o", "json", "key", "list", "--user", &uid])
        .await
        .unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 1);
    assert!(
        !keys.to_string().contains(secret),
        "the secret is shown only once"
    );
    assert!(secret.starts_with(keys[0]["prefix"].as_str().unwrap()));
    let revoked = ctl(&h, &["-o", "json", "key", "revoke", &kid])
        .await
        .unwrap();
    assert_eq!(revoked["revoked"], true);

    let price = ctl(
        &h,
        &[
            "-o",
            "json",
            "price",
            "set",
            "--model",
            "*",
            "--input",
            "1.25",
            "--cached-input",
            "0.125",
            "--output",
            "10",
        ],
    )
    .await
    .unwrap();
    assert_eq!(price["input_micros"], 1_250_000);
    assert_eq!(price["cached_input_micros"], 125_000);
    assert_eq!(price["output_micros"], 10_000_000);
    assert_eq!(
        ctl(&h, &["-o", "json", "price", "list"])
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let usage = ctl(
        &h,
        &[
            "-o", "json", "usage", "list", "--user", &uid, "--limit", "5",
        ],
    )
    .await
    .unwrap();
    assert_eq!(usage, serde_json::json!([]));

    let extra = ctl(
        &h,
        &[
            "-o",
            "json",
            "upstream",
            "add",
            "--name",
            "extra",
            "--base-url",
            &base,
            "--api-key",
            "sk-extra-abcdefgh",
        ],
    )
    .await
    .unwrap();
    let extra_id = extra["id"].as_i64().unwrap().to_string();
    assert_eq!(
        ctl(&h, &["-o", "json", "upstream", "delete", &extra_id])
            .await
            .unwrap()["id"],
        extra["id"]
    );
    assert!(
        ctl(&h, &["upstream", "get", &extra_id])
            .await
            .unwrap_err()
            .contains("not found")
    );
    assert!(
        ctl(&h, &["user", "topup", "424242", "1"])
            .await
            .unwrap_err()
            .contains("not found")
    );
    assert!(
        ctl(&h, &["key", "create", "--user", "424242"])
            .await
            .unwrap_err()
            .contains("not found")
    );

    let table = ctl_text(&h, &["upstream", "list"]).await;
    assert!(table.contains("PRIORITY (0=best)"), "{table}");
    assert!(table.contains("pool-a"));

    // Without the admin token nothing is allowed.
    let cli = Cli::try_parse_from([
        "gatewayctl",
        "--endpoint",
        &h.gatewayctl_args(&[])[2],
        "--token",
        "wrong-token-wrong-token",
        "user",
        "list",
    ])
    .unwrap();
    let err = gatewayctl::run(cli, &mut Vec::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("admin token"), "{err}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gatewayctl_upstream_models_are_replaced_and_cleared() {
    let h = Harness::start(0).await;
    let base = h.mock.base_url("pool-m");
    let add = |name: &'static str, models: Option<&'static str>| {
        let mut args = vec![
            "-o",
            "json",
            "upstream",
            "add",
            "--name",
            name,
            "--base-url",
            &base,
            "--api-key",
            "sk-models-abcdefgh",
        ];
        args.extend(models.map(|m| ["--models", m]).into_iter().flatten());
        args
    };

    let every = ctl(&h, &add("every", None)).await.unwrap();
    assert_eq!(
        every["models"],
        serde_json::json!([]),
        "default: every model"
    );
    let some = ctl(&h, &add("some", Some("gpt-5, gpt-5-codex")))
        .await
        .unwrap();
    assert_eq!(some["models"], serde_json::json!(["gpt-5", "gpt-5-codex"]));
    let id = some["id"].as_i64().unwrap().to_string();
    let got = ctl(&h, &["-o", "json", "upstream", "get", &id])
        .await
        .unwrap();
    assert_eq!(got["models"], serde_json::json!(["gpt-5", "gpt-5-codex"]));

    let table = ctl_text(&h, &["upstream", "list"]).await;
    let header = table.lines().next().unwrap();
    assert!(header.trim_end().ends_with("MODELS"), "{table}");
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}: {table}"))
            .to_owned()
    };
    assert!(row("every").trim_end().ends_with(" *"), "{table}");
    assert!(row("some").ends_with("gpt-5,gpt-5-codex"), "{table}");
    let fields = ctl_text(&h, &["upstream", "get", &id]).await;
    assert!(
        fields
            .lines()
            .any(|l| l.starts_with("models") && l.ends_with("gpt-5,gpt-5-codex")),
        "{fields}"
    );

    let replaced = ctl(
        &h,
        &["-o", "json", "upstream", "update", &id, "--models", "o3"],
    )
    .await
    .unwrap();
    assert_eq!(replaced["models"], serde_json::json!(["o3"]), "replaces");
    let reweighted = ctl(
        &h,
        &["-o", "json", "upstream", "update", &id, "--weight", "3"],
    )
    .await
    .unwrap();
    assert_eq!(
        reweighted["models"],
        serde_json::json!(["o3"]),
        "unset stays"
    );
    let cleared = ctl(
        &h,
        &["-o", "json", "upstream", "update", &id, "--all-models"],
    )
    .await
    .unwrap();
    assert_eq!(
        cleared["models"],
        serde_json::json!([]),
        "every model again"
    );
    let fields = ctl_text(&h, &["upstream", "get", &id]).await;
    assert!(
        fields
            .lines()
            .any(|l| l.starts_with("models") && l.ends_with("* (every model)")),
        "{fields}"
    );

    let err = ctl(
        &h,
        &["upstream", "update", &id, "--models", "o3", "--all-models"],
    )
    .await
    .unwrap_err();
    assert!(err.contains("cannot be used with"), "{err}");
    let err = ctl(&h, &add("dup", Some("gpt-5,o3,gpt-5")))
        .await
        .unwrap_err();
    assert!(err.contains("\"gpt-5\" is listed twice"), "{err}");
    let err = ctl(&h, &["upstream", "update", &id, "--models", "*"])
        .await
        .unwrap_err();
    assert!(err.contains("an empty list means"), "{err}");
    assert_eq!(
        ctl(&h, &["-o", "json", "upstream", "get", &id])
            .await
            .unwrap()["models"],
        serde_json::json!([]),
        "a refused change leaves the list"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gatewayctl_key_spend_limits_show_what_is_spent_and_left() {
    let h = Harness::start(0).await;
    let (user, _) = h.add_user("reseller", 100_000_000).await;
    let user_id = user.id.to_string();
    let created = ctl(
        &h,
        &[
            "-o",
            "json",
            "key",
            "create",
            "--user",
            &user_id,
            "--spend-limit",
            "50.00",
            "--spend-limit",
            "5.00/day",
        ],
    )
    .await
    .unwrap();
    assert!(created["secret"].as_str().is_some());
    let caps = created["spend_limits"].as_array().unwrap();
    assert_eq!(caps.len(), 2, "{created}");
    assert_eq!(caps[0]["window"], "lifetime");
    assert_eq!(caps[0]["limit_micros"], 50_000_000);
    assert_eq!(caps[1]["window"], "day");
    assert_eq!(caps[1]["limit_micros"], 5_000_000);
    assert_eq!(caps[1]["spent_micros"], 0);
    assert_eq!(caps[1]["left_micros"], 5_000_000);
    let id = created["id"].as_i64().unwrap().to_string();

    let got = ctl(&h, &["-o", "json", "key", "get", &id]).await.unwrap();
    assert_eq!(got["spend_limits"], created["spend_limits"]);
    let listed = ctl(&h, &["-o", "json", "key", "list", "--user", &user_id])
        .await
        .unwrap();
    assert_eq!(listed[0]["spend_limits"], created["spend_limits"]);
    let fields = ctl_text(&h, &["key", "get", &id]).await;
    assert!(
        fields.lines().any(|l| l.starts_with("spend_limits")
            && l.ends_with(
                "50.00 lifetime: 0.00 spent, 50.00 left; 5.00/day: 0.00 spent, 5.00 left"
            )),
        "{fields}"
    );
    let table = ctl_text(&h, &["key", "list"]).await;
    assert!(
        table.lines().next().unwrap().ends_with("SPEND LIMITS"),
        "{table}"
    );

    // Two caps for one window, a bad window, a zero cap: each refused with its reason.
    let err = ctl(
        &h,
        &[
            "key",
            "update",
            &id,
            "--spend-limit",
            "1/week",
            "--spend-limit",
            "2/week",
        ],
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("two spend limits for the week window"),
        "{err}"
    );
    let err = ctl(
        &h,
        &[
            "key",
            "create",
            "--user",
            &user_id,
            "--spend-limit",
            "1/year",
        ],
    )
    .await
    .unwrap_err();
    assert!(err.contains("\"year\" is not a spend window"), "{err}");
    let err = ctl(
        &h,
        &["key", "create", "--user", &user_id, "--spend-limit", "0.00"],
    )
    .await
    .unwrap_err();
    assert!(err.contains("must be above zero"), "{err}");

    let replaced = ctl(
        &h,
        &[
            "-o",
            "json",
            "key",
            "update",
            &id,
            "--spend-limit",
            "2.50/5h",
        ],
    )
    .await
    .unwrap();
    let caps = replaced["spend_limits"].as_array().unwrap();
    assert_eq!(caps.len(), 1, "replaces every cap: {replaced}");
    assert_eq!(caps[0]["window"], "5h");
    let renamed = ctl(&h, &["-o", "json", "key", "update", &id, "--name", "x"])
        .await
        .unwrap();
    assert_eq!(
        renamed["spend_limits"], replaced["spend_limits"],
        "unset stays"
    );
    let cleared = ctl(
        &h,
        &["-o", "json", "key", "update", &id, "--no-spend-limit"],
    )
    .await
    .unwrap();
    assert_eq!(cleared["spend_limits"], serde_json::json!([]));
    let fields = ctl_text(&h, &["key", "get", &id]).await;
    assert!(
        fields
            .lines()
            .any(|l| l.starts_with("spend_limits") && l.ends_with("none")),
        "{fields}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gatewayctl_lists_redrives_and_drops_dead_letters() {
    use prost::Message;

    let h = Harness::start(0).await;
    let (user, _) = h.add_user("late", 1_000_000).await;
    let event = gateway_proto::v1::UsageEvent {
        id: uuid::Uuid::now_v7().to_string(),
        request_id: "req-late".into(),
        key_id: 1,
        user_id: user.id,
        model: "gpt-5".into(),
        cost_micros: 1_234,
        status: gateway_proto::v1::UsageStatus::Completed as i32,
        started_at_ms: chrono::Utc::now().timestamp_millis(),
        ..Default::default()
    };
    let pool = h.db.pool().await;
    for (id, payload) in [("1-0", event.encode_to_vec()), ("2-0", vec![0xff, 0xff])] {
        sqlx::query(
            "INSERT INTO usage_dead_letters (stream_id, payload, error) VALUES ($1, $2, 'refused')",
        )
        .bind(id)
        .bind(payload)
        .execute(&pool)
        .await
        .unwrap();
    }
    let listed = ctl(&h, &["-o", "json", "usage", "dead-letters", "list"])
        .await
        .unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    let good = listed.iter().find(|d| d["id"] == "1-0").unwrap();
    assert_eq!(good["event"]["user_id"], user.id);
    assert_eq!(good["event"]["cost_micros"], 1_234);
    assert_eq!(good["error"], "refused");
    let table = ctl_text(&h, &["usage", "dead-letters", "list"]).await;
    assert!(table.lines().next().unwrap().starts_with("ID"), "{table}");
    assert!(table.contains("0.001234"), "{table}");

    let text = ctl_text(&h, &["usage", "dead-letters", "redrive", "1-0"]).await;
    assert_eq!(
        text.trim(),
        format!("dead letter 1-0 redriven: event {} billed", event.id)
    );
    let balance: i64 = sqlx::query_scalar("SELECT balance_micros FROM users WHERE id = $1")
        .bind(user.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(balance, 1_000_000 - 1_234);
    let err = ctl(&h, &["usage", "dead-letters", "redrive", "2-0"])
        .await
        .unwrap_err();
    assert!(err.contains("still cannot be billed"), "{err}");
    let text = ctl_text(&h, &["usage", "dead-letters", "drop", "2-0"]).await;
    assert_eq!(text.trim(), "dead letter 2-0 dropped (refused)");
    let err = ctl(&h, &["usage", "dead-letters", "drop", "2-0"])
        .await
        .unwrap_err();
    assert!(err.contains("not found"), "{err}");
    pool.close().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_is_refused_with_its_range_never_taken_for_a_default() {
    let h = Harness::start(0).await;
    let base = h.mock.base_url("pool-z");
    let err = ctl(
        &h,
        &[
            "upstream",
            "add",
            "--name",
            "z",
            "--base-url",
            &base,
            "--api-key",
            "sk-zero-abcdefgh",
            "--timeout",
            "0",
        ],
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("timeout must be between 1 s and 3600 s, got 0 ms"),
        "{err}"
    );
    let err = ctl(&h, &["usage", "list", "--limit", "0"])
        .await
        .unwrap_err();
    assert!(
        err.contains("limit must be between 1 and 10000, got 0"),
        "{err}"
    );
    // Over the API the same: unset takes the default, a zero is refused.
    let mut admin = h.admin().await;
    let status = admin
        .create_user(gateway_proto::v1::CreateUserRequest {
            name: "nobody".into(),
            balance_micros: 0,
            multiplier_ppm: Some(0),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("multiplier"), "{status:?}");
    let user = admin
        .create_user(gateway_proto::v1::CreateUserRequest {
            name: "somebody".into(),
            balance_micros: 0,
            multiplier_ppm: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(user.multiplier_ppm, 1_000_000);
    let mut request = h.upstream_request("pool-z", 0, 1);
    request.weight = None;
    request.timeout_ms = None;
    let upstream = admin.create_upstream(request).await.unwrap().into_inner();
    assert_eq!((upstream.weight, upstream.timeout_ms), (1, 120_000));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gatewayctl_exports_every_matching_event_page_by_page() {
    let h = Harness::start(0).await;
    let (a, _) = h.add_user("exporter-a", 1_000_000).await;
    let (b, _) = h.add_user("exporter-b", 1_000_000).await;
    // 12,345 events over two users, several sharing each start time (the cursor must not
    // skip or repeat ties), one with a comma and a quote in its model.
    let pool = h.db.pool().await;
    sqlx::query(
        "INSERT INTO usage_events (id, request_id, key_id, user_id, upstream_id, model, endpoint, \
           input_tokens, cached_tokens, output_tokens, reasoning_tokens, cost_micros, status, \
           stream, estimated, ttfb_ms, duration_ms, node_id, started_at) \
         SELECT gen_random_uuid(), 'req-' || i, 1, CASE WHEN i % 3 = 0 THEN $2 ELSE $1 END, \
           CASE WHEN i % 2 = 0 THEN 1 END, CASE WHEN i = 7 THEN 'odd, \"model\"' ELSE 'gpt-5' END, \
           'responses', 10, 0, 5, 0, i, 'completed', true, false, 1, 2, 'dp', \
           timestamptz '2026-11-01T00:00:00Z' + make_interval(secs => i / 4) \
         FROM generate_series(1, 12345) i",
    )
    .bind(a.id)
    .bind(b.id)
    .execute(&pool)
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("cgw-export-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("usage.csv");
    let out = ctl_text(&h, &["usage", "export", "--output", csv.to_str().unwrap()]).await;
    assert!(out.is_empty(), "the rows go to the file: {out}");
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    for name in [
        "id",
        "request_id",
        "user_id",
        "key_id",
        "upstream_id",
        "cost_micros",
        "status",
    ] {
        assert!(header.contains(&name), "{header:?}");
    }
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 12_345);
    let id_at = header.iter().position(|c| *c == "id").unwrap();
    let mut exported: Vec<String> = rows
        .iter()
        .map(|r| r.split(',').nth(id_at).unwrap().to_owned())
        .collect();
    exported.sort();
    let mut ledger: Vec<String> = sqlx::query_scalar("SELECT id::text FROM usage_events")
        .fetch_all(&pool)
        .await
        .unwrap();
    ledger.sort();
    assert_eq!(exported, ledger, "every event once");
    assert!(
        rows.iter().any(|r| r.contains(r#""odd, ""model""""#)),
        "quoted as CSV"
    );

    // The same filters as usage list, as JSON lines.
    let jsonl = dir.join("b.jsonl");
    let user_b = b.id.to_string();
    ctl_text(
        &h,
        &[
            "usage",
            "export",
            "--user",
            &user_b,
            "--format",
            "jsonl",
            "--output",
            jsonl.to_str().unwrap(),
        ],
    )
    .await;
    let events: Vec<Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 12_345 / 3);
    assert!(events.iter().all(|e| e["user_id"] == b.id));

    // usage list pages the same way.
    let first = ctl(&h, &["-o", "json", "usage", "list", "--limit", "3"])
        .await
        .unwrap();
    assert_eq!(first.as_array().unwrap().len(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
    pool.close().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gatewayctl_audit_list_names_who_changed_what_and_never_a_secret() {
    let h = Harness::start(0).await;
    let base = h.mock.base_url("pool-a");
    let secret_upstream_key = "sk-live-audit-secret-9876";
    let up = ctl(
        &h,
        &[
            "-o",
            "json",
            "upstream",
            "add",
            "--name",
            "pool-a",
            "--base-url",
            &base,
            "--api-key",
            secret_upstream_key,
        ],
    )
    .await
    .unwrap();
    let user = ctl(
        &h,
        &[
            "-o",
            "json",
            "user",
            "create",
            "--name",
            "ada",
            "--balance",
            "5.00",
        ],
    )
    .await
    .unwrap();
    let uid = user["id"].as_i64().unwrap().to_string();
    let key = ctl(&h, &["-o", "json", "key", "create", "--user", &uid])
        .await
        .unwrap();
    let key_secret = key["secret"].as_str().unwrap().to_owned();
    ctl(
        &h,
        &[
            "-o",
            "json",
            "key",
            "update",
            &key["id"].to_string(),
            "--rpm",
            "30",
        ],
    )
    .await
    .unwrap();

    let entries = ctl(&h, &["-o", "json", "audit", "list"]).await.unwrap();
    let entries = entries.as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["key.update", "key.create", "user.create", "upstream.create"],
        "newest first: {entries:?}"
    );
    for e in entries {
        assert_eq!(e["principal"], "admin token", "{e}");
        let source = e["source"].as_str().unwrap();
        assert!(
            source.starts_with("127.0.0.1:"),
            "the caller's address: {e}"
        );
        assert!(e["config_version"].as_i64().unwrap() > 0, "{e}");
        for field in ["id", "at", "target", "detail"] {
            assert!(e.get(field).is_some(), "entry lacks {field}: {e}");
        }
    }
    assert_eq!(
        entries[3]["target"],
        format!("upstream {} (pool-a)", up["id"]),
        "{entries:?}"
    );
    let detail: Value = serde_json::from_str(entries[0]["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail, serde_json::json!({"rpm": 30}));

    // Neither the upstream's key nor the gateway key's secret is anywhere in the log, in
    // either output format.
    let text = ctl_text(&h, &["audit", "list"]).await;
    for out in [text.clone(), Value::Array(entries.clone()).to_string()] {
        assert!(!out.contains(secret_upstream_key), "{out}");
        assert!(!out.contains(&key_secret), "{out}");
    }
    assert!(
        text.contains("upstream.create") && text.contains("sk-…9876"),
        "{text}"
    );

    // Paging: a page of 3 says how to go on, and the next page holds the rest.
    let first = ctl(&h, &["-o", "json", "audit", "list", "--limit", "3"])
        .await
        .unwrap();
    let last_id = first.as_array().unwrap()[2]["id"]
        .as_i64()
        .unwrap()
        .to_string();
    let rest = ctl(&h, &["-o", "json", "audit", "list", "--cursor", &last_id])
        .await
        .unwrap();
    assert_eq!(rest.as_array().unwrap().len(), 1);
    assert_eq!(rest[0]["action"], "upstream.create");
    let err = ctl(&h, &["audit", "list", "--since", "yesterday"])
        .await
        .unwrap_err();
    assert!(err.contains("since"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_keys_come_a_page_at_a_time() {
    let h = Harness::start(0).await;
    for name in ["ann", "Annika", "bo"] {
        ctl(&h, &["-o", "json", "user", "create", "--name", name])
            .await
            .unwrap();
    }
    let found = ctl(&h, &["-o", "json", "user", "list", "--search", "ANN"])
        .await
        .unwrap();
    let found: Vec<&str> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(found, ["ann", "Annika"]);

    let mut admin = h.admin().await;
    let page = admin
        .list_users(gateway_proto::v1::ListUsersRequest {
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.users.len(), 2);
    let cursor = page.next_cursor.expect("a full page names the next");
    let rest = ctl(&h, &["-o", "json", "user", "list", "--cursor", &cursor])
        .await
        .unwrap();
    assert_eq!(rest.as_array().unwrap().len(), 1);
    assert_eq!(rest[0]["name"], "bo");

    let uid = rest[0]["id"].to_string();
    for _ in 0..3 {
        ctl(&h, &["-o", "json", "key", "create", "--user", &uid])
            .await
            .unwrap();
    }
    let keys = ctl(&h, &["-o", "json", "key", "list", "--limit", "2"])
        .await
        .unwrap();
    let second = keys[1]["id"].to_string();
    let after = ctl(&h, &["-o", "json", "key", "list", "--cursor", &second])
        .await
        .unwrap();
    assert_eq!(after.as_array().unwrap().len(), 1);
    assert!(after[0]["id"].as_i64() > keys[1]["id"].as_i64());

    for (args, expected) in [
        (
            vec!["user", "list", "--limit", "0"],
            "limit must be between 1 and 1000, got 0",
        ),
        (
            vec!["key", "list", "--limit", "1001"],
            "limit must be between 1 and 1000, got 1001",
        ),
        (
            vec!["user", "list", "--cursor", "next"],
            "cursor must be the next_cursor",
        ),
    ] {
        let err = ctl(&h, &args).await.unwrap_err();
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}
