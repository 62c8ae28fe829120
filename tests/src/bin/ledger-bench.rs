//! Ledger benchmark: how fast the usage pipeline moves events, through the real code.
//!
//! 1. Consumer → Postgres: N events are put on a fresh Redis stream, then a control plane
//!    starts and its consumer group ingests them (rows + balance debits + daily and hourly
//!    rollups, one transaction per batch); prints events/s.
//! 2. Spool replay: a data plane starts with N events in its spool and replays them into
//!    Redis; prints events/s.
//!
//! `cargo run --release -p gateway-tests --bin ledger-bench -- [EVENTS]` (default 100000;
//! needs Postgres and Redis as for `scripts/test`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use data_plane::metering::spool::Spool;
use gateway_proto::v1::UsageEvent;
use gateway_tests::{DataPlaneOptions, Harness, HarnessOptions};

const USERS: i64 = 100;

fn event(user_id: i64) -> UsageEvent {
    gateway_tests::bench_usage_event(user_id, 1)
}

#[tokio::main]
async fn main() {
    let events: usize = std::env::args()
        .nth(1)
        .map_or(100_000, |a| a.parse().expect("EVENTS"));
    let mut h = Harness::start_opts(HarnessOptions {
        data_planes: 0,
        ..HarnessOptions::default()
    })
    .await;
    h.stop_control_plane().await;
    let pool = h.db.pool().await;
    sqlx::query("INSERT INTO users (name, balance_micros) SELECT 'u' || i, 1000000000000 FROM generate_series(1, $1) i")
        .bind(USERS)
        .execute(&pool)
        .await
        .unwrap();
    let first_user: i64 = sqlx::query_scalar("SELECT min(id) FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();

    // 1. The consumer into Postgres.
    gateway_tests::put_on_stream(
        &h,
        (0..events).map(|i| event(first_user + (i as i64 % USERS))),
    )
    .await;
    let redis = redis::Client::open(h.redis_url.as_str()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let started = Instant::now();
    h.start_control_plane().await;
    h.wait_ingested_within(events as u64, Duration::from_secs(600))
        .await;
    let consumer = started.elapsed();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, events as i64);
    println!(
        "consumer → Postgres: {events} events in {:.2} s = {:.0} events/s (rows, balance debits and the four rollups, one transaction per batch of ≤500)",
        consumer.as_secs_f64(),
        events as f64 / consumer.as_secs_f64()
    );

    // 2. Spool replay into Redis.
    let stream = format!("cgw-bench-spool:{}", uuid::Uuid::new_v4().simple());
    let spool_path =
        std::env::temp_dir().join(format!("cgw-bench-{}.spool", uuid::Uuid::new_v4().simple()));
    {
        let mut spool = Spool::open(&spool_path).unwrap();
        let all: Vec<UsageEvent> = (0..events)
            .map(|i| event(first_user + (i as i64 % USERS)))
            .collect();
        for chunk in all.chunks(256) {
            spool.append(chunk).unwrap();
        }
    }
    h.usage_stream = stream.clone();
    let started = Instant::now();
    h.start_data_plane_opts(DataPlaneOptions {
        spool_path: Some(spool_path.clone()),
        ..DataPlaneOptions::default()
    })
    .await;
    loop {
        let len: usize = redis::cmd("XLEN")
            .arg(&stream)
            .query_async(&mut conn)
            .await
            .unwrap();
        if len >= events {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "replay stalled at {len}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let replay = started.elapsed();
    println!(
        "spool → Redis replay: {events} events in {:.2} s = {:.0} events/s (read, checksum, pipelined XADD in batches of 256)",
        replay.as_secs_f64(),
        events as f64 / replay.as_secs_f64()
    );
    let _: Result<(), _> = redis::cmd("DEL").arg(&stream).query_async(&mut conn).await;
    let _ = std::fs::remove_file(&spool_path);
    pool.close().await;
    h.shutdown().await;
}
