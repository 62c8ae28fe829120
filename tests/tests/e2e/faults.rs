//! Nothing lost, nothing doubled: N = 600 concurrent requests in three waves while, in turn,
//! (a) the control plane is killed SIGKILL-style and replaced, (b) Redis is stopped and started
//! again, (c) a data plane gets SIGTERM with 200 streams open. Afterwards the ledger has exactly
//! N events, one per request, and every balance equals its credits minus its costs.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use gateway_proto::{
    auth::BearerAuth,
    v1::{self, admin_service_client::AdminServiceClient},
};
use gateway_tests::{
    Behaviour, DataPlaneOptions, EVENT_DEADLINE, Harness, HarnessOptions, codex_request,
    faults::{KillableControlPlane, RedisServer},
};
use http_body_util::BodyExt;
use tokio::sync::Notify;

const USERS: usize = 10;
const WAVE: usize = 200;

/// Counts finished requests and wakes whoever waits for a number of them.
#[derive(Default)]
struct Progress {
    done: AtomicUsize,
    changed: Notify,
}

impl Progress {
    fn finish(&self) {
        self.done.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    async fn reach(&self, n: usize) {
        tokio::time::timeout(EVENT_DEADLINE, async {
            loop {
                let notified = self.changed.notified();
                if self.done.load(Ordering::SeqCst) >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .expect("requests progress");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_usage_is_lost_or_doubled_when_the_control_plane_redis_or_a_data_plane_fail() {
    let mut redis = RedisServer::start().await;
    let mut h = Harness::start_opts(HarnessOptions {
        data_planes: 0,
        redis_url: Some(redis.url()),
        ..HarnessOptions::default()
    })
    .await;
    // Control planes that can be killed replace the harness's own.
    h.stop_control_plane().await;
    let grpc_placeholder = "127.0.0.1:0".parse().unwrap();
    let cp = KillableControlPlane::start(h.control_plane_config(grpc_placeholder)).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", cp.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin =
        AdminServiceClient::with_interceptor(channel, BearerAuth::new(&h.admin_token).unwrap());
    admin
        .create_upstream(v1::CreateUpstreamRequest {
            name: "pool".into(),
            base_url: h.mock.base_url("pool"),
            api_key: "sk-upstream-pool".into(),
            timeout_ms: Some(10_000),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .set_price(v1::SetPriceRequest {
            price: Some(v1::Price {
                model: "*".into(),
                input_micros: 1_000_000,
                cached_input_micros: 100_000,
                output_micros: 2_000_000,
            }),
        })
        .await
        .unwrap();
    let mut keys = Vec::new();
    let mut users = Vec::new();
    let mut version = 0;
    for i in 0..USERS {
        let user = admin
            .create_user(v1::CreateUserRequest {
                name: format!("u{i}"),
                balance_micros: 1_000_000_000,
                multiplier_ppm: None,
            })
            .await
            .unwrap()
            .into_inner();
        if i % 3 == 0 {
            admin
                .adjust_balance(v1::AdjustBalanceRequest {
                    user_id: user.id,
                    amount_micros: 5_000_000,
                    reason: "top-up".into(),
                })
                .await
                .unwrap();
        }
        let created = admin
            .create_key(v1::CreateKeyRequest {
                user_id: user.id,
                ..Default::default()
            })
            .await
            .unwrap();
        version = gateway_tests::version_of(&created);
        keys.push(format!("Bearer {}", created.into_inner().secret));
        users.push(user.id);
    }
    for _ in 0..2 {
        h.start_data_plane_opts(DataPlaneOptions {
            control_plane_url: Some(format!("http://{}", cp.addr)),
            ..DataPlaneOptions::default()
        })
        .await;
    }
    h.wait_applied(version).await;
    // The requests go straight to the data planes; the harness stays free for the faults.
    let addrs: Vec<String> = h
        .data_planes
        .iter()
        .map(|d| d.url("/v1/responses"))
        .collect();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let fire = |dp: usize, auth: String, stream: bool, opened: Option<Arc<Progress>>| {
        let client = client.clone();
        let url = addrs[dp].clone();
        async move {
            let request = http::Request::post(url)
                .header("authorization", auth)
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(codex_request(
                    "mock-model",
                    stream,
                    "c",
                )))
                .unwrap();
            let response = client.request(request).await.expect("data plane answers");
            assert_eq!(response.status(), 200);
            let mut body = response.into_body();
            let mut seen = Vec::new();
            let mut signalled = false;
            while let Some(frame) = body.frame().await {
                let frame = frame.expect("body");
                if let Some(data) = frame.data_ref() {
                    seen.extend_from_slice(data);
                }
                if !signalled && String::from_utf8_lossy(&seen).contains("word0") {
                    signalled = true;
                    if let Some(o) = &opened {
                        o.finish();
                    }
                }
            }
            let text = String::from_utf8_lossy(&seen);
            assert!(
                text.contains("response.completed") || text.contains("\"status\":\"completed\""),
                "{text}"
            );
        }
    };
    let wave = |progress: Arc<Progress>, opened: Option<Arc<Progress>>, dps: &[usize]| {
        (0..WAVE)
            .map(|i| {
                let fut = fire(
                    dps[i % dps.len()],
                    keys[i % USERS].clone(),
                    opened.is_some() || i % 2 == 0,
                    opened.clone(),
                );
                let progress = progress.clone();
                tokio::spawn(async move {
                    fut.await;
                    progress.finish();
                })
            })
            .collect::<Vec<_>>()
    };

    // (a) The control plane is killed mid-wave and a new one takes over the same consumer.
    let progress = Arc::new(Progress::default());
    let tasks = wave(progress.clone(), None, &[0, 1]);
    progress.reach(WAVE / 4).await;
    cp.kill().await;
    let mut cp = KillableControlPlane::start(h.control_plane_config(grpc_placeholder)).await;
    for t in tasks {
        t.await.unwrap();
    }

    // (b) Redis goes away: the whole wave is served meanwhile (serving does not need Redis);
    // its usage waits in the data planes' spools and replays once Redis is back.
    redis.stop().await;
    let progress = Arc::new(Progress::default());
    for t in wave(progress.clone(), None, &[0, 1]) {
        t.await.unwrap();
    }
    // The outage was real: usage produced meanwhile failed to publish and went to the spools.
    let mut failed = 0.0;
    for dp in 0..2 {
        let text =
            String::from_utf8_lossy(&gateway_tests::body_bytes(h.get(dp, "/metrics").await).await)
                .into_owned();
        failed += text
            .lines()
            .find_map(|l| l.strip_prefix("codex_gateway_usage_publish_errors_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
    }
    assert!(
        failed > 0.0,
        "no publish failed while Redis was down: the outage missed the wave"
    );
    redis.restart().await;

    // (c) A data plane gets SIGTERM with streams open: they finish, their usage is flushed.
    let gate = Arc::new(Notify::new());
    h.mock.set_behaviour(Behaviour {
        gate: Some(gate.clone()),
        ..Behaviour::default()
    });
    let progress = Arc::new(Progress::default());
    let opened = Arc::new(Progress::default());
    let tasks = wave(progress.clone(), Some(opened.clone()), &[0, 1]);
    opened.reach(WAVE).await;
    let mut dp = h.data_planes.remove(1);
    dp.signal_shutdown();
    let terminating = tokio::spawn(dp.stop());
    gate.notify_waiters();
    for t in tasks {
        t.await.unwrap();
    }
    terminating.await.unwrap();

    // Exactly N events, one per request, and balances that add up.
    let total = 3 * WAVE as i64;
    let pool = h.db.pool().await;
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let changed = cp.ingested.changed();
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_events")
                .fetch_one(&pool)
                .await
                .unwrap();
            if count >= total {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), changed).await;
        }
    })
    .await;
    if waited.is_err() {
        // Say what is missing, so a failure here can be traced to the phase that lost it.
        let by_node: Vec<(String, i64)> = sqlx::query_as(
            "SELECT node_id, COUNT(*) FROM usage_events GROUP BY node_id ORDER BY node_id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        panic!(
            "not every event reached the ledger within 30 s: {total} expected, by data plane {by_node:?}"
        );
    }
    let (count, requests, completed): (i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT request_id), COUNT(*) FILTER (WHERE status = 'completed') FROM usage_events",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (count, requests, completed),
        (total, total, total),
        "exactly one completed event per request"
    );
    assert!(
        *cp.ingested.borrow() > 0,
        "the replacement control plane took over the ledger"
    );
    for user in users {
        let (balance, credits, spent): (i64, i64, i64) = sqlx::query_as(
            "SELECT u.balance_micros, \
               (SELECT COALESCE(SUM(amount_micros), 0)::INT8 FROM balance_adjustments a WHERE a.user_id = u.id), \
               (SELECT COALESCE(SUM(cost_micros), 0)::INT8 FROM usage_events e WHERE e.user_id = u.id) \
             FROM users u WHERE u.id = $1",
        )
        .bind(user)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(spent > 0);
        assert_eq!(
            balance,
            credits - spent,
            "user {user}: balance = credits - costs"
        );
    }
    // The per-day rollups, written in the same transactions, agree with the ledger.
    let (ledger, rolled): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COALESCE(SUM(cost_micros), 0)::INT8 FROM usage_events), \
                (SELECT COALESCE(SUM(cost_micros), 0)::INT8 FROM usage_daily)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let rolled_requests: i64 =
        sqlx::query_scalar("SELECT COALESCE(SUM(requests), 0)::INT8 FROM usage_daily")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (rolled, rolled_requests),
        (ledger, total),
        "rollups match the ledger"
    );
    pool.close().await;
    cp.kill().await;
    h.shutdown().await;
}
