//! One contract for both stores: every scenario runs against real Postgres (a database of its
//! own) and against SQLite (a file of its own), so the two backends cannot drift.

use chrono::{Duration as ChronoDuration, Utc};
use control_plane::store::{
    HealthUpdate, KeyPatch, NewKey, NewUpstream, PriceRow, Store, StoreError, SummaryBy,
    UpstreamPatch, UsageFilter, UsageRow, UserPatch,
};
use uuid::Uuid;

/// Runs `$scenario(store)` once per backend.
macro_rules! contract {
    ($($scenario:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let db = TestDb::create().await;
                    let store = super::Store::connect(&db.url).await.unwrap();
                    super::$scenario(store).await;
                    db.drop_database().await;
                }
            )*
            use gateway_tests::TestDb;
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let dir = std::env::temp_dir().join(format!("cgw-store-{}", uuid::Uuid::new_v4().simple()));
                    std::fs::create_dir_all(&dir).unwrap();
                    let url = format!("sqlite://{}", dir.join("gateway.db").display());
                    let store = super::Store::connect(&url).await.unwrap();
                    super::$scenario(store).await;
                    std::fs::remove_dir_all(&dir).unwrap();
                }
            )*
        }
    };
}

contract!(
    upstreams_bump_versions_and_refuse_duplicates,
    users_keys_and_prices_round_trip,
    usage_ingest_is_idempotent_and_debits_once,
    snapshots_and_health_records_agree,
);

fn new_upstream(name: &str) -> NewUpstream {
    NewUpstream {
        name: name.into(),
        base_url: format!("http://pool.example/{name}"),
        api_key_enc: vec![1, 2, 3],
        api_key_hint: "sk-…1234".into(),
        priority: 0,
        weight: 1,
        max_retries: 3,
        timeout_ms: 120_000,
        enabled: true,
        probe_path: "/v1/models".into(),
    }
}

async fn upstreams_bump_versions_and_refuse_duplicates(store: Store) {
    let v0 = store.config_version().await.unwrap();
    let a = store.create_upstream(new_upstream("a")).await.unwrap();
    assert_eq!(a.version, v0 + 1);
    let duplicate = store.create_upstream(new_upstream("a")).await;
    assert!(
        matches!(&duplicate, Err(StoreError::Conflict(m)) if m.contains("upstream")),
        "{duplicate:?}"
    );
    let b = store.create_upstream(new_upstream("b")).await.unwrap();
    assert_eq!(b.version, a.version + 1, "a refused change bumps nothing");
    let updated = store
        .update_upstream(
            a.value.id,
            UpstreamPatch {
                weight: Some(5),
                enabled: Some(false),
                priority: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (
            updated.value.weight,
            updated.value.enabled,
            updated.value.priority
        ),
        (5, false, 2)
    );
    assert!(matches!(
        store.update_upstream(999, UpstreamPatch::default()).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store
            .update_upstream(
                a.value.id,
                UpstreamPatch {
                    weight: Some(0),
                    ..Default::default()
                }
            )
            .await,
        Err(StoreError::Invalid(_))
    ));
    let listed = store.list_upstreams().await.unwrap();
    assert_eq!(
        listed.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
        ["b", "a"],
        "best tier first"
    );
    let deleted = store.delete_upstream(b.value.id).await.unwrap();
    assert_eq!(deleted.version, updated.version + 1);
    assert!(matches!(
        store.get_upstream(b.value.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.config_version().await.unwrap(), deleted.version);
}

async fn users_keys_and_prices_round_trip(store: Store) {
    let user = store
        .create_user("ann", 5_000_000, 1_000_000)
        .await
        .unwrap()
        .value;
    assert!(matches!(
        store.create_user("ann", 0, 1).await,
        Err(StoreError::Conflict(_))
    ));
    let topped = store
        .adjust_balance(user.id, 2_500_000, "top-up")
        .await
        .unwrap()
        .value;
    assert_eq!(topped.balance_micros, 7_500_000);
    let updated = store
        .update_user(
            user.id,
            UserPatch {
                multiplier_ppm: Some(1_500_000),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .value;
    assert_eq!(updated.multiplier_ppm, 1_500_000);
    assert_eq!(
        store.get_user(user.id).await.unwrap().balance_micros,
        7_500_000
    );

    let expiry = Utc::now() + ChronoDuration::days(30);
    let key = store
        .create_key(NewKey {
            user_id: user.id,
            name: "laptop".into(),
            prefix: "cgw-abcdefgh".into(),
            digest: vec![7; 32],
            expires_at: Some(expiry),
            models: vec!["gpt-5".into(), "gpt-5-mini".into()],
            ip_allow: vec!["10.0.0.0/8".into()],
            rpm: Some(60),
            concurrency: None,
        })
        .await
        .unwrap()
        .value;
    assert_eq!(key.models, ["gpt-5", "gpt-5-mini"]);
    assert_eq!(key.ip_allow, ["10.0.0.0/8"]);
    assert_eq!(
        key.expires_at.map(|t| t.timestamp()),
        Some(expiry.timestamp())
    );
    assert!(matches!(
        store
            .create_key(NewKey {
                user_id: 999,
                name: String::new(),
                prefix: "x".into(),
                digest: vec![8; 32],
                expires_at: None,
                models: vec![],
                ip_allow: vec![],
                rpm: None,
                concurrency: None
            })
            .await,
        Err(StoreError::NotFound { .. })
    ));
    let changed = store
        .update_key(
            key.id,
            KeyPatch {
                expires_at: Some(None),
                models: Some(vec![]),
                rpm: Some(None),
                concurrency: Some(Some(2)),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .value;
    assert!(changed.expires_at.is_none() && changed.models.is_empty() && changed.rpm.is_none());
    assert_eq!(changed.concurrency, Some(2));
    let revoked = store.revoke_key(key.id).await.unwrap().value;
    let first = revoked.revoked_at.unwrap();
    let again = store.revoke_key(key.id).await.unwrap().value;
    assert_eq!(
        again.revoked_at.unwrap().timestamp_micros(),
        first.timestamp_micros(),
        "the first revocation time stays"
    );
    assert_eq!(store.list_keys(Some(user.id)).await.unwrap().len(), 1);
    assert!(store.list_keys(Some(999)).await.unwrap().is_empty());

    let price = PriceRow {
        model: "*".into(),
        input_micros: 1,
        cached_input_micros: 2,
        output_micros: 3,
    };
    store.set_price(price.clone()).await.unwrap();
    store
        .set_price(PriceRow {
            output_micros: 30,
            ..price
        })
        .await
        .unwrap();
    let prices = store.list_prices().await.unwrap();
    assert_eq!(prices.len(), 1);
    assert_eq!(prices[0].output_micros, 30);
}

fn event(user_id: i64, cost: i64, model: &str) -> UsageRow {
    UsageRow {
        id: Uuid::now_v7(),
        request_id: Uuid::now_v7().to_string(),
        key_id: 1,
        user_id,
        upstream_id: Some(7),
        model: model.into(),
        endpoint: "responses".into(),
        input_tokens: 100,
        cached_tokens: 40,
        output_tokens: 10,
        reasoning_tokens: 2,
        cost_micros: cost,
        status: "completed".into(),
        stream: true,
        estimated: false,
        ttfb_ms: 5,
        duration_ms: 50,
        node_id: "dp".into(),
        started_at: Utc::now(),
    }
}

async fn usage_ingest_is_idempotent_and_debits_once(store: Store) {
    let rich = store
        .create_user("rich", 1_000_000, 1_000_000)
        .await
        .unwrap()
        .value;
    let poor = store
        .create_user("poor", 150, 1_000_000)
        .await
        .unwrap()
        .value;
    let batch = vec![
        event(rich.id, 300, "gpt-5"),
        event(rich.id, 200, "gpt-5-mini"),
        event(poor.id, 100, "gpt-5"),
    ];
    let first = store.ingest_usage(&batch).await.unwrap();
    assert_eq!(first.inserted, 3);
    assert!(first.exhausted_users.is_empty() && first.version.is_none());
    // Redelivery of the same events, plus one new one that exhausts "poor".
    let mut again = batch.clone();
    again.push(event(poor.id, 60, "gpt-5"));
    let second = store.ingest_usage(&again).await.unwrap();
    assert_eq!(second.inserted, 1, "known event ids are skipped");
    assert_eq!(second.exhausted_users, [poor.id]);
    assert!(
        second.version.is_some(),
        "a balance crossing zero bumps the version"
    );
    assert_eq!(
        store.get_user(rich.id).await.unwrap().balance_micros,
        1_000_000 - 500
    );
    assert_eq!(
        store.get_user(poor.id).await.unwrap().balance_micros,
        150 - 160
    );
    // Already below zero: no new crossing, no bump.
    let third = store
        .ingest_usage(&[event(poor.id, 10, "gpt-5")])
        .await
        .unwrap();
    assert!(third.exhausted_users.is_empty() && third.version.is_none());

    let all = UsageFilter {
        limit: 100,
        ..Default::default()
    };
    assert_eq!(store.list_usage(&all).await.unwrap().len(), 5);
    let rich_only = UsageFilter {
        user_id: Some(rich.id),
        limit: 100,
        ..Default::default()
    };
    let rows = store.list_usage(&rich_only).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows[0].started_at >= rows[1].started_at, "newest first");
    let future = UsageFilter {
        since: Some(Utc::now() + ChronoDuration::hours(1)),
        limit: 100,
        ..Default::default()
    };
    assert!(store.list_usage(&future).await.unwrap().is_empty());

    let by_user = store.summarize_usage(SummaryBy::User, &all).await.unwrap();
    let rich_row = by_user
        .iter()
        .find(|r| r.grp == rich.id.to_string())
        .unwrap();
    assert_eq!(
        (
            rich_row.requests,
            rich_row.cost_micros,
            rich_row.input_tokens
        ),
        (2, 500, 200)
    );
    // A time filter reads the ledger itself; the rollups must give the same totals.
    let recent = UsageFilter {
        since: Some(Utc::now() - ChronoDuration::hours(1)),
        limit: 100,
        ..Default::default()
    };
    assert!(all.rollups_answer(SummaryBy::User) && !recent.rollups_answer(SummaryBy::User));
    assert_eq!(
        store
            .summarize_usage(SummaryBy::User, &recent)
            .await
            .unwrap(),
        by_user
    );
    let by_model = store.summarize_usage(SummaryBy::Model, &all).await.unwrap();
    assert_eq!(by_model[0].grp, "gpt-5");
    assert_eq!(by_model[0].requests, 4);
    let by_day = store.summarize_usage(SummaryBy::Day, &all).await.unwrap();
    assert_eq!(by_day.len(), 1);
    assert_eq!(by_day[0].grp, Utc::now().format("%Y-%m-%d").to_string());
    let by_upstream = store
        .summarize_usage(SummaryBy::Upstream, &all)
        .await
        .unwrap();
    assert_eq!(by_upstream[0].grp, "7");

    // Rollups count each event once, even across redelivery.
    let today = Utc::now().format("%Y-%m-%d").to_string();
    let daily = store.daily_usage(None).await.unwrap();
    assert!(daily.iter().all(|r| r.day == today));
    assert_eq!(daily.iter().map(|r| r.requests).sum::<i64>(), 5);
    assert_eq!(daily.iter().map(|r| r.cost_micros).sum::<i64>(), 670);
    assert_eq!(daily.iter().map(|r| r.input_tokens).sum::<i64>(), 500);
    assert_eq!(daily.iter().map(|r| r.cached_tokens).sum::<i64>(), 200);
    let rich_daily = store.daily_usage(Some(rich.id)).await.unwrap();
    assert_eq!(rich_daily.len(), 2, "one row per model");
    assert_eq!(rich_daily.iter().map(|r| r.cost_micros).sum::<i64>(), 500);

    store
        .dead_letter("1-0", Some(b"garbage"), "not a usage event")
        .await
        .unwrap();
    store.dead_letter("1-0", None, "again").await.unwrap();
}

async fn snapshots_and_health_records_agree(store: Store) {
    let up = store.create_upstream(new_upstream("pool")).await.unwrap();
    let user = store.create_user("sam", 1, 1_000_000).await.unwrap().value;
    let key = |digest: u8| NewKey {
        user_id: user.id,
        name: String::new(),
        prefix: "cgw-x".into(),
        digest: vec![digest; 32],
        expires_at: None,
        models: vec!["m".into()],
        ip_allow: vec![],
        rpm: None,
        concurrency: None,
    };
    store.create_key(key(1)).await.unwrap();
    let revoked = store.create_key(key(2)).await.unwrap().value;
    store.revoke_key(revoked.id).await.unwrap();
    let state = store.snapshot_state().await.unwrap();
    assert_eq!(state.version, store.config_version().await.unwrap());
    assert_eq!(state.keys.len(), 1, "revoked keys are not in snapshots");
    assert_eq!(state.keys[0].models, ["m"]);
    assert_eq!(state.upstreams[0].api_key_enc, vec![1, 2, 3]);
    assert_eq!(state.users.len(), 1);

    let probe = store.upstreams_to_probe().await.unwrap();
    assert_eq!(probe.len(), 1);
    // Healthy after unknown changes nothing routing-relevant: no bump.
    let none = store
        .record_health(&[HealthUpdate {
            upstream_id: up.value.id,
            health: "healthy",
            error: String::new(),
            bump: false,
        }])
        .await
        .unwrap();
    assert!(none.is_none());
    let bumped = store
        .record_health(&[HealthUpdate {
            upstream_id: up.value.id,
            health: "unhealthy",
            error: "503".into(),
            bump: true,
        }])
        .await
        .unwrap();
    assert_eq!(bumped, Some(state.version + 1));
    let got = store.get_upstream(up.value.id).await.unwrap();
    assert_eq!(
        (got.health.as_str(), got.health_error.as_str()),
        ("unhealthy", "503")
    );
    assert!(got.health_checked_at.is_some());
    assert!(store.upstream_with_secret(up.value.id).await.is_ok());
}
