//! Snapshot scale benchmark. Fills a fresh database with many upstreams and keys, then prints:
//! the control plane's full snapshot build (read from Postgres + build + ring checksums), its
//! encoded size, a data plane's apply time, and key-revocation propagation at that scale.
//!
//! `cargo run --release -p gateway-tests --bin snapshot-bench -- [UPSTREAMS] [KEYS]`
//! (defaults 1000 and 100000; needs Postgres and Redis as for `scripts/test`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use control_plane::{
    config::{Affinity, DEFAULT_RING_SEED},
    crypto::Cipher,
    snapshot::{BuildSettings, build},
    store::Store,
};
use data_plane::snapshot::AppliedSnapshot;
use gateway_proto::v1;
use gateway_tests::{Harness, version_of};
use prost::Message;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let upstreams: i64 = args.get(1).map_or(1000, |a| a.parse().expect("UPSTREAMS"));
    let keys: i64 = args.get(2).map_or(100_000, |a| a.parse().expect("KEYS"));
    let users = (keys / 10).max(1);

    let mut h = Harness::start(0).await;
    let pool = h.db.pool().await;
    let cipher = Cipher::new(&h.encryption_key);
    let fill = Instant::now();
    sqlx::query(
        "INSERT INTO upstreams (name, base_url, api_key_enc, api_key_hint, priority, weight, timeout_ms, probe_path) \
         SELECT 'u' || i, 'http://127.0.0.1:9/u' || i, $1, 'sk-…', i % 3, 1 + i % 5, 120000, '' \
         FROM generate_series(1, $2) i",
    )
    .bind(cipher.encrypt("sk-bench-upstream-key"))
    .bind(upstreams)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO users (name, balance_micros) SELECT 'user' || i, 1000000 FROM generate_series(1, $1) i")
        .bind(users)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO api_keys (user_id, prefix, digest, models) \
         SELECT u.first + (i % $2), 'cgw-bench', sha256(('cgw-bench-' || i)::bytea), ARRAY['gpt-5.1-codex'] \
         FROM generate_series(1, $1) i, (SELECT min(id) AS first FROM users) u",
    )
    .bind(keys)
    .bind(users)
    .execute(&pool)
    .await
    .unwrap();
    println!(
        "filled {upstreams} upstreams, {users} users, {keys} keys in {:.1} s",
        fill.elapsed().as_secs_f64()
    );

    let store = Store::connect(&h.db.url).await.unwrap();
    let settings = BuildSettings {
        ring_seed: DEFAULT_RING_SEED,
        affinity: Affinity::User,
    };
    let (mut read, mut built, mut apply) = (Vec::new(), Vec::new(), Vec::new());
    let mut size = 0;
    for _ in 0..5 {
        let t0 = Instant::now();
        let state = store.snapshot_state().await.unwrap();
        let t1 = Instant::now();
        let snapshot: v1::Snapshot = build(state, &cipher, settings).unwrap();
        let t2 = Instant::now();
        size = snapshot.encoded_len();
        let t3 = Instant::now();
        let table = AppliedSnapshot::try_from(snapshot).unwrap();
        apply.push(t3.elapsed());
        assert_eq!(table.key_count() as i64, keys);
        read.push(t1 - t0);
        built.push(t2 - t1);
    }
    let total: Vec<Duration> = read.iter().zip(&built).map(|(r, b)| *r + *b).collect();
    println!("full snapshot, median of 5:");
    println!(
        "  read from Postgres      {:>8.1} ms",
        median(read).as_secs_f64() * 1e3
    );
    println!(
        "  build + ring checksums  {:>8.1} ms",
        median(built).as_secs_f64() * 1e3
    );
    println!(
        "  total build             {:>8.1} ms   (target < 1000 ms)",
        median(total).as_secs_f64() * 1e3
    );
    println!("  encoded size            {:>8.2} MB", size as f64 / 1e6);
    println!(
        "  data plane apply        {:>8.1} ms",
        median(apply).as_secs_f64() * 1e3
    );

    // Propagation at this scale: revoke → applied by a subscribed data plane.
    h.stop_control_plane().await;
    h.start_control_plane().await;
    h.start_data_plane().await;
    let current = store.config_version().await.unwrap() as u64;
    h.wait_applied(current).await;
    let key_ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM api_keys ORDER BY id LIMIT 10")
        .fetch_all(&pool)
        .await
        .unwrap();
    let mut propagation = Vec::new();
    let admin = h.admin().await;
    for id in key_ids {
        let started = Instant::now();
        let revoked = admin
            .clone()
            .revoke_key(v1::RevokeKeyRequest { id })
            .await
            .unwrap();
        h.wait_applied(version_of(&revoked)).await;
        propagation.push(started.elapsed());
    }
    let max = *propagation.iter().max().unwrap();
    println!(
        "revoke → applied on a data plane, 10 revocations: median {:.0} ms, max {:.0} ms (target < 1000 ms)",
        median(propagation).as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    pool.close().await;
    h.shutdown().await;
}
