//! One contract for both stores: every scenario runs against real Postgres (a database of its
//! own) and against SQLite (a file of its own), so the two backends cannot drift. Between them
//! the scenarios call every `Store` method.

use std::time::Duration;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use control_plane::store::{
    Actor, Duty, HealthUpdate, HourlyRow, IngestOutcome, KeyPatch, NewKey, NewUpstream, PriceRow,
    SpendCaps, Store, StoreError, UpstreamPatch, UsageFilter, UsageRow, UsageSource, UserPatch,
};
use gateway_proto::{
    ids::{KeyId, UpstreamId, UserId},
    money::Micros,
    names::Named,
    v1::{SpendState, SpendWindow, SummaryBy, UpstreamHealth, UsageStatus},
};
use tokio::time::timeout;
use uuid::Uuid;

/// Runs `$scenario(store, backend)` once per backend.
macro_rules! contract {
    ($($scenario:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let db = TestDb::create().await;
                    let store = super::Store::connect(&db.url).await.unwrap();
                    let backend = super::Backend { kind: super::Kind::Postgres, url: db.url.clone() };
                    super::$scenario(store, backend).await;
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
                    let backend = super::Backend { kind: super::Kind::Sqlite, url };
                    super::$scenario(store, backend).await;
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
    upstream_fields_round_trip_and_refused_changes_leave_no_trace,
    health_rounds_bump_at_most_once,
    balances_are_audited_and_user_names_unique,
    keys_keep_lists_limits_and_the_first_revocation,
    prices_are_upserted_and_validated,
    ingest_edges_debit_once_and_bump_once,
    usage_filters_and_summaries_agree_with_the_ledger,
    usage_statuses_are_kept_by_name,
    dead_letters_keep_the_first_report,
    snapshots_hold_every_row_their_version_covers,
    changes_announce_bumps_and_nothing_else,
    leadership_is_exclusive_on_postgres_and_local_on_sqlite,
    upstream_models_round_trip_and_an_update_replaces_them,
    hourly_rollups_agree_with_the_ledger_and_bound_key_spend,
    key_caps_round_trip_and_an_update_replaces_or_clears_them,
    key_spend_counts_whole_hours_and_reaching_a_cap_bumps_once,
    retention_deletes_old_events_in_batches_and_keeps_the_rollups,
    admin_changes_are_audited_with_their_author_and_never_a_secret,
    users_and_keys_page_by_id_and_users_are_found_by_name,
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Postgres,
    Sqlite,
}

/// Where a scenario runs: the backend, and its URL for the few facts only the tables show
/// (the store has no read for them).
#[derive(Debug, Clone)]
struct Backend {
    kind: Kind,
    url: String,
}

impl Backend {
    /// One number straight from the tables; `$1`, `$2`… are `args`.
    async fn scalar(&self, sql: &'static str, args: &[i64]) -> i64 {
        match self.kind {
            Kind::Postgres => {
                let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
                let mut q = sqlx::query_scalar(sql);
                for a in args {
                    q = q.bind(*a);
                }
                let n = q.fetch_one(&pool).await.unwrap();
                pool.close().await;
                n
            }
            Kind::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.url).await.unwrap();
                let mut q = sqlx::query_scalar(sql);
                for a in args {
                    q = q.bind(*a);
                }
                let n = q.fetch_one(&pool).await.unwrap();
                pool.close().await;
                n
            }
        }
    }
}

/// The ledger grouped by UTC hour, key, user, model and upstream, straight from the events;
/// `$hour` is the dialect's start of `started_at`'s hour.
macro_rules! hourly_from_events {
    ($hour:literal) => {
        concat!(
            "SELECT ",
            $hour,
            " AS hour, key_id, user_id, model, upstream_id, COUNT(*) AS requests, \
             CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, \
             CAST(SUM(cached_tokens) AS BIGINT) AS cached_tokens, \
             CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, \
             CAST(SUM(reasoning_tokens) AS BIGINT) AS reasoning_tokens, \
             CAST(SUM(cost_micros) AS BIGINT) AS cost_micros, \
             CAST(SUM(CASE WHEN estimated THEN 1 ELSE 0 END) AS BIGINT) AS estimated, \
             CAST(SUM(CASE WHEN status IN ('completed', 'incomplete') THEN 0 ELSE 1 END) \
               AS BIGINT) AS errors \
             FROM usage_events GROUP BY 1, 2, 3, 4, 5"
        )
    };
}

/// The hourly backfill of each backend's migration: what follows this line in the file.
const BACKFILL_MARK: &str = "-- Events recorded before this migration are rolled up once, here.";
const HOURLY_MIGRATIONS: [&str; 2] = [
    include_str!("../../../control-plane/migrations/0005_usage_hourly.sql"),
    include_str!("../../../control-plane/migrations-sqlite/0004_usage_hourly.sql"),
];
/// The same for the per-user and per-day totals, filled from the hourly rollups.
const TOTALS_MIGRATIONS: [&str; 2] = [
    include_str!("../../../control-plane/migrations/0007_usage_totals.sql"),
    include_str!("../../../control-plane/migrations-sqlite/0006_usage_totals.sql"),
];
/// The same for the per-hour totals over all users and the daily rollups' failure counts,
/// from the hourly rollups.
const DASHBOARD_MIGRATIONS: [&str; 2] = [
    include_str!("../../../control-plane/migrations/0010_dashboard_rollups.sql"),
    include_str!("../../../control-plane/migrations-sqlite/0009_dashboard_rollups.sql"),
];
const ERRORS_BACKFILL_MARK: &str =
    "-- Failures recorded before this migration are counted once, here.";

/// Hourly rows in one order for both backends (their text collations may differ).
fn sorted_hourly(mut rows: Vec<HourlyRow>) -> Vec<HourlyRow> {
    rows.sort_by_key(|r| (r.hour, r.key_id, r.user_id, r.model.clone(), r.upstream_id));
    rows
}

impl Backend {
    /// The ledger grouped by hour (see [`hourly_from_events!`]), in [`sorted_hourly`] order.
    async fn hourly_from_ledger(&self) -> Vec<HourlyRow> {
        let rows = match self.kind {
            Kind::Postgres => {
                let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
                let sql = hourly_from_events!(
                    "date_trunc('hour', started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
                );
                let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
                pool.close().await;
                rows
            }
            Kind::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.url).await.unwrap();
                let sql = hourly_from_events!("substr(started_at, 1, 13) || ':00:00+00:00'");
                let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
                pool.close().await;
                rows
            }
        };
        sorted_hourly(rows)
    }

    /// Empties `tables` and runs the backfill of their migration (`[postgres, sqlite]`, what
    /// follows `mark`) again.
    async fn rerun_backfill(&self, migrations: [&'static str; 2], mark: &str, tables: &[&str]) {
        let backfill = self.backfill_of(migrations, mark);
        for table in tables {
            assert!(
                backfill.contains(&format!("INSERT INTO {table}")),
                "{table}"
            );
        }
        let empty: String = tables.iter().map(|t| format!("DELETE FROM {t};")).collect();
        self.run_sql(empty).await;
        self.run_sql(backfill.to_owned()).await;
    }

    /// What follows `mark` in this backend's migration (`[postgres, sqlite]`).
    fn backfill_of(&self, migrations: [&'static str; 2], mark: &str) -> &'static str {
        let migration = match self.kind {
            Kind::Postgres => migrations[0],
            Kind::Sqlite => migrations[1],
        };
        migration.split_once(mark).unwrap().1
    }

    /// Runs `sql` on the database directly.
    async fn run_sql(&self, sql: String) {
        match self.kind {
            Kind::Postgres => {
                let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
            }
            Kind::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
            }
        }
    }
}

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
        models: vec![],
    }
}

async fn upstreams_bump_versions_and_refuse_duplicates(store: Store, _: Backend) {
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
        store
            .update_upstream(UpstreamId(999), UpstreamPatch::default())
            .await,
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

async fn users_keys_and_prices_round_trip(store: Store, _: Backend) {
    let user = store
        .create_user("ann", Micros(5_000_000), 1_000_000)
        .await
        .unwrap()
        .value;
    assert!(matches!(
        store.create_user("ann", Micros(0), 1).await,
        Err(StoreError::Conflict(_))
    ));
    let topped = store
        .adjust_balance(user.id, Micros(2_500_000), "top-up")
        .await
        .unwrap()
        .value;
    assert_eq!(topped.balance_micros, Micros(7_500_000));
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
        Micros(7_500_000)
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
            caps: SpendCaps::default(),
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
                user_id: UserId(999),
                name: String::new(),
                prefix: "x".into(),
                digest: vec![8; 32],
                expires_at: None,
                models: vec![],
                ip_allow: vec![],
                rpm: None,
                concurrency: None,
                caps: SpendCaps::default(),
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
    assert_eq!(
        store
            .list_keys(Some(user.id), None, 1_000)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .list_keys(Some(UserId(999)), None, 1_000)
            .await
            .unwrap()
            .is_empty()
    );

    let price = PriceRow {
        model: "*".into(),
        input_micros: Micros(1),
        cached_input_micros: Micros(2),
        output_micros: Micros(3),
    };
    store.set_price(price.clone()).await.unwrap();
    store
        .set_price(PriceRow {
            output_micros: Micros(30),
            ..price
        })
        .await
        .unwrap();
    let prices = store.list_prices().await.unwrap();
    assert_eq!(prices.len(), 1);
    assert_eq!(prices[0].output_micros, Micros(30));
}

fn event(user_id: UserId, cost: i64, model: &str) -> UsageRow {
    UsageRow {
        id: Uuid::now_v7(),
        request_id: Uuid::now_v7().to_string(),
        key_id: KeyId(1),
        user_id,
        upstream_id: Some(UpstreamId(7)),
        model: model.into(),
        endpoint: "responses".into(),
        input_tokens: 100,
        cached_tokens: 40,
        output_tokens: 10,
        reasoning_tokens: 2,
        cost_micros: Micros(cost),
        status: UsageStatus::Completed,
        stream: true,
        estimated: false,
        ttfb_ms: 5,
        duration_ms: 50,
        node_id: "dp".into(),
        started_at: Utc::now(),
    }
}

async fn usage_ingest_is_idempotent_and_debits_once(store: Store, _: Backend) {
    let rich = store
        .create_user("rich", Micros(1_000_000), 1_000_000)
        .await
        .unwrap()
        .value;
    let poor = store
        .create_user("poor", Micros(150), 1_000_000)
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
        Micros(1_000_000 - 500)
    );
    assert_eq!(
        store.get_user(poor.id).await.unwrap().balance_micros,
        Micros(150 - 160)
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
            rich_row.totals.requests,
            rich_row.totals.cost_micros,
            rich_row.totals.input_tokens
        ),
        (2, Micros(500), 200)
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
    assert_eq!(by_model[0].totals.requests, 4);
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
    assert_eq!(daily.iter().map(|r| r.totals.requests).sum::<i64>(), 5);
    assert_eq!(
        daily.iter().map(|r| r.totals.cost_micros).sum::<Micros>(),
        Micros(670)
    );
    assert_eq!(
        daily.iter().map(|r| r.totals.input_tokens).sum::<i64>(),
        500
    );
    assert_eq!(
        daily.iter().map(|r| r.totals.cached_tokens).sum::<i64>(),
        200
    );
    let rich_daily = store.daily_usage(Some(rich.id)).await.unwrap();
    assert_eq!(rich_daily.len(), 2, "one row per model");
    assert_eq!(
        rich_daily
            .iter()
            .map(|r| r.totals.cost_micros)
            .sum::<Micros>(),
        Micros(500)
    );

    store
        .dead_letter("1-0", Some(b"garbage"), "not a usage event")
        .await
        .unwrap();
    store.dead_letter("1-0", None, "again").await.unwrap();
}

async fn snapshots_and_health_records_agree(store: Store, db: Backend) {
    let up = store.create_upstream(new_upstream("pool")).await.unwrap();
    let user = store
        .create_user("sam", Micros(1), 1_000_000)
        .await
        .unwrap()
        .value;
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
        caps: SpendCaps::default(),
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
            health: UpstreamHealth::Healthy,
            error: String::new(),
            bump: false,
        }])
        .await
        .unwrap();
    assert!(none.is_none());
    let bumped = store
        .record_health(&[HealthUpdate {
            upstream_id: up.value.id,
            health: UpstreamHealth::Unhealthy,
            error: "503".into(),
            bump: true,
        }])
        .await
        .unwrap();
    assert_eq!(bumped, Some(state.version + 1));
    let got = store.get_upstream(up.value.id).await.unwrap();
    assert_eq!(
        (got.health, got.health_error.as_str()),
        (UpstreamHealth::Unhealthy, "503")
    );
    assert_eq!(
        db.scalar(
            "SELECT COUNT(*) FROM upstreams WHERE id = $1 AND health = 'unhealthy'",
            &[up.value.id.get()]
        )
        .await,
        1,
        "the column keeps the word it always held"
    );
    assert!(got.health_checked_at.is_some());
    assert!(store.upstream_with_secret(up.value.id).await.is_ok());
}

fn key_for(user_id: UserId, digest: u8) -> NewKey {
    NewKey {
        user_id,
        name: String::new(),
        prefix: format!("cgw-{digest}"),
        digest: vec![digest; 32],
        expires_at: None,
        models: vec![],
        ip_allow: vec![],
        rpm: None,
        concurrency: None,
        caps: SpendCaps::default(),
    }
}

fn at(rfc3339: &str) -> DateTime<Utc> {
    rfc3339.parse().unwrap()
}

async fn upstream_fields_round_trip_and_refused_changes_leave_no_trace(store: Store, _: Backend) {
    assert_eq!(
        store.config_version().await.unwrap(),
        1,
        "a fresh store starts at version 1"
    );
    let spec = NewUpstream {
        priority: 1,
        weight: 3,
        max_retries: 0,
        timeout_ms: 5_000,
        enabled: false,
        probe_path: String::new(),
        ..new_upstream("east")
    };
    let created = store.create_upstream(spec).await.unwrap();
    assert_eq!(created.version, 2);
    let id = created.value.id;
    let got = store.get_upstream(id).await.unwrap();
    assert_eq!(
        (
            got.name.as_str(),
            got.base_url.as_str(),
            got.api_key_hint.as_str()
        ),
        ("east", "http://pool.example/east", "sk-…1234")
    );
    assert_eq!(
        (
            got.priority,
            got.weight,
            got.max_retries,
            got.timeout_ms,
            got.enabled
        ),
        (1, 3, 0, 5_000, false)
    );
    assert_eq!(
        (
            got.health,
            got.health_error.as_str(),
            got.probe_path.as_str()
        ),
        (UpstreamHealth::Unknown, "", "")
    );
    assert!(got.health_checked_at.is_none());
    assert_eq!(got.created_at, got.updated_at);
    assert!((Utc::now() - got.created_at).num_seconds().abs() < 60);

    let patched = store
        .update_upstream(
            id,
            UpstreamPatch {
                name: Some("east-2".into()),
                base_url: Some("http://other.example".into()),
                api_key: Some((vec![9, 9], "sk-…9999".into())),
                priority: Some(0),
                weight: Some(7),
                max_retries: Some(5),
                timeout_ms: Some(9_000),
                enabled: Some(true),
                probe_path: Some("/health".into()),
                models: Some(vec!["gpt-5".into()]),
            },
        )
        .await
        .unwrap();
    assert_eq!(patched.version, created.version + 1);
    let p = &patched.value;
    assert_eq!(
        (p.name.as_str(), p.base_url.as_str(), p.probe_path.as_str()),
        ("east-2", "http://other.example", "/health")
    );
    assert_eq!(
        (p.priority, p.weight, p.max_retries, p.timeout_ms, p.enabled),
        (0, 7, 5, 9_000, true)
    );
    assert_eq!(p.models, ["gpt-5"]);
    assert_eq!(p.created_at, got.created_at, "creation time stays");
    assert!(p.updated_at >= got.updated_at);
    let secret = store.upstream_with_secret(id).await.unwrap();
    assert_eq!(secret.api_key_enc, [9, 9]);
    assert_eq!(secret.upstream.api_key_hint, "sk-…9999");

    let west = store.create_upstream(new_upstream("west")).await.unwrap();
    let before = store.config_version().await.unwrap();
    assert_eq!(before, west.version);
    let clash = store
        .update_upstream(
            id,
            UpstreamPatch {
                name: Some("west".into()),
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(&clash, Err(StoreError::Conflict(m)) if m == "an upstream with that name already exists"),
        "{clash:?}"
    );
    let half = store
        .update_upstream(
            id,
            UpstreamPatch {
                base_url: Some("http://half.example".into()),
                weight: Some(0),
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(&half, Err(StoreError::Invalid(m)) if m.starts_with("value out of range")),
        "{half:?}"
    );
    assert_eq!(
        store.get_upstream(id).await.unwrap().base_url,
        "http://other.example",
        "a refused patch changes no field"
    );
    let missing = store.delete_upstream(UpstreamId(999)).await.unwrap_err();
    assert!(
        matches!(&missing, StoreError::NotFound { kind: "upstream", id } if id == "999"),
        "{missing:?}"
    );
    assert_eq!(missing.to_string(), "upstream 999 not found");
    assert!(!missing.is_transient() && !clash.unwrap_err().is_transient());
    assert!(matches!(
        store.upstream_with_secret(UpstreamId(999)).await,
        Err(StoreError::NotFound {
            kind: "upstream",
            ..
        })
    ));
    assert!(matches!(
        store.get_upstream(UpstreamId(999)).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        store.config_version().await.unwrap(),
        before,
        "refused changes bump nothing"
    );

    // Probed: enabled upstreams with a probe path, by id, with their keys.
    store
        .create_upstream(NewUpstream {
            probe_path: String::new(),
            ..new_upstream("quiet")
        })
        .await
        .unwrap();
    store
        .create_upstream(NewUpstream {
            enabled: false,
            ..new_upstream("off")
        })
        .await
        .unwrap();
    let probe = store.upstreams_to_probe().await.unwrap();
    assert_eq!(
        probe
            .iter()
            .map(|u| u.upstream.name.as_str())
            .collect::<Vec<_>>(),
        ["east-2", "west"]
    );
    assert_eq!(probe[0].api_key_enc, [9, 9]);
    assert_eq!(probe[1].api_key_enc, [1, 2, 3]);
    assert_eq!(store.list_upstreams().await.unwrap().len(), 4);
}

async fn health_rounds_bump_at_most_once(store: Store, _: Backend) {
    let a = store.create_upstream(new_upstream("a")).await.unwrap();
    let b = store.create_upstream(new_upstream("b")).await.unwrap();
    let v = store.config_version().await.unwrap();
    assert_eq!(store.record_health(&[]).await.unwrap(), None);
    let probe = |id: UpstreamId, health: UpstreamHealth, error: &str, bump: bool| HealthUpdate {
        upstream_id: id,
        health,
        error: error.into(),
        bump,
    };
    // Two changes of routing in one round: one new version.
    let round = store
        .record_health(&[
            probe(
                a.value.id,
                UpstreamHealth::Unhealthy,
                "connect refused",
                true,
            ),
            probe(b.value.id, UpstreamHealth::Unhealthy, "503", true),
            // A probe of an upstream deleted meanwhile is not an error.
            probe(UpstreamId(999), UpstreamHealth::Healthy, "", false),
        ])
        .await
        .unwrap();
    assert_eq!(round, Some(v + 1));
    assert_eq!(store.config_version().await.unwrap(), v + 1);
    let first = store.get_upstream(a.value.id).await.unwrap();
    assert_eq!(
        (first.health, first.health_error.as_str()),
        (UpstreamHealth::Unhealthy, "connect refused")
    );
    let first_check = first.health_checked_at.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    // Recovery that routing does not need to hear about is still recorded.
    let quiet = store
        .record_health(&[probe(a.value.id, UpstreamHealth::Healthy, "", false)])
        .await
        .unwrap();
    assert_eq!(quiet, None);
    assert_eq!(store.config_version().await.unwrap(), v + 1);
    let again = store.get_upstream(a.value.id).await.unwrap();
    assert_eq!(
        (again.health, again.health_error.as_str()),
        (UpstreamHealth::Healthy, "")
    );
    assert!(again.health_checked_at.unwrap() > first_check);
    assert_eq!(
        again.updated_at, first.updated_at,
        "probes are not admin edits"
    );
    assert_eq!(
        store.get_upstream(b.value.id).await.unwrap().health_error,
        "503"
    );
}

async fn balances_are_audited_and_user_names_unique(store: Store, db: Backend) {
    let v0 = store.config_version().await.unwrap();
    let zoe = store
        .create_user("zoe", Micros(0), 1_000_000)
        .await
        .unwrap();
    assert_eq!(zoe.version, v0 + 1);
    let ann = store
        .create_user("ann", Micros(5_000_000), 2_000_000)
        .await
        .unwrap();
    assert_eq!(ann.version, v0 + 2);
    let ann = ann.value;
    assert_eq!(
        (ann.name.as_str(), ann.balance_micros, ann.multiplier_ppm),
        ("ann", Micros(5_000_000), 2_000_000)
    );
    let dup = store.create_user("ann", Micros(0), 1).await;
    assert!(
        matches!(&dup, Err(StoreError::Conflict(m)) if m == "a user with that name already exists"),
        "{dup:?}"
    );
    assert!(matches!(
        store.create_user("neg", Micros(0), -1).await,
        Err(StoreError::Invalid(_))
    ));

    let refund = store
        .adjust_balance(ann.id, Micros(-1_500_000), "refund")
        .await
        .unwrap();
    assert_eq!(refund.value.balance_micros, Micros(3_500_000));
    assert_eq!(refund.version, v0 + 3);
    let missing = store
        .adjust_balance(UserId(999), Micros(1), "nobody")
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NotFound { kind: "user", .. }));

    let clash = store
        .update_user(
            ann.id,
            UserPatch {
                name: Some("zoe".into()),
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(&clash, Err(StoreError::Conflict(m)) if m == "a user with that name already exists"),
        "{clash:?}"
    );
    let renamed = store
        .update_user(
            ann.id,
            UserPatch {
                name: Some("anne".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.version, v0 + 4);
    assert_eq!(
        (
            renamed.value.name.as_str(),
            renamed.value.multiplier_ppm,
            renamed.value.balance_micros
        ),
        ("anne", 2_000_000, Micros(3_500_000)),
        "a patch changes only what it names"
    );
    assert!(matches!(
        store.update_user(UserId(999), UserPatch::default()).await,
        Err(StoreError::NotFound { kind: "user", .. })
    ));
    assert!(matches!(
        store
            .update_user(
                ann.id,
                UserPatch {
                    multiplier_ppm: Some(-5),
                    ..Default::default()
                }
            )
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.get_user(UserId(999)).await,
        Err(StoreError::NotFound { kind: "user", .. })
    ));
    assert_eq!(
        store.config_version().await.unwrap(),
        v0 + 4,
        "refused changes bump nothing"
    );
    let users = store.list_users(None, None, 1_000).await.unwrap();
    assert_eq!(
        users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
        ["zoe", "anne"]
    );

    // Every credit is an adjustment (a zero opening balance is none), so the balance can be
    // audited; usage then debits it, and the ledger accounts for the difference.
    let adjustments = "SELECT COUNT(*) FROM balance_adjustments WHERE user_id = $1";
    let credited = "SELECT CAST(COALESCE(SUM(amount_micros), 0) AS BIGINT) FROM balance_adjustments \
         WHERE user_id = $1";
    let opening = "SELECT COUNT(*) FROM balance_adjustments WHERE user_id = $1 \
                   AND reason = 'initial balance' AND amount_micros = $2";
    assert_eq!(db.scalar(adjustments, &[zoe.value.id.get()]).await, 0);
    assert_eq!(db.scalar(adjustments, &[ann.id.get()]).await, 2);
    assert_eq!(db.scalar(opening, &[ann.id.get(), 5_000_000]).await, 1);
    assert_eq!(db.scalar(credited, &[ann.id.get()]).await, 3_500_000);
    store
        .ingest_usage(&[event(ann.id, 1_200, "gpt-5"), event(ann.id, 300, "gpt-5")])
        .await
        .unwrap();
    let spent = "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM usage_events \
                 WHERE user_id = $1";
    assert_eq!(
        Micros(
            db.scalar(credited, &[ann.id.get()]).await - db.scalar(spent, &[ann.id.get()]).await
        ),
        store.get_user(ann.id).await.unwrap().balance_micros
    );
}

async fn keys_keep_lists_limits_and_the_first_revocation(store: Store, _: Backend) {
    let ann = store
        .create_user("ann", Micros(0), 1_000_000)
        .await
        .unwrap()
        .value;
    let bob = store
        .create_user("bob", Micros(0), 1_000_000)
        .await
        .unwrap()
        .value;
    // Values that need escaping in both encodings (a Postgres array, SQLite's JSON text).
    let odd: Vec<String> = vec![
        "a,b".into(),
        "quote\"d".into(),
        "ünï {x}".into(),
        "back\\slash".into(),
        String::new(),
    ];
    let created = store
        .create_key(NewKey {
            name: "laptop".into(),
            models: odd.clone(),
            concurrency: Some(3),
            ..key_for(ann.id, 1)
        })
        .await
        .unwrap();
    let k1 = created.value;
    assert_eq!(k1.models, odd);
    assert!(k1.ip_allow.is_empty() && k1.rpm.is_none() && k1.revoked_at.is_none());
    assert_eq!(
        (
            k1.user_id,
            k1.name.as_str(),
            k1.prefix.as_str(),
            k1.concurrency
        ),
        (ann.id, "laptop", "cgw-1", Some(3))
    );
    assert_eq!(k1.digest, vec![1; 32]);
    let k2 = store.create_key(key_for(bob.id, 2)).await.unwrap();
    assert_eq!(k2.version, created.version + 1);
    let k2 = k2.value;
    let dup = store.create_key(key_for(bob.id, 1)).await;
    assert!(
        matches!(&dup, Err(StoreError::Conflict(m)) if m == "that value already exists"),
        "{dup:?}"
    );
    assert_eq!(
        store
            .list_keys(None, None, 1_000)
            .await
            .unwrap()
            .iter()
            .map(|k| k.id)
            .collect::<Vec<_>>(),
        [k1.id, k2.id]
    );
    let bobs = store.list_keys(Some(bob.id), None, 1_000).await.unwrap();
    assert_eq!(bobs.iter().map(|k| k.id).collect::<Vec<_>>(), [k2.id]);

    let expiry = at("2033-05-18T03:33:20Z");
    let changed = store
        .update_key(
            k1.id,
            KeyPatch {
                name: Some("ci".into()),
                expires_at: Some(Some(expiry)),
                ip_allow: Some(vec!["192.168.0.0/16".into(), "::1/128".into()]),
                rpm: Some(Some(10)),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .value;
    assert_eq!(
        (changed.name.as_str(), changed.expires_at, changed.rpm),
        ("ci", Some(expiry), Some(10))
    );
    assert_eq!(changed.ip_allow, ["192.168.0.0/16", "::1/128"]);
    assert_eq!(changed.models, odd, "fields the patch leaves out stay");
    assert_eq!(changed.concurrency, Some(3));
    let before = store.config_version().await.unwrap();
    assert!(matches!(
        store
            .update_key(
                k1.id,
                KeyPatch {
                    rpm: Some(Some(0)),
                    ..Default::default()
                }
            )
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.update_key(KeyId(999), KeyPatch::default()).await,
        Err(StoreError::NotFound { kind: "key", .. })
    ));
    assert!(matches!(
        store.revoke_key(KeyId(999)).await,
        Err(StoreError::NotFound { kind: "key", .. })
    ));
    assert!(matches!(
        store.create_key(key_for(UserId(999), 9)).await,
        Err(StoreError::NotFound { kind: "user", .. })
    ));
    assert_eq!(store.config_version().await.unwrap(), before);

    let first = store.revoke_key(k2.id).await.unwrap();
    assert_eq!(first.version, before + 1);
    let second = store.revoke_key(k2.id).await.unwrap();
    assert_eq!(second.version, before + 2, "every revocation is announced");
    assert_eq!(second.value.revoked_at, first.value.revoked_at);
    let listed = store.list_keys(Some(bob.id), None, 1_000).await.unwrap();
    assert_eq!(
        listed[0].revoked_at, first.value.revoked_at,
        "revoked keys are still listed"
    );
    let snapshot = store.snapshot_state().await.unwrap();
    assert_eq!(snapshot.keys.len(), 1);
    let live = &snapshot.keys[0];
    assert_eq!(
        (live.id, live.models.clone(), live.ip_allow.clone()),
        (k1.id, odd, changed.ip_allow)
    );
}

async fn prices_are_upserted_and_validated(store: Store, _: Backend) {
    let price = |model: &str, output: i64| PriceRow {
        model: model.into(),
        input_micros: Micros(1_250_000),
        cached_input_micros: Micros(125_000),
        output_micros: Micros(output),
    };
    let v0 = store.config_version().await.unwrap();
    let gpt = store.set_price(price("gpt-5", 10_000_000)).await.unwrap();
    assert_eq!(
        (gpt.value.clone(), gpt.version),
        (price("gpt-5", 10_000_000), v0 + 1)
    );
    store.set_price(price("*", 1)).await.unwrap();
    let replaced = store.set_price(price("gpt-5", 8_000_000)).await.unwrap();
    assert_eq!(replaced.version, v0 + 3);
    assert_eq!(replaced.value, price("gpt-5", 8_000_000));
    assert!(matches!(
        store.set_price(price("free", -1)).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.config_version().await.unwrap(), v0 + 3);
    assert_eq!(
        store.list_prices().await.unwrap(),
        [price("*", 1), price("gpt-5", 8_000_000)]
    );
}

async fn ingest_edges_debit_once_and_bump_once(store: Store, db: Backend) {
    let a = store
        .create_user("a", Micros(100), 1_000_000)
        .await
        .unwrap()
        .value;
    let b = store
        .create_user("b", Micros(50), 1_000_000)
        .await
        .unwrap()
        .value;
    let z = store
        .create_user("z", Micros(0), 1_000_000)
        .await
        .unwrap()
        .value;
    let v = store.config_version().await.unwrap();
    assert_eq!(
        store.ingest_usage(&[]).await.unwrap(),
        IngestOutcome::default()
    );
    // The same event twice in one batch is one event.
    let twice = event(a.id, 10, "m");
    let out = store
        .ingest_usage(&[twice.clone(), twice.clone()])
        .await
        .unwrap();
    assert_eq!(out.inserted, 1);
    assert_eq!(
        store.get_user(a.id).await.unwrap().balance_micros,
        Micros(90)
    );
    // An event of an unknown user is kept; nobody is exhausted.
    let ghost = store
        .ingest_usage(&[event(UserId(999), 10, "m")])
        .await
        .unwrap();
    assert_eq!(
        ghost,
        IngestOutcome {
            inserted: 1,
            ..Default::default()
        }
    );
    assert_eq!(store.config_version().await.unwrap(), v);
    // Two users cross zero in one batch (one lands exactly on it): one bump for both. A user
    // already at zero crosses nothing.
    let out = store
        .ingest_usage(&[
            event(a.id, 90, "m"),
            event(b.id, 60, "m"),
            event(z.id, 5, "m"),
            twice,
        ])
        .await
        .unwrap();
    assert_eq!(out.inserted, 3);
    let mut exhausted = out.exhausted_users.clone();
    exhausted.sort_unstable();
    assert_eq!(exhausted, [a.id, b.id]);
    assert_eq!(out.version, Some(v + 1));
    assert_eq!(store.config_version().await.unwrap(), v + 1);
    let balances: Vec<Micros> = store
        .list_users(None, None, 1_000)
        .await
        .unwrap()
        .iter()
        .map(|u| u.balance_micros)
        .collect();
    assert_eq!(balances, [Micros(0), Micros(-10), Micros(-5)]);
    assert_eq!(
        db.scalar(
            "SELECT COUNT(*) FROM usage_events WHERE user_id = $1",
            &[a.id.get()]
        )
        .await,
        2
    );
    let snapshot = store.snapshot_state().await.unwrap();
    assert_eq!(snapshot.version, v + 1);
    assert_eq!(
        snapshot
            .users
            .iter()
            .map(|u| u.balance_micros)
            .collect::<Vec<_>>(),
        balances,
        "the bumped snapshot carries the debits"
    );
}

#[allow(clippy::too_many_arguments)]
fn event_at(
    user_id: UserId,
    key_id: KeyId,
    upstream_id: Option<UpstreamId>,
    model: &str,
    cost: i64,
    started_at: &str,
    estimated: bool,
) -> UsageRow {
    UsageRow {
        key_id,
        upstream_id,
        started_at: at(started_at),
        estimated,
        ..event(user_id, cost, model)
    }
}

async fn usage_filters_and_summaries_agree_with_the_ledger(store: Store, db: Backend) {
    let u1 = store
        .create_user("u1", Micros(1_000_000), 1_000_000)
        .await
        .unwrap()
        .value
        .id;
    let u2 = store
        .create_user("u2", Micros(1_000_000), 1_000_000)
        .await
        .unwrap()
        .value
        .id;
    let e1 = event_at(
        u1,
        KeyId(1),
        Some(UpstreamId(7)),
        "gpt-5",
        100,
        "2026-03-01T10:00:00Z",
        false,
    );
    let e2 = event_at(
        u1,
        KeyId(2),
        Some(UpstreamId(8)),
        "gpt-5-mini",
        50,
        "2026-03-02T10:00:00Z",
        true,
    );
    // No upstream answered this one: it counts as an error.
    let e3 = UsageRow {
        status: UsageStatus::UpstreamError,
        ..event_at(
            u2,
            KeyId(3),
            None,
            "gpt-5",
            300,
            "2026-03-02T11:00:00Z",
            false,
        )
    };
    let e4 = event_at(
        u2,
        KeyId(3),
        Some(UpstreamId(7)),
        "gpt-5",
        25,
        "2026-03-02T12:00:00Z",
        true,
    );
    let batch = [e1.clone(), e2.clone(), e3.clone(), e4.clone()];
    assert_eq!(store.ingest_usage(&batch).await.unwrap().inserted, 4);

    let all = UsageFilter {
        limit: 100,
        ..Default::default()
    };
    let list = |f: UsageFilter| {
        let store = store.clone();
        async move { store.list_usage(&f).await.unwrap() }
    };
    assert_eq!(
        list(all.clone()).await,
        [e4.clone(), e3.clone(), e2.clone(), e1.clone()],
        "every field round-trips, newest first"
    );
    let ids = |rows: Vec<UsageRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let cases = [
        (
            UsageFilter {
                limit: 2,
                ..all.clone()
            },
            vec![e4.id, e3.id],
        ),
        (
            UsageFilter {
                key_id: Some(KeyId(3)),
                ..all.clone()
            },
            vec![e4.id, e3.id],
        ),
        (
            UsageFilter {
                upstream_id: Some(UpstreamId(7)),
                ..all.clone()
            },
            vec![e4.id, e1.id],
        ),
        (
            UsageFilter {
                model: Some("gpt-5-mini".into()),
                ..all.clone()
            },
            vec![e2.id],
        ),
        (
            UsageFilter {
                user_id: Some(u2),
                model: Some("gpt-5".into()),
                ..all.clone()
            },
            vec![e4.id, e3.id],
        ),
        (
            UsageFilter {
                since: Some(at("2026-03-02T11:00:00Z")),
                ..all.clone()
            },
            vec![e4.id, e3.id],
        ),
        (
            UsageFilter {
                until: Some(at("2026-03-02T11:00:00Z")),
                ..all.clone()
            },
            vec![e2.id, e1.id],
        ),
        (
            UsageFilter {
                since: Some(at("2026-03-02T00:00:00Z")),
                until: Some(at("2026-03-02T12:00:00Z")),
                ..all.clone()
            },
            vec![e3.id, e2.id],
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(ids(list(filter.clone()).await), expected, "{filter:?}");
    }

    let summary = |by: SummaryBy, f: UsageFilter| {
        let store = store.clone();
        async move { store.summarize_usage(by, &f).await.unwrap() }
    };
    let groups = |rows: &[control_plane::store::SummaryRow]| {
        rows.iter()
            .map(|r| {
                (
                    r.grp.clone(),
                    r.totals.requests,
                    r.totals.cost_micros.get(),
                    r.totals.estimated,
                )
            })
            .collect::<Vec<_>>()
    };
    let by_user = summary(SummaryBy::User, all.clone()).await;
    assert_eq!(
        groups(&by_user),
        [(u2.to_string(), 2, 325, 1), (u1.to_string(), 2, 150, 1)]
    );
    assert_eq!(
        (
            by_user[0].totals.input_tokens,
            by_user[0].totals.cached_tokens,
            by_user[0].totals.output_tokens,
            by_user[0].totals.reasoning_tokens
        ),
        (200, 80, 20, 4)
    );
    assert_eq!(
        groups(&summary(SummaryBy::Model, all.clone()).await),
        [("gpt-5".into(), 3, 425, 1), ("gpt-5-mini".into(), 1, 50, 1)]
    );
    assert_eq!(
        groups(&summary(SummaryBy::Day, all.clone()).await),
        [
            ("2026-03-02".into(), 3, 375, 2),
            ("2026-03-01".into(), 1, 100, 0)
        ]
    );
    assert_eq!(
        groups(&summary(SummaryBy::Upstream, all.clone()).await),
        [
            ("-".into(), 1, 300, 0),
            ("7".into(), 2, 125, 1),
            ("8".into(), 1, 50, 1)
        ]
    );
    let errors = |rows: &[control_plane::store::SummaryRow]| {
        rows.iter()
            .map(|r| (r.grp.clone(), r.totals.errors))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        errors(&summary(SummaryBy::Upstream, all.clone()).await),
        [("-".into(), 1), ("7".into(), 0), ("8".into(), 0)]
    );
    // Whenever the rollups answer, the ledger itself must give the same rows: a `since`
    // before every event (and on no whole hour) changes nothing but forces the ledger.
    let long_ago = Some(at("2000-01-01T00:00:00.000001Z"));
    for by in [SummaryBy::User, SummaryBy::Model, SummaryBy::Day] {
        for filter in [
            all.clone(),
            UsageFilter {
                user_id: Some(u1),
                ..all.clone()
            },
            UsageFilter {
                model: Some("gpt-5".into()),
                ..all.clone()
            },
        ] {
            let ledger = UsageFilter {
                since: long_ago,
                ..filter.clone()
            };
            assert!(filter.rollups_answer(by) && !ledger.rollups_answer(by));
            assert_eq!(
                summary(by, filter.clone()).await,
                summary(by, ledger).await,
                "{by:?} {filter:?}"
            );
        }
    }
    // Every table a summary can read gives what the ledger gives, for every grouping and
    // every filter (alone and paired), and each is asked where it is the smallest to answer.
    let filters = [
        ("none", UsageFilter::default()),
        (
            "user",
            UsageFilter {
                user_id: Some(u2),
                ..UsageFilter::default()
            },
        ),
        (
            "key",
            UsageFilter {
                key_id: Some(KeyId(3)),
                ..UsageFilter::default()
            },
        ),
        (
            "upstream",
            UsageFilter {
                upstream_id: Some(UpstreamId(7)),
                ..UsageFilter::default()
            },
        ),
        (
            "model",
            UsageFilter {
                model: Some("gpt-5".into()),
                ..UsageFilter::default()
            },
        ),
        (
            "user+model",
            UsageFilter {
                user_id: Some(u1),
                model: Some("gpt-5-mini".into()),
                ..UsageFilter::default()
            },
        ),
        (
            "upstream+model",
            UsageFilter {
                upstream_id: Some(UpstreamId(7)),
                model: Some("gpt-5".into()),
                ..UsageFilter::default()
            },
        ),
        (
            "user+upstream",
            UsageFilter {
                user_id: Some(u1),
                upstream_id: Some(UpstreamId(7)),
                ..UsageFilter::default()
            },
        ),
    ];
    // Time windows on whole days and whole hours, which rollups keep.
    let windows = [
        ("all time", None, None),
        ("days", Some(at("2026-03-02T00:00:00Z")), None),
        (
            "hours",
            Some(at("2026-03-02T10:00:00Z")),
            Some(at("2026-03-02T12:00:00Z")),
        ),
    ];
    let mut asked = Vec::new();
    for by in [
        SummaryBy::User,
        SummaryBy::Model,
        SummaryBy::Upstream,
        SummaryBy::Day,
        SummaryBy::Key,
        SummaryBy::Hour,
    ] {
        for (name, filter) in &filters {
            for &(window, since, until) in &windows {
                let filter = UsageFilter {
                    since,
                    until,
                    ..filter.clone()
                };
                // The same bounds a microsecond earlier (no event falls between), or a start
                // before every event: on no whole hour, so only the ledger can answer.
                let earlier =
                    |t: Option<DateTime<Utc>>| t.map(|t| t - ChronoDuration::microseconds(1));
                let ledger = UsageFilter {
                    since: earlier(since).or(long_ago),
                    until: earlier(until),
                    ..filter.clone()
                };
                assert_eq!(ledger.source(by), UsageSource::Ledger);
                let from = filter.source(by);
                asked.push((by, *name, window, from));
                assert_eq!(
                    summary(by, filter.clone()).await,
                    summary(by, ledger).await,
                    "{by:?} {name} {window} from {from:?}"
                );
            }
        }
    }
    // The migration that added the totals fills them from the hourly rollups to the same rows.
    let before: Vec<_> = {
        let mut all = Vec::new();
        for by in [SummaryBy::User, SummaryBy::Model, SummaryBy::Day] {
            all.push(summary(by, UsageFilter::default()).await);
        }
        all
    };
    db.rerun_backfill(
        TOTALS_MIGRATIONS,
        BACKFILL_MARK,
        &["usage_by_user", "usage_by_day"],
    )
    .await;
    for (by, was) in [SummaryBy::User, SummaryBy::Model, SummaryBy::Day]
        .into_iter()
        .zip(before)
    {
        assert_eq!(summary(by, UsageFilter::default()).await, was, "{by:?}");
    }
    // The one for the dashboard fills the per-hour totals and counts the daily rollups'
    // failures from the hourly rollups.
    let u2_days = UsageFilter {
        user_id: Some(u2),
        ..UsageFilter::default()
    };
    let was = summary(SummaryBy::Day, u2_days.clone()).await;
    assert_eq!(errors(&was), [("2026-03-02".into(), 1)]);
    let hours = summary(SummaryBy::Hour, UsageFilter::default()).await;
    assert_eq!(UsageFilter::default().source(SummaryBy::Hour), ByHour);
    let backfill = db.backfill_of(DASHBOARD_MIGRATIONS, ERRORS_BACKFILL_MARK);
    db.run_sql(format!("UPDATE usage_daily SET errors = 0; {backfill}"))
        .await;
    assert_eq!(summary(SummaryBy::Day, u2_days).await, was);
    db.rerun_backfill(DASHBOARD_MIGRATIONS, BACKFILL_MARK, &["usage_by_hour"])
        .await;
    assert_eq!(
        summary(SummaryBy::Hour, UsageFilter::default()).await,
        hours
    );
    use UsageSource::{ByDay, ByHour, ByUser, Daily, Hourly};
    let expected = [
        (
            SummaryBy::User,
            ["none", "user", "model", "user+model"],
            ByUser,
        ),
        (
            SummaryBy::Model,
            ["none", "upstream", "model", "upstream+model"],
            ByDay,
        ),
        (
            SummaryBy::Day,
            ["none", "upstream", "model", "upstream+model"],
            ByDay,
        ),
        (
            SummaryBy::Upstream,
            ["none", "upstream", "model", "upstream+model"],
            ByDay,
        ),
    ];
    for (by, names, source) in expected {
        for name in names {
            assert!(
                asked.contains(&(by, name, "all time", source)),
                "{by:?} {name}: {asked:?}"
            );
        }
    }
    for (by, name, window, source) in [
        (SummaryBy::Model, "user", "all time", ByUser),
        (SummaryBy::Day, "user", "all time", Daily),
        (SummaryBy::User, "key", "all time", Hourly),
        (SummaryBy::Day, "key", "all time", Hourly),
        (SummaryBy::Upstream, "user+upstream", "all time", Hourly),
        (SummaryBy::Key, "none", "all time", Hourly),
        (SummaryBy::Key, "user+model", "all time", Hourly),
        (SummaryBy::Hour, "none", "all time", ByHour),
        (SummaryBy::Hour, "upstream+model", "all time", ByHour),
        (SummaryBy::Hour, "key", "all time", Hourly),
        (SummaryBy::Model, "none", "days", ByDay),
        (SummaryBy::Day, "upstream+model", "days", ByDay),
        (SummaryBy::User, "none", "days", Daily),
        (SummaryBy::Model, "user", "days", Daily),
        (SummaryBy::Hour, "none", "days", ByHour),
        (SummaryBy::Model, "none", "hours", ByHour),
        (SummaryBy::Upstream, "model", "hours", ByHour),
        (SummaryBy::User, "none", "hours", Hourly),
        (SummaryBy::Day, "upstream", "hours", ByHour),
        (SummaryBy::Model, "key", "hours", Hourly),
    ] {
        assert!(
            asked.contains(&(by, name, window, source)),
            "{by:?} {name} {window}: {asked:?}"
        );
    }
    assert_eq!(
        groups(&summary(SummaryBy::Key, all.clone()).await),
        [
            ("3".into(), 2, 325, 1),
            ("1".into(), 1, 100, 0),
            ("2".into(), 1, 50, 1)
        ]
    );
    assert_eq!(
        groups(&summary(SummaryBy::Hour, all.clone()).await),
        [
            ("2026-03-02T11:00:00Z".into(), 1, 300, 0),
            ("2026-03-01T10:00:00Z".into(), 1, 100, 0),
            ("2026-03-02T10:00:00Z".into(), 1, 50, 1),
            ("2026-03-02T12:00:00Z".into(), 1, 25, 1)
        ],
        "UTC hours, as the ledger's events fell in them"
    );
    let key3 = summary(
        SummaryBy::User,
        UsageFilter {
            key_id: Some(KeyId(3)),
            ..all.clone()
        },
    )
    .await;
    assert_eq!(groups(&key3), [(u2.to_string(), 2, 325, 1)]);
    let upstream7 = summary(
        SummaryBy::Model,
        UsageFilter {
            upstream_id: Some(UpstreamId(7)),
            ..all.clone()
        },
    )
    .await;
    assert_eq!(groups(&upstream7), [("gpt-5".into(), 2, 125, 1)]);

    let daily = store.daily_usage(None).await.unwrap();
    assert_eq!(
        daily
            .iter()
            .map(|d| (
                d.day.as_str(),
                d.user_id,
                d.model.as_str(),
                d.totals.requests,
                d.totals.cost_micros.get(),
                d.totals.estimated
            ))
            .collect::<Vec<_>>(),
        [
            ("2026-03-02", u1, "gpt-5-mini", 1, 50, 1),
            ("2026-03-02", u2, "gpt-5", 2, 325, 1),
            ("2026-03-01", u1, "gpt-5", 1, 100, 0),
        ],
        "newest day first, then user and model"
    );
    let u2_daily = store.daily_usage(Some(u2)).await.unwrap();
    assert_eq!(u2_daily, [daily[1].clone()]);
    assert_eq!(
        (
            u2_daily[0].totals.input_tokens,
            u2_daily[0].totals.cached_tokens,
            u2_daily[0].totals.output_tokens,
            u2_daily[0].totals.reasoning_tokens
        ),
        (200, 80, 20, 4)
    );
    assert!(
        store
            .daily_usage(Some(UserId(999)))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn usage_statuses_are_kept_by_name(store: Store, db: Backend) {
    let ann = store
        .create_user("ann", Micros(10), 1_000_000)
        .await
        .unwrap()
        .value;
    let with = |status: UsageStatus| UsageRow {
        status,
        started_at: at("2026-03-03T10:00:00Z"),
        ..event(ann.id, 1, "m")
    };
    let mut rows: Vec<UsageRow> = UsageStatus::ALL.iter().copied().map(with).collect();
    // A status the data plane did not say (or this build does not know) is still billed.
    rows.push(with(UsageStatus::Unspecified));
    assert_eq!(
        store.ingest_usage(&rows).await.unwrap().inserted,
        rows.len() as u64
    );
    let count = |sql: &'static str| {
        let db = db.clone();
        async move { db.scalar(sql, &[]).await }
    };
    assert_eq!(
        count(
            "SELECT COUNT(DISTINCT status) FROM usage_events WHERE status IN ('completed', \
             'incomplete', 'failed', 'client_cancelled', 'upstream_error', 'unspecified')"
        )
        .await,
        6,
        "each status is stored as the word the column always held"
    );
    let mut listed = store
        .list_usage(&UsageFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    listed.sort_by_key(|r| r.id);
    rows.sort_by_key(|r| r.id);
    assert_eq!(listed, rows, "every status reads back as written");
    assert_eq!(
        store.get_user(ann.id).await.unwrap().balance_micros,
        Micros(10 - rows.len() as i64)
    );
}

async fn dead_letters_keep_the_first_report(store: Store, db: Backend) {
    let v = store.config_version().await.unwrap();
    store
        .dead_letter("1-0", Some(b"garbage"), "not a usage event")
        .await
        .unwrap();
    store.dead_letter("1-0", None, "again").await.unwrap();
    store.dead_letter("2-0", None, "empty entry").await.unwrap();
    let count = |sql: &'static str| {
        let db = db.clone();
        async move { db.scalar(sql, &[]).await }
    };
    assert_eq!(count("SELECT COUNT(*) FROM usage_dead_letters").await, 2);
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM usage_dead_letters WHERE stream_id = '1-0' \
             AND error = 'not a usage event' AND payload IS NOT NULL"
        )
        .await,
        1,
        "the first report of an entry stays"
    );
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM usage_dead_letters WHERE stream_id = '2-0' AND payload IS NULL"
        )
        .await,
        1
    );
    assert_eq!(
        store.config_version().await.unwrap(),
        v,
        "dead letters are not config"
    );
}

async fn snapshots_hold_every_row_their_version_covers(store: Store, _: Backend) {
    let on = store
        .create_upstream(new_upstream("on"))
        .await
        .unwrap()
        .value;
    let off = store
        .create_upstream(NewUpstream {
            enabled: false,
            api_key_enc: vec![4, 5],
            ..new_upstream("off")
        })
        .await
        .unwrap()
        .value;
    let ann = store
        .create_user("ann", Micros(10), 1_000_000)
        .await
        .unwrap()
        .value;
    let bob = store
        .create_user("bob", Micros(0), 1_500_000)
        .await
        .unwrap()
        .value;
    store.create_key(key_for(bob.id, 1)).await.unwrap();
    store.create_key(key_for(ann.id, 2)).await.unwrap();
    for model in ["b", "a"] {
        store
            .set_price(PriceRow {
                model: model.into(),
                input_micros: Micros(1),
                cached_input_micros: Micros(1),
                output_micros: Micros(1),
            })
            .await
            .unwrap();
    }
    let state = store.snapshot_state().await.unwrap();
    assert_eq!(state.version, store.config_version().await.unwrap());
    assert_eq!(
        state
            .upstreams
            .iter()
            .map(|u| (u.upstream.id, u.upstream.enabled, u.api_key_enc.clone()))
            .collect::<Vec<_>>(),
        [(on.id, true, vec![1, 2, 3]), (off.id, false, vec![4, 5])],
        "disabled upstreams are in snapshots too"
    );
    assert_eq!(
        state.keys.iter().map(|k| k.user_id).collect::<Vec<_>>(),
        [bob.id, ann.id],
        "keys by id"
    );
    assert_eq!(
        state
            .users
            .iter()
            .map(|u| (u.id, u.balance_micros, u.multiplier_ppm))
            .collect::<Vec<_>>(),
        [
            (ann.id, Micros(10), 1_000_000),
            (bob.id, Micros(0), 1_500_000)
        ]
    );
    assert_eq!(
        state
            .prices
            .iter()
            .map(|p| p.model.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    store.delete_upstream(off.id).await.unwrap();
    let next = store.snapshot_state().await.unwrap();
    assert_eq!(next.version, state.version + 1);
    assert_eq!(next.upstreams.len(), 1);
}

async fn changes_announce_bumps_and_nothing_else(store: Store, db: Backend) {
    let mut feed = store.changes().await.unwrap();
    let announced = Duration::from_secs(10);
    let silence = Duration::from_millis(500);
    let ann = store
        .create_user("ann", Micros(10), 1_000_000)
        .await
        .unwrap()
        .value;
    timeout(announced, feed.next())
        .await
        .expect("an admin change is announced")
        .unwrap();
    let up = store
        .create_upstream(new_upstream("a"))
        .await
        .unwrap()
        .value;
    timeout(announced, feed.next())
        .await
        .expect("an admin change is announced")
        .unwrap();

    // Writes that change nothing data planes enforce announce nothing.
    let v = store.config_version().await.unwrap();
    store
        .record_health(&[HealthUpdate {
            upstream_id: up.id,
            health: UpstreamHealth::Healthy,
            error: String::new(),
            bump: false,
        }])
        .await
        .unwrap();
    store.ingest_usage(&[event(ann.id, 1, "m")]).await.unwrap();
    store.dead_letter("1-0", None, "bad").await.unwrap();
    assert!(store.create_user("ann", Micros(0), 1).await.is_err());
    assert!(
        timeout(silence, feed.next()).await.is_err(),
        "nothing was announced"
    );
    assert_eq!(store.config_version().await.unwrap(), v);

    // A balance crossing zero and a probe that changes routing are announced.
    let crossed = store.ingest_usage(&[event(ann.id, 9, "m")]).await.unwrap();
    assert_eq!(crossed.version, Some(v + 1));
    timeout(announced, feed.next())
        .await
        .expect("exhaustion is announced")
        .unwrap();
    store
        .record_health(&[HealthUpdate {
            upstream_id: up.id,
            health: UpstreamHealth::Unhealthy,
            error: "503".into(),
            bump: true,
        }])
        .await
        .unwrap();
    timeout(announced, feed.next())
        .await
        .expect("a routing change is announced")
        .unwrap();

    // On Postgres a change made by another replica is announced here too.
    if db.kind == Kind::Postgres {
        let replica = Store::connect(&db.url).await.unwrap();
        replica
            .adjust_balance(ann.id, Micros(100), "top-up")
            .await
            .unwrap();
        timeout(announced, feed.next())
            .await
            .expect("another replica's change is announced")
            .unwrap();
    }
}

async fn leadership_is_exclusive_on_postgres_and_local_on_sqlite(store: Store, db: Backend) {
    let mut leader = store
        .try_lead(Duty::HealthChecks)
        .await
        .unwrap()
        .expect("free leadership is taken");
    assert!(leader.holds().await);
    // Another duty is led on its own lock, whoever leads health checks.
    let retention = store
        .try_lead(Duty::UsageRetention)
        .await
        .unwrap()
        .expect("retention has a lock of its own");
    retention.release().await;
    let rival = store.try_lead(Duty::HealthChecks).await.unwrap();
    match db.kind {
        Kind::Postgres => assert!(rival.is_none(), "only one replica leads"),
        Kind::Sqlite => assert!(rival.is_some(), "the one SQLite process always leads"),
    }
    if let Some(rival) = rival {
        rival.release().await;
    }
    assert!(leader.holds().await);
    leader.release().await;
    // The server frees the lock when it has ended the session, which may take a moment.
    let mut again = None;
    for _ in 0..50 {
        again = store.try_lead(Duty::HealthChecks).await.unwrap();
        if again.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut again = again.expect("released leadership is free again");
    assert!(again.holds().await);
    again.release().await;
}

async fn upstream_models_round_trip_and_an_update_replaces_them(store: Store, _: Backend) {
    let every = store.create_upstream(new_upstream("every")).await.unwrap();
    assert!(every.value.models.is_empty(), "empty = every model");
    let served = ["gpt-5".to_owned(), "gpt-5-codex".to_owned()];
    let some = store
        .create_upstream(NewUpstream {
            models: served.to_vec(),
            ..new_upstream("some")
        })
        .await
        .unwrap();
    assert_eq!(some.version, every.version + 1);
    assert_eq!(some.value.models, served, "kept in the order given");
    let id = some.value.id;
    assert_eq!(store.get_upstream(id).await.unwrap().models, served);
    let listed = store.list_upstreams().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|u| (u.name.as_str(), u.models.len()))
            .collect::<Vec<_>>(),
        [("every", 0), ("some", 2)]
    );

    let untouched = store
        .update_upstream(
            id,
            UpstreamPatch {
                weight: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(untouched.value.models, served, "an unset list stays");

    let replaced = store
        .update_upstream(
            id,
            UpstreamPatch {
                models: Some(vec!["o3".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        replaced.version,
        untouched.version + 1,
        "a model change bumps"
    );
    assert_eq!(replaced.value.models, ["o3"], "an update replaces the list");
    let state = store.snapshot_state().await.unwrap();
    assert_eq!(state.version, replaced.version);
    let snap = state
        .upstreams
        .iter()
        .find(|u| u.upstream.id == id)
        .unwrap();
    assert_eq!(snap.upstream.models, ["o3"], "snapshots read the list");

    let cleared = store
        .update_upstream(
            id,
            UpstreamPatch {
                models: Some(vec![]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(cleared.version, replaced.version + 1);
    assert!(cleared.value.models.is_empty(), "back to every model");
    assert!(store.get_upstream(id).await.unwrap().models.is_empty());
    assert!(
        store
            .upstream_with_secret(id)
            .await
            .unwrap()
            .upstream
            .models
            .is_empty()
    );
}

/// Hourly rollups hold exactly the ledger grouped by UTC hour, key, user, model and upstream
/// (none included) however the events arrive (several per group in one batch, duplicates,
/// redelivered batches), the migration's backfill computes the same rows, and key spend counts
/// whole hours: an event at HH:59:59.999 is HH's, and a `since` inside an hour takes it all.
async fn hourly_rollups_agree_with_the_ledger_and_bound_key_spend(store: Store, db: Backend) {
    let u1 = store
        .create_user("h1", Micros(1_000_000), 1_000_000)
        .await
        .unwrap()
        .value
        .id;
    let u2 = store
        .create_user("h2", Micros(1_000_000), 1_000_000)
        .await
        .unwrap()
        .value
        .id;
    let (k1, k2, k3) = (KeyId(1), KeyId(2), KeyId(3));
    let (up7, up8) = (Some(UpstreamId(7)), Some(UpstreamId(8)));
    let with_status = |status, r: UsageRow| UsageRow { status, ..r };
    let first = vec![
        event_at(u1, k3, up7, "m-a", 3, "2026-01-01T09:59:59Z", false),
        event_at(u1, k1, up7, "m-a", 100, "2026-01-01T10:00:00Z", false),
        event_at(u1, k1, up7, "m-a", 200, "2026-01-01T10:59:59.999Z", true),
        event_at(u1, k1, None, "m-a", 50, "2026-01-01T10:30:00Z", false),
        with_status(
            UsageStatus::Incomplete,
            event_at(u1, k1, None, "m-a", 5, "2026-01-01T10:31:00Z", false),
        ),
    ];
    let mut second = first[1..3].to_vec();
    second.extend([
        with_status(
            UsageStatus::Failed,
            event_at(u1, k1, up8, "m-b", 400, "2026-01-01T11:00:00Z", false),
        ),
        event_at(u2, k2, up7, "m-a", 1_000, "2026-01-01T11:15:00Z", true),
        event_at(u2, k2, up7, "m-a", 1_000, "2026-01-01T11:45:00Z", false),
        with_status(
            UsageStatus::ClientCancelled,
            event_at(u2, k2, None, "m-b", 7, "2026-01-02T00:00:00Z", false),
        ),
    ]);
    assert_eq!(store.ingest_usage(&first).await.unwrap().inserted, 5);
    assert_eq!(store.ingest_usage(&second).await.unwrap().inserted, 4);
    assert_eq!(store.ingest_usage(&second).await.unwrap().inserted, 0);

    let ledger = db.hourly_from_ledger().await;
    let since_start = at("2026-01-01T00:00:00Z");
    let rollups = store.hourly_usage(since_start).await.unwrap();
    assert_eq!(sorted_hourly(rollups.clone()), ledger);
    assert!(
        rollups.windows(2).all(|w| w[0].hour <= w[1].hour),
        "oldest hour first"
    );
    // Six groups: key 3 at 09h; key 1 at 10h through 7 and through none; key 1 at 11h on m-b
    // through 8; key 2 at 11h through 7 and on day two through none.
    assert_eq!(ledger.len(), 6);
    let ten_seven = rollups
        .iter()
        .find(|r| r.key_id == k1 && r.upstream_id == up7)
        .unwrap();
    assert_eq!(ten_seven.hour, at("2026-01-01T10:00:00Z"));
    assert_eq!(
        (
            ten_seven.totals.requests,
            ten_seven.totals.cost_micros,
            ten_seven.totals.estimated,
            ten_seven.totals.errors
        ),
        (2, Micros(300), 1, 0)
    );
    let ten_none = rollups
        .iter()
        .find(|r| r.key_id == k1 && r.upstream_id.is_none())
        .unwrap();
    assert_eq!(
        (
            ten_none.totals.requests,
            ten_none.totals.cost_micros,
            ten_none.totals.errors
        ),
        (2, Micros(55), 0)
    );
    let errors: Vec<_> = rollups
        .iter()
        .map(|r| (r.key_id, r.totals.errors))
        .collect();
    assert_eq!(errors.iter().map(|e| e.1).sum::<i64>(), 2, "{errors:?}");
    // `since` inside an hour takes in the whole hour.
    let from_ten_thirty = store
        .hourly_usage(at("2026-01-01T10:30:00Z"))
        .await
        .unwrap();
    assert_eq!(from_ten_thirty.len(), 5);
    assert!(from_ten_thirty.iter().all(|r| r.key_id != k3));

    // A day window's spend: the window that ends 24 h after `since` starts at `since`'s hour.
    let day_spend = |since: &'static str| {
        let store = store.clone();
        async move {
            let mut spent: Vec<(KeyId, Micros)> = store
                .key_spend(
                    &[k1, k2, k3, KeyId(99)],
                    at(since) + ChronoDuration::hours(24),
                )
                .await
                .unwrap()
                .into_values()
                .map(|s| (s.key_id, s.day))
                .filter(|(_, day)| day.is_positive())
                .collect();
            spent.sort();
            spent
        }
    };
    let all = vec![(k1, Micros(755)), (k2, Micros(2_007)), (k3, Micros(3))];
    assert_eq!(day_spend("2026-01-01T09:00:00Z").await, all);
    assert_eq!(day_spend("2026-01-01T09:59:59.999Z").await, all);
    let from_ten = vec![(k1, Micros(755)), (k2, Micros(2_007))];
    assert_eq!(day_spend("2026-01-01T10:00:00Z").await, from_ten);
    assert_eq!(day_spend("2026-01-01T10:59:59.999Z").await, from_ten);
    let from_eleven = vec![(k1, Micros(400)), (k2, Micros(2_007))];
    assert_eq!(day_spend("2026-01-01T11:00:00Z").await, from_eleven);
    assert_eq!(day_spend("2026-01-01T11:59:59Z").await, from_eleven);
    assert_eq!(
        day_spend("2026-01-01T12:00:00Z").await,
        vec![(k2, Micros(7))]
    );
    assert_eq!(
        day_spend("2026-01-02T00:00:01Z").await,
        vec![(k2, Micros(7))]
    );
    assert!(day_spend("2026-01-02T01:00:00Z").await.is_empty());
    assert!(store.key_spend(&[], since_start).await.unwrap().is_empty());
    let k3_spend = store.key_spend(&[k3], since_start).await.unwrap();
    assert_eq!(k3_spend.len(), 1);
    assert_eq!(k3_spend[&k3].lifetime, Micros(3));

    // The daily rollups still agree too (they share the ingest).
    let daily_cost: i64 = store
        .daily_usage(None)
        .await
        .unwrap()
        .iter()
        .map(|d| d.totals.cost_micros.0)
        .sum();
    assert_eq!(daily_cost, 755 + 2_007 + 3);

    // The migration's backfill, run over the same ledger, computes the same rows.
    db.rerun_backfill(HOURLY_MIGRATIONS, BACKFILL_MARK, &["usage_hourly"])
        .await;
    assert_eq!(
        sorted_hourly(store.hourly_usage(since_start).await.unwrap()),
        ledger
    );
}

fn caps(lifetime: Option<i64>, day: Option<i64>, week: Option<i64>) -> SpendCaps {
    SpendCaps {
        lifetime: lifetime.map(Micros),
        day: day.map(Micros),
        week: week.map(Micros),
        ..SpendCaps::default()
    }
}

async fn key_caps_round_trip_and_an_update_replaces_or_clears_them(store: Store, _: Backend) {
    let user = store
        .create_user("capped", Micros(1_000_000), 1_000_000)
        .await
        .unwrap()
        .value;
    let both = caps(Some(50_000_000), Some(5_000_000), None);
    let key = store
        .create_key(NewKey {
            caps: both,
            ..key_for(user.id, 1)
        })
        .await
        .unwrap()
        .value;
    assert_eq!(key.caps, both);
    assert_eq!(
        key.caps.iter().collect::<Vec<_>>(),
        [
            (SpendWindow::Lifetime, Micros(50_000_000)),
            (SpendWindow::Day, Micros(5_000_000))
        ]
    );
    assert_eq!(store.get_key(key.id).await.unwrap().caps, both);
    assert_eq!(
        store.list_keys(Some(user.id), None, 1_000).await.unwrap()[0].caps,
        both
    );
    let plain = store.create_key(key_for(user.id, 2)).await.unwrap().value;
    assert!(!plain.caps.any());
    assert!(matches!(
        store.get_key(KeyId(9_999)).await,
        Err(StoreError::NotFound { kind: "key", .. })
    ));

    // A patch without caps leaves them; one with caps replaces them all; empty clears them.
    let renamed = store
        .update_key(
            key.id,
            KeyPatch {
                name: Some("renamed".into()),
                ..KeyPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.value.caps, both);
    let weekly = caps(None, None, Some(7_000_000));
    let replaced = store
        .update_key(
            key.id,
            KeyPatch {
                caps: Some(weekly),
                ..KeyPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(replaced.value.caps, weekly);
    assert_eq!(replaced.version, renamed.version + 1);
    let cleared = store
        .update_key(
            key.id,
            KeyPatch {
                caps: Some(SpendCaps::default()),
                ..KeyPatch::default()
            },
        )
        .await
        .unwrap();
    assert!(!cleared.value.caps.any());
    assert_eq!(
        store.get_key(key.id).await.unwrap().caps,
        SpendCaps::default()
    );
}

async fn key_spend_counts_whole_hours_and_reaching_a_cap_bumps_once(store: Store, _: Backend) {
    let user = store
        .create_user("spender", Micros(1_000_000_000), 1_000_000)
        .await
        .unwrap()
        .value;
    // Only a lifetime cap: nothing rolls with the hours.
    let life = store
        .create_key(NewKey {
            caps: caps(Some(5_000), None, None),
            ..key_for(user.id, 1)
        })
        .await
        .unwrap()
        .value;
    let t = at("2026-01-02T10:15:00Z");
    assert_eq!(store.roll_spend_windows(t).await.unwrap(), None);
    let daily = store
        .create_key(NewKey {
            caps: caps(Some(5_000), Some(1_000), None),
            ..key_for(user.id, 2)
        })
        .await
        .unwrap()
        .value;
    let free = store.create_key(key_for(user.id, 3)).await.unwrap().value;

    // Spend in the past hours: 10:59:59 and 11:00 the day before, 08:00 on the day.
    let past = vec![
        event_at(
            user.id,
            daily.id,
            None,
            "m",
            100,
            "2026-01-01T10:59:59Z",
            false,
        ),
        event_at(
            user.id,
            daily.id,
            None,
            "m",
            200,
            "2026-01-01T11:00:00Z",
            false,
        ),
        event_at(
            user.id,
            daily.id,
            None,
            "m",
            300,
            "2026-01-02T08:00:00Z",
            false,
        ),
        event_at(
            user.id,
            free.id,
            None,
            "m",
            999,
            "2026-01-02T08:00:00Z",
            false,
        ),
    ];
    let out = store.ingest_usage(&past).await.unwrap();
    assert_eq!(out.inserted, 4);
    assert!(out.capped_keys.is_empty(), "long ago, in no window of now");
    let spend_at = |now: &'static str| {
        let store = store.clone();
        async move {
            store
                .key_spend(&[daily.id, life.id], at(now))
                .await
                .unwrap()
                .remove(&daily.id)
                .unwrap()
        }
    };
    let ms = |t: &str| at(t).timestamp_millis();
    // At 10:59:59 a day reaches back to 10:59:59 yesterday, whose whole hour counts.
    let s = spend_at("2026-01-02T10:59:59Z").await;
    assert_eq!(
        (s.lifetime, s.day, s.week, s.month),
        (Micros(600), Micros(600), Micros(600), Micros(600))
    );
    assert_eq!(s.five_hours, Micros(300), "05:00 onwards");
    assert_eq!(s.day_oldest, Some(at("2026-01-01T10:00:00Z")));
    assert_eq!(s.five_hours_oldest, Some(at("2026-01-02T08:00:00Z")));
    let states = daily.caps.states(Some(&s));
    assert_eq!(
        states,
        [
            SpendState::new(SpendWindow::Lifetime, Micros(5_000), Micros(600), 0),
            // 10:00's spend leaves the day window at 11:00 the next day.
            SpendState::new(
                SpendWindow::Day,
                Micros(1_000),
                Micros(600),
                ms("2026-01-02T11:00:00Z")
            ),
        ]
    );
    // On the hour it has left; the next hour's spend leaves an hour later.
    let s = spend_at("2026-01-02T11:00:00Z").await;
    assert_eq!(
        (s.day, s.day_oldest),
        (Micros(500), Some(at("2026-01-01T11:00:00Z")))
    );
    assert_eq!(
        daily.caps.states(Some(&s))[1].frees_at_ms,
        ms("2026-01-02T12:00:00Z")
    );
    let s = spend_at("2026-01-02T12:00:00Z").await;
    assert_eq!((s.day, s.lifetime), (Micros(300), Micros(600)));
    assert_eq!(spend_at("2026-01-09T08:59:59Z").await.week, Micros(300));
    assert_eq!(spend_at("2026-01-09T09:00:00Z").await.week, Micros(0));
    assert_eq!(spend_at("2026-01-09T09:00:00Z").await.week_oldest, None);
    assert_eq!(spend_at("2026-01-31T10:59:59Z").await.month, Micros(600));
    assert_eq!(spend_at("2026-01-31T11:00:00Z").await.month, Micros(500));
    // However many keys are asked about at once (here the one with spend comes third
    // thousand in).
    let many: Vec<KeyId> = (10_000..12_500).map(KeyId).chain([daily.id]).collect();
    let spent = store
        .key_spend(&many, at("2026-01-02T10:59:59Z"))
        .await
        .unwrap();
    assert_eq!(spent.len(), 1);
    assert_eq!(spent[&daily.id].day, Micros(600));
    // Nothing spent: left out.
    assert!(
        store
            .key_spend(&[life.id], at("2026-01-02T10:00:00Z"))
            .await
            .unwrap()
            .is_empty()
    );

    // Now: reaching the day cap bumps the version once; more spend over it does not.
    let v = store.config_version().await.unwrap();
    let now = |key: KeyId, cost: i64| UsageRow {
        key_id: key,
        ..event(user.id, cost, "m")
    };
    let out = store.ingest_usage(&[now(daily.id, 700)]).await.unwrap();
    assert!(out.capped_keys.is_empty(), "700 of 1000 today");
    assert_eq!(out.version, None);
    let out = store
        .ingest_usage(&[now(daily.id, 200), now(daily.id, 100), now(free.id, 5_000)])
        .await
        .unwrap();
    assert_eq!(out.capped_keys, [daily.id], "exactly at the cap is at it");
    assert_eq!(out.version, Some(v + 1));
    let out = store.ingest_usage(&[now(daily.id, 50)]).await.unwrap();
    assert!(
        out.capped_keys.is_empty(),
        "already over: nothing new to tell"
    );
    assert_eq!(out.version, None);
    // The lifetime cap is crossed on its own.
    let out = store.ingest_usage(&[now(life.id, 5_000)]).await.unwrap();
    assert_eq!(out.capped_keys, [life.id]);
    assert_eq!(out.version, Some(v + 2));

    // The snapshot carries what capped keys spent, in its own view, and nothing for the rest.
    let state = store.snapshot_state().await.unwrap();
    assert_eq!(state.version, v + 2);
    let mut capped: Vec<KeyId> = state.key_spend.keys().copied().collect();
    capped.sort();
    assert_eq!(capped, [life.id, daily.id]);
    let today = &state.key_spend[&daily.id];
    assert_eq!((today.day, today.lifetime), (Micros(1_050), Micros(1_650)));

    // The hour roll: once per hour whoever asks first, and only with a rolling cap.
    let v = store.config_version().await.unwrap();
    assert_eq!(store.roll_spend_windows(t).await.unwrap(), Some(v + 1));
    assert_eq!(
        store
            .roll_spend_windows(at("2026-01-02T10:59:59Z"))
            .await
            .unwrap(),
        None,
        "the same hour"
    );
    assert_eq!(
        store
            .roll_spend_windows(at("2026-01-02T09:00:00Z"))
            .await
            .unwrap(),
        None,
        "an hour already rolled"
    );
    assert_eq!(
        store
            .roll_spend_windows(at("2026-01-02T11:00:00Z"))
            .await
            .unwrap(),
        Some(v + 2)
    );
    store.revoke_key(daily.id).await.unwrap();
    assert_eq!(
        store
            .roll_spend_windows(at("2026-01-02T12:00:00Z"))
            .await
            .unwrap(),
        None,
        "a revoked key's windows roll for nobody"
    );
}

async fn retention_deletes_old_events_in_batches_and_keeps_the_rollups(store: Store, db: Backend) {
    use std::sync::Arc;

    use control_plane::{
        config::Retention,
        metrics::Metrics,
        retention::{RetentionSettings, UsageRetention},
    };

    let user = store
        .create_user("old-timer", Micros(1_000_000_000), 1_000_000)
        .await
        .unwrap()
        .value;
    // 11,000 events a minute apart ending at 2026-03-01, and 5 recent ones.
    let end = at("2026-03-01T00:00:00Z");
    let old: Vec<UsageRow> = (0..11_000)
        .map(|i| UsageRow {
            started_at: end - ChronoDuration::minutes(i),
            ..event(user.id, 3, "m")
        })
        .collect();
    for chunk in old.chunks(2_000) {
        store.ingest_usage(chunk).await.unwrap();
    }
    let recent: Vec<UsageRow> = (0..5).map(|_| event(user.id, 7, "m")).collect();
    store.ingest_usage(&recent).await.unwrap();
    let summary = |store: Store| async move {
        store
            .summarize_usage(SummaryBy::User, &UsageFilter::default())
            .await
            .unwrap()
    };
    let before = summary(store.clone()).await;
    assert_eq!(before[0].totals.requests, 11_005);
    let hourly_before = store
        .hourly_usage(at("2025-01-01T00:00:00Z"))
        .await
        .unwrap();

    // One batch at a time, oldest first, only before the cutoff.
    assert_eq!(
        store
            .delete_usage_before(at("2025-01-01T00:00:00Z"), 100)
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.delete_usage_before(end, 1_000).await.unwrap(), 1_000);
    let oldest: String = match db.kind {
        Kind::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            let t: DateTime<Utc> = sqlx::query_scalar("SELECT min(started_at) FROM usage_events")
                .fetch_one(&pool)
                .await
                .unwrap();
            pool.close().await;
            t.to_rfc3339()
        }
        Kind::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            let t: DateTime<Utc> = sqlx::query_scalar("SELECT min(started_at) FROM usage_events")
                .fetch_one(&pool)
                .await
                .unwrap();
            pool.close().await;
            t.to_rfc3339()
        }
    };
    assert_eq!(
        oldest.parse::<DateTime<Utc>>().unwrap(),
        end - ChronoDuration::minutes(10_999 - 1_000),
        "the oldest thousand went first"
    );

    // A pass deletes the rest before the cutoff, batch after batch, and counts them.
    let metrics = Arc::new(Metrics::new());
    let retention = UsageRetention::new(
        store.clone(),
        RetentionSettings {
            keep: Retention::Never,
            interval: Duration::from_secs(3_600),
        },
        metrics.clone(),
    );
    let deleted = retention
        .pass(end + ChronoDuration::seconds(1), &Default::default())
        .await
        .unwrap();
    assert_eq!(deleted, 10_000);
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM usage_events", &[]).await,
        5,
        "only the recent events are left"
    );
    assert_eq!(metrics.retention_deleted.get(), 10_000);
    assert_eq!(metrics.retention_running.get(), 0);
    // Summaries and rollups read as before: they are kept.
    assert_eq!(summary(store.clone()).await, before);
    assert_eq!(
        store
            .hourly_usage(at("2025-01-01T00:00:00Z"))
            .await
            .unwrap(),
        hourly_before
    );
}

async fn admin_changes_are_audited_with_their_author_and_never_a_secret(store: Store, _: Backend) {
    let admin = store.acting_as(Actor {
        principal: "admin token".into(),
        source: "10.0.0.7:50123".into(),
    });
    let mut versions = Vec::new();
    let up = NewUpstream {
        api_key_enc: b"ENCRYPTED-UPSTREAM-KEY".to_vec(),
        ..new_upstream("pool-a")
    };
    let up = admin.create_upstream(up).await.unwrap();
    versions.push(up.version);
    let patch = UpstreamPatch {
        name: Some("pool-b".into()),
        api_key: Some((b"ENCRYPTED-NEW-KEY".to_vec(), "sk-…wxyz".into())),
        ..UpstreamPatch::default()
    };
    versions.push(
        admin
            .update_upstream(up.value.id, patch)
            .await
            .unwrap()
            .version,
    );
    let user = admin
        .create_user("ada", Micros(5_000_000), 1_000_000)
        .await
        .unwrap();
    versions.push(user.version);
    let uid = user.value.id;
    versions.push(
        admin
            .adjust_balance(uid, Micros(-250), "refund")
            .await
            .unwrap()
            .version,
    );
    // A refused change leaves no entry: the entry is written in the change's transaction.
    assert!(matches!(
        admin.create_user("ada", Micros::ZERO, 1_000_000).await,
        Err(StoreError::Conflict(_))
    ));
    let multiplier = UserPatch {
        multiplier_ppm: Some(1_500_000),
        ..UserPatch::default()
    };
    versions.push(admin.update_user(uid, multiplier).await.unwrap().version);
    let key = admin.create_key(key_for(uid, 0xAB)).await.unwrap();
    versions.push(key.version);
    let kid = key.value.id;
    let limits = KeyPatch {
        expires_at: Some(None),
        rpm: Some(Some(60)),
        ..KeyPatch::default()
    };
    versions.push(admin.update_key(kid, limits).await.unwrap().version);
    versions.push(admin.revoke_key(kid).await.unwrap().version);
    let price = PriceRow {
        model: "gpt-5".into(),
        input_micros: Micros(1_250_000),
        cached_input_micros: Micros(125_000),
        output_micros: Micros(10_000_000),
    };
    versions.push(admin.set_price(price).await.unwrap().version);
    versions.push(admin.delete_upstream(up.value.id).await.unwrap().version);
    // Through a store no caller named, the change is still recorded.
    let plain = store
        .create_user("bob", Micros::ZERO, 1_000_000)
        .await
        .unwrap();
    versions.push(plain.version);
    store.dead_letter("9-0", None, "bad").await.unwrap();
    admin.drop_dead_letter("9-0", false).await.unwrap();

    let all = store.list_audit(100, None, None).await.unwrap();
    let actions: Vec<&str> = all.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "dead_letter.drop",
            "user.create",
            "upstream.delete",
            "price.set",
            "key.revoke",
            "key.update",
            "key.create",
            "user.update",
            "user.adjust_balance",
            "user.create",
            "upstream.update",
            "upstream.create",
        ],
        "newest first, the refused change absent"
    );
    let mut expected_versions: Vec<Option<i64>> = versions.iter().rev().map(|v| Some(*v)).collect();
    expected_versions.insert(0, None);
    assert_eq!(
        all.iter().map(|e| e.config_version).collect::<Vec<_>>(),
        expected_versions,
        "each entry names the version its change produced; a dead letter's produced none"
    );
    for e in &all {
        let unnamed = e.action == "user.create" && e.target == format!("user {}", plain.value.id);
        let (principal, source) = if unnamed {
            ("unnamed", "in-process")
        } else {
            ("admin token", "10.0.0.7:50123")
        };
        assert_eq!(
            (e.principal.as_str(), e.source.as_str()),
            (principal, source),
            "{e:?}"
        );
        for secret in ["ENCRYPTED", "api_key_enc", "digest", "171,171"] {
            assert!(!e.detail.contains(secret), "{secret} in {e:?}");
        }
        assert!(e.at <= Utc::now());
    }
    let detail = |action: &str| -> serde_json::Value {
        let e = all.iter().rev().find(|e| e.action == action).unwrap();
        serde_json::from_str(&e.detail).unwrap()
    };
    assert_eq!(
        detail("upstream.update"),
        serde_json::json!({"name": "pool-b", "api_key_hint": "sk-…wxyz"}),
        "only the fields set, a new key by its hint"
    );
    assert_eq!(
        detail("key.update"),
        serde_json::json!({"expires_at": null, "rpm": 60}),
        "a cleared field is null, an untouched one absent"
    );
    assert_eq!(
        detail("user.adjust_balance"),
        serde_json::json!({"amount_micros": -250, "reason": "refund"})
    );
    assert_eq!(detail("upstream.create")["name"], "pool-a");
    assert_eq!(detail("upstream.create")["api_key_hint"], "sk-…1234");
    assert_eq!(detail("key.create")["prefix"], "cgw-171");
    assert_eq!(detail("price.set")["output_micros"], 10_000_000);
    let targets: Vec<&str> = all.iter().map(|e| e.target.as_str()).collect();
    assert!(
        targets.contains(&format!("upstream {} (pool-a)", up.value.id).as_str()),
        "{targets:?}"
    );
    assert!(
        targets.contains(&format!("key {kid} (cgw-171…, user {uid})").as_str()),
        "{targets:?}"
    );
    assert!(targets.contains(&"price gpt-5"), "{targets:?}");

    // Pages continue where the last ended; `since` bounds them in time.
    let first = store.list_audit(5, None, None).await.unwrap();
    let rest = store
        .list_audit(100, Some(first[4].id), None)
        .await
        .unwrap();
    assert_eq!([first, rest].concat(), all);
    let later = Utc::now() + ChronoDuration::seconds(5);
    assert!(
        store
            .list_audit(100, None, Some(later))
            .await
            .unwrap()
            .is_empty()
    );
    let since_first = store
        .list_audit(100, None, Some(all[all.len() - 1].at))
        .await
        .unwrap();
    assert_eq!(since_first, all);
}

async fn users_and_keys_page_by_id_and_users_are_found_by_name(store: Store, _: Backend) {
    let mut ids = Vec::new();
    for name in ["Ada Lovelace", "ada_b", "adaXb", "bob", "100%"] {
        let user = store
            .create_user(name, Micros::ZERO, 1_000_000)
            .await
            .unwrap();
        ids.push(user.value.id);
    }
    let names = |rows: Vec<control_plane::store::UserRow>| {
        rows.into_iter().map(|u| u.name).collect::<Vec<_>>()
    };
    let found = |search: &'static str| {
        let store = store.clone();
        async move { names(store.list_users(Some(search), None, 100).await.unwrap()) }
    };
    assert_eq!(
        found("ADA").await,
        ["Ada Lovelace", "ada_b", "adaXb"],
        "any case"
    );
    assert_eq!(
        found("a_b").await,
        ["ada_b"],
        "an underscore is literal, not a wildcard"
    );
    assert_eq!(found("%").await, ["100%"], "so is a percent sign");
    assert!(found("carol").await.is_empty());

    let first = store.list_users(None, None, 2).await.unwrap();
    assert_eq!(first.iter().map(|u| u.id).collect::<Vec<_>>(), ids[..2]);
    let second = store.list_users(None, Some(first[1].id), 2).await.unwrap();
    assert_eq!(second.iter().map(|u| u.id).collect::<Vec<_>>(), ids[2..4]);
    let last = store.list_users(None, Some(second[1].id), 2).await.unwrap();
    assert_eq!(last.iter().map(|u| u.id).collect::<Vec<_>>(), ids[4..]);
    assert!(
        store
            .list_users(None, Some(ids[4]), 2)
            .await
            .unwrap()
            .is_empty()
    );
    let ada_after_first = store
        .list_users(Some("ada"), Some(ids[0]), 100)
        .await
        .unwrap();
    assert_eq!(
        names(ada_after_first),
        ["ada_b", "adaXb"],
        "search and cursor combine"
    );

    let mut ada_keys = Vec::new();
    for digest in 1..=3 {
        ada_keys.push(
            store
                .create_key(key_for(ids[0], digest))
                .await
                .unwrap()
                .value
                .id,
        );
    }
    let bob_key = store.create_key(key_for(ids[3], 4)).await.unwrap().value.id;
    let key_ids = |rows: Vec<control_plane::store::KeyRow>| {
        rows.into_iter().map(|k| k.id).collect::<Vec<_>>()
    };
    assert_eq!(
        key_ids(store.list_keys(None, None, 2).await.unwrap()),
        ada_keys[..2]
    );
    assert_eq!(
        key_ids(store.list_keys(None, Some(ada_keys[1]), 2).await.unwrap()),
        [ada_keys[2], bob_key]
    );
    assert_eq!(
        key_ids(
            store
                .list_keys(Some(ids[0]), Some(ada_keys[0]), 10)
                .await
                .unwrap()
        ),
        ada_keys[1..]
    );
    assert!(
        store
            .list_keys(Some(ids[3]), Some(bob_key), 10)
            .await
            .unwrap()
            .is_empty()
    );
}
