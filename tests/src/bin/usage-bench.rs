//! Usage at scale: with N events in the Postgres ledger (default 10,000,000, spread over 81
//! days, 1,000 users and their keys), how long the reads an operator and a key holder make
//! take through the real services, and what a retention pass costs ingest.
//!
//! 1. `usage list --user` (admin gRPC `ListUsage`), `usage summary` by user, model, day and
//!    upstream, and by day of one user and by model of one key (`SummarizeUsage`), the
//!    console's usage page (first and next page) and dashboard (48 hours, 90 days, one model),
//!    rendered for a signed-in operator, and a key's `GET /v1/usage` on a data plane: median
//!    and worst of 20 calls each.
//! 2. The ledger ingests E events (default 100,000) from Redis alone, then again while a
//!    retention pass works through the oldest ~10% of the ledger; prints both rates, the
//!    ratio, and how fast the pass deleted meanwhile.
//!
//! `cargo run --release -p gateway-tests --bin usage-bench -- [EVENTS] [INGEST]` (needs
//! Postgres and Redis as for `scripts/test`; the 10 M rows take a few minutes to write).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{TimeDelta, Utc};
use control_plane::{
    config::Retention,
    metrics::Metrics,
    retention::{RetentionSettings, UsageRetention},
    store::Store,
};
use gateway_proto::v1;
use gateway_tests::{Harness, HarnessOptions};
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;

const USERS: i64 = 1_000;
/// Seconds between consecutive events: 10 M of them span about 81 days.
const SPACING_SECS: f64 = 0.7;
const CALLS: usize = 20;

async fn timed<F: Future>(what: &str, mut call: impl FnMut() -> F) {
    let mut times = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let started = Instant::now();
        call().await;
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "{what:<40} median {:>7.2} ms   worst {:>7.2} ms",
        times[CALLS / 2].as_secs_f64() * 1e3,
        times[CALLS - 1].as_secs_f64() * 1e3
    );
}

/// Puts `n` events on the stream and measures how fast a control plane that starts now
/// ingests them; events/s.
async fn ingest_rate(h: &mut Harness, n: usize, first_user: i64, first_key: i64) -> f64 {
    gateway_tests::put_on_stream(
        h,
        (0..n as i64).map(|i| {
            let u = i % USERS;
            gateway_tests::bench_usage_event(first_user + u, first_key + u)
        }),
    )
    .await;
    let started = Instant::now();
    h.start_control_plane().await;
    h.wait_ingested_within(n as u64, Duration::from_secs(900))
        .await;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    h.stop_control_plane().await;
    rate
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let events: i64 = args
        .next()
        .map_or(10_000_000, |a| a.parse().expect("EVENTS"));
    let ingest: usize = args.next().map_or(100_000, |a| a.parse().expect("INGEST"));
    let mut h = Harness::start_opts(HarnessOptions {
        data_planes: 1,
        ..HarnessOptions::default()
    })
    .await;
    h.add_upstream("pool", 0, 1).await;
    let pool = h.db.pool().await;

    // Users and keys, then the ledger and its rollups, written in bulk by SQL.
    let written = Instant::now();
    sqlx::query(
        "INSERT INTO users (name, balance_micros) \
         SELECT 'u' || i, 1000000000000 FROM generate_series(1, $1) i",
    )
    .bind(USERS)
    .execute(&pool)
    .await
    .unwrap();
    let first_user: i64 = sqlx::query_scalar("SELECT min(id) FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    // One key through the API (its secret is needed for /v1/usage), the rest in bulk.
    let (key, secret, version) = h.add_key(first_user).await;
    sqlx::query(
        "INSERT INTO api_keys (user_id, name, prefix, digest) \
         SELECT $1 + i, 'bench', 'cgw-bench', sha256(('bench-' || i)::bytea) \
         FROM generate_series(1, $2 - 1) i",
    )
    .bind(first_user)
    .bind(USERS)
    .execute(&pool)
    .await
    .unwrap();
    let first_key = key.id;
    sqlx::query(
        "INSERT INTO usage_events (id, request_id, key_id, user_id, upstream_id, model, endpoint, \
           input_tokens, cached_tokens, output_tokens, reasoning_tokens, cost_micros, status, \
           stream, estimated, ttfb_ms, duration_ms, node_id, started_at) \
         SELECT gen_random_uuid(), 'req-' || i, $2 + (i % $3), $1 + (i % $3), 1, \
           (ARRAY['gpt-5.1-codex', 'gpt-5-mini', 'gpt-5'])[1 + i % 3], 'responses', \
           24000, 20000 - (i % 7) * 1000, 900, 400, 16500, \
           CASE WHEN i % 50 = 0 THEN 'upstream_error' ELSE 'completed' END, true, false, 300, \
           9000, 'bench', \
           now() - make_interval(secs => i * $4) \
         FROM generate_series(1, $5) i",
    )
    .bind(first_user)
    .bind(first_key)
    .bind(USERS)
    .bind(SPACING_SECS)
    .bind(events)
    .execute(&pool)
    .await
    .unwrap();
    for rollup in [
        "INSERT INTO usage_daily (day, user_id, model, requests, input_tokens, cached_tokens, \
           output_tokens, reasoning_tokens, cost_micros, estimated, errors) \
         SELECT to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), user_id, model, COUNT(*), \
           SUM(input_tokens), SUM(cached_tokens), SUM(output_tokens), SUM(reasoning_tokens), \
           SUM(cost_micros), 0, COUNT(*) FILTER (WHERE status <> 'completed') \
         FROM usage_events GROUP BY 1, 2, 3",
        "INSERT INTO usage_hourly (hour, key_id, user_id, model, upstream_id, requests, \
           input_tokens, cached_tokens, output_tokens, reasoning_tokens, cost_micros, estimated, \
           errors) \
         SELECT date_trunc('hour', started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', key_id, \
           user_id, model, upstream_id, COUNT(*), SUM(input_tokens), SUM(cached_tokens), \
           SUM(output_tokens), SUM(reasoning_tokens), SUM(cost_micros), 0, \
           COUNT(*) FILTER (WHERE status <> 'completed') \
         FROM usage_events GROUP BY 1, 2, 3, 4, 5",
        "INSERT INTO usage_by_user (user_id, model, requests, input_tokens, cached_tokens, \
           output_tokens, reasoning_tokens, cost_micros, estimated, errors) \
         SELECT user_id, model, COUNT(*), SUM(input_tokens), SUM(cached_tokens), \
           SUM(output_tokens), SUM(reasoning_tokens), SUM(cost_micros), 0, \
           COUNT(*) FILTER (WHERE status <> 'completed') FROM usage_events GROUP BY 1, 2",
        "INSERT INTO usage_by_day (day, model, upstream_id, requests, input_tokens, \
           cached_tokens, output_tokens, reasoning_tokens, cost_micros, estimated, errors) \
         SELECT to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), model, upstream_id, \
           COUNT(*), SUM(input_tokens), SUM(cached_tokens), SUM(output_tokens), \
           SUM(reasoning_tokens), SUM(cost_micros), 0, COUNT(*) FILTER (WHERE status <> 'completed') \
         FROM usage_events GROUP BY 1, 2, 3",
        "INSERT INTO usage_by_hour (hour, model, upstream_id, requests, input_tokens, \
           cached_tokens, output_tokens, reasoning_tokens, cost_micros, estimated, errors) \
         SELECT hour, model, upstream_id, SUM(requests), SUM(input_tokens), \
           SUM(cached_tokens), SUM(output_tokens), SUM(reasoning_tokens), SUM(cost_micros), \
           SUM(estimated), SUM(errors) FROM usage_hourly GROUP BY 1, 2, 3",
        "ANALYZE",
    ] {
        sqlx::query(rollup).execute(&pool).await.unwrap();
    }
    let daily: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_daily")
        .fetch_one(&pool)
        .await
        .unwrap();
    println!(
        "ledger: {events} events, {daily} daily rollup rows, written in {:.0} s",
        written.elapsed().as_secs_f64()
    );
    h.wait_applied(version).await;

    // 1. The reads.
    let admin = h.admin().await;
    let user = first_user + USERS / 2;
    timed("usage list --user (100 newest)", || {
        let mut admin = admin.clone();
        async move {
            let events = admin
                .list_usage(v1::ListUsageRequest {
                    user_id: Some(user),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .events;
            assert_eq!(events.len(), 100);
        }
    })
    .await;
    let all = v1::SummarizeUsageRequest::default();
    let of_user = v1::SummarizeUsageRequest {
        user_id: Some(user),
        ..all.clone()
    };
    let of_key = v1::SummarizeUsageRequest {
        key_id: Some(first_key),
        ..all.clone()
    };
    for (name, by, filter) in [
        ("usage summary --by user", v1::SummaryBy::User, &all),
        ("usage summary --by model", v1::SummaryBy::Model, &all),
        ("usage summary --by day", v1::SummaryBy::Day, &all),
        ("usage summary --by upstream", v1::SummaryBy::Upstream, &all),
        (
            "usage summary --by day --user",
            v1::SummaryBy::Day,
            &of_user,
        ),
        (
            "usage summary --by model --key",
            v1::SummaryBy::Model,
            &of_key,
        ),
    ] {
        timed(name, || {
            let mut admin = admin.clone();
            let request = v1::SummarizeUsageRequest {
                by: by as i32,
                ..filter.clone()
            };
            async move {
                let rows = admin
                    .summarize_usage(request)
                    .await
                    .unwrap()
                    .into_inner()
                    .rows;
                assert!(!rows.is_empty());
            }
        })
        .await;
    }
    let auth = format!("Bearer {secret}");
    timed("a key's GET /v1/usage (20 newest)", || {
        let h = &h;
        let auth = auth.clone();
        async move {
            let response = h
                .get_with(0, "/v1/usage", &[("authorization", &auth)])
                .await;
            assert_eq!(response.status(), 200);
            response.into_body().collect().await.unwrap();
        }
    })
    .await;

    // The console's usage page: its first page, and the page after it (keyset cursor), each
    // rendered for a signed-in operator through the real server.
    let console = {
        let mut c = gateway_tests::console::ConsoleClient::new(h.console_addr());
        let token = h.admin_token.expose().to_owned();
        let signed = c.post("/admin/login", &[("token", &token)]).await;
        assert_eq!(signed.status, 303);
        Arc::new(tokio::sync::Mutex::new(c))
    };
    let first = console.lock().await.get("/admin/usage").await;
    assert_eq!(first.status, 200);
    let body = first.body.replace("&#38;", "&").replace("&amp;", "&");
    let at = body
        .find("href=\"/admin/usage?&cursor=")
        .expect("a next page")
        + "href=\"".len();
    let next = body[at..at + body[at..].find('"').unwrap()].to_owned();
    for (name, path) in [
        ("console usage page (50 newest)", "/admin/usage".to_owned()),
        ("console usage page, the next 50", next),
    ] {
        timed(name, || {
            let console = console.clone();
            let path = path.clone();
            async move {
                let page = console.lock().await.get(&path).await;
                assert_eq!(page.status, 200);
                assert_eq!(page.body.matches("<tr>").count(), 51);
            }
        })
        .await;
    }

    // The dashboard: the last 48 hours by hour and the last 90 days by day (each three
    // summaries and the upstreams), and narrowed to one model.
    for (name, path) in [
        ("console dashboard, 48 hours", "/admin/"),
        ("console dashboard, 90 days", "/admin/?window=90d"),
        (
            "console dashboard, 90 days of one model",
            "/admin/?window=90d&model=gpt-5-mini",
        ),
    ] {
        timed(name, || {
            let console = console.clone();
            async move {
                let page = console.lock().await.get(path).await;
                assert_eq!(page.status, 200);
                assert!(!page.body.contains("id=\"total-requests\">0<"), "{path}");
            }
        })
        .await;
    }

    // 2. Ingest alone, then beside a retention pass over the oldest tenth.
    h.stop_control_plane().await;
    let alone = ingest_rate(&mut h, ingest, first_user, first_key).await;
    let store = Store::connect(&h.db.url).await.unwrap();
    let retention = UsageRetention::new(
        store,
        RetentionSettings {
            keep: Retention::Never,
            interval: Duration::from_secs(3600),
        },
        Arc::new(Metrics::new()),
    );
    let cutoff =
        Utc::now() - TimeDelta::milliseconds((events as f64 * SPACING_SECS * 0.9 * 1000.0) as i64);
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let pass = tokio::spawn(async move {
        let started = Instant::now();
        let deleted = retention.pass(cutoff, &cancel).await.unwrap();
        (deleted, started.elapsed())
    });
    let beside = ingest_rate(&mut h, ingest, first_user, first_key).await;
    // The pass goes on at its own pace (it is not in a hurry); stop it where it is.
    stop.cancel();
    let (deleted, took) = pass.await.unwrap();
    println!(
        "ingest alone: {alone:.0} events/s; beside a retention pass: {beside:.0} events/s \
         ({:.0}%); meanwhile the pass deleted {deleted} events in {:.1} s ({:.0}/s)",
        beside / alone * 100.0,
        took.as_secs_f64(),
        deleted as f64 / took.as_secs_f64()
    );
    pool.close().await;
    h.start_control_plane().await;
    h.shutdown().await;
}
