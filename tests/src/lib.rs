//! End-to-end harness: a fresh Postgres database and a unique Redis stream per test, a mock
//! upstream on port 0, and the control plane and data planes running in-process on port 0.
//!
//! Services come from `TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`,
//! used only to create and drop per-test databases) and `TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod console;
pub mod fake_control_plane;
pub mod faults;
pub mod mock;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use bytes::Bytes;
use clap::ValueEnum;
use control_plane::{
    ControlPlane,
    config::{Affinity, DEFAULT_RING_SEED},
    crypto::EncryptionKey,
};
use data_plane::{DataPlane, config::DurationSecs};
use gateway_proto::{
    CONFIG_VERSION_METADATA,
    auth::{BearerAuth, Secret},
    v1::{self, admin_service_client::AdminServiceClient},
};
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio::{
    net::TcpListener,
    sync::{oneshot, watch},
    task::JoinHandle,
};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

pub use mock::{Behaviour, Fault, MockUpstream, MockUsage, Recorded};

/// How long any awaited event may take before a test fails.
pub const EVENT_DEADLINE: Duration = Duration::from_secs(10);

fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A Postgres database of its own, dropped by [`TestDb::drop_database`].
#[derive(Debug)]
pub struct TestDb {
    admin_url: String,
    name: String,
    /// URL of the test database.
    pub url: String,
}

impl TestDb {
    /// Creates a fresh, empty database.
    pub async fn create() -> Self {
        let admin_url = admin_database_url();
        let name = format!("cgw_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin_url)
            .await
            .expect("connect to Postgres (set TEST_DATABASE_URL)");
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create test database");
        let url = match admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("TEST_DATABASE_URL must name a database"),
        };
        Self {
            admin_url,
            name,
            url,
        }
    }

    /// A pool on the test database, for assertions.
    pub async fn pool(&self) -> PgPool {
        PgPool::connect(&self.url)
            .await
            .expect("connect test database")
    }

    /// Drops the database.
    pub async fn drop_database(self) {
        if let Ok(mut conn) = PgConnection::connect(&self.admin_url).await {
            let _ = conn
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                )))
                .await;
        }
    }
}

/// Admin gRPC client.
pub type Admin = AdminServiceClient<InterceptedService<Channel, BearerAuth>>;

/// The config version a mutating admin call produced.
pub fn version_of<T>(response: &tonic::Response<T>) -> u64 {
    response
        .metadata()
        .get(CONFIG_VERSION_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("mutations report x-config-version")
}

/// A data plane running in-process.
#[derive(Debug)]
pub struct DataPlaneHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Applied snapshot version.
    pub applied: watch::Receiver<u64>,
    /// Version written to its snapshot file.
    pub persisted: watch::Receiver<u64>,
    /// Streams abandoned by their clients that it is still reading for their usage.
    pub drains: data_plane::metering::Drains,
    /// Its own state directory, removed when it stops.
    state_dir: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl DataPlaneHandle {
    /// `http://addr`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits until it has applied `version` or newer.
    pub async fn wait_applied(&mut self, version: u64) {
        tokio::time::timeout(EVENT_DEADLINE, self.applied.wait_for(|v| *v >= version))
            .await
            .expect("data plane applies the version in time")
            .expect("data plane running");
    }

    /// Waits until its snapshot file holds `version` or newer.
    pub async fn wait_persisted(&mut self, version: u64) {
        tokio::time::timeout(EVENT_DEADLINE, self.persisted.wait_for(|v| *v >= version))
            .await
            .expect("data plane persists the version in time")
            .expect("data plane running");
    }

    /// Sends the shutdown signal without waiting (SIGTERM).
    pub fn signal_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// SIGTERM-equivalent: drain and stop.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task
            .await
            .expect("join")
            .expect("data plane stops cleanly");
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// How to start a data plane.
#[derive(Debug, Default)]
pub struct DataPlaneOptions {
    /// Defaults to the harness's control plane.
    pub control_plane_url: Option<String>,
    /// Where it keeps its last good snapshot.
    pub snapshot_path: Option<std::path::PathBuf>,
    /// Request body limit (default: the data plane's).
    pub max_body_bytes: Option<usize>,
    /// Time allowed for a request body (default: the data plane's).
    pub body_timeout: Option<Duration>,
    /// Time allowed for a request head and idle keep-alive (default: the data plane's).
    pub header_timeout: Option<Duration>,
    /// Peers whose X-Forwarded-For is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Start with no state flags at all, as a bare binary would, with this as `HOME`: the
    /// state directory is then the default one under it.
    pub home: Option<std::path::PathBuf>,
    /// Usage spool file (default: in the data plane's own fresh state directory).
    pub spool_path: Option<std::path::PathBuf>,
}

/// A control plane running in-process.
#[derive(Debug)]
pub struct ControlPlaneHandle {
    /// Where gRPC listens.
    pub addr: SocketAddr,
    /// Events written to the ledger.
    pub ingested: watch::Receiver<u64>,
    /// Whether it leads the health checks.
    pub health_leader: watch::Receiver<bool>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_addr: SocketAddr,
    /// Where the web console is served.
    pub console_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl ControlPlaneHandle {
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops it gracefully.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task
            .await
            .expect("join")
            .expect("control plane stops cleanly");
    }
}

/// Everything one test needs.
#[derive(Debug)]
pub struct Harness {
    pub db: TestDb,
    pub redis_url: String,
    pub usage_stream: String,
    pub admin_token: Secret,
    pub data_plane_token: Secret,
    pub encryption_key: EncryptionKey,
    pub control_plane: Option<ControlPlaneHandle>,
    pub data_planes: Vec<DataPlaneHandle>,
    pub mock: MockUpstream,
    pub affinity: Affinity,
    /// Active health checks (interval 0 = off, the default for tests).
    pub health_interval_ms: u64,
    /// Where the standalone-style SQLite store lives (no Redis then).
    pub sqlite_dir: Option<PathBuf>,
    /// `--usage-retention-days` of the control plane.
    pub usage_retention: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

/// How a harness starts.
#[derive(Debug, Clone)]
pub struct HarnessOptions {
    pub data_planes: usize,
    pub affinity: Affinity,
    pub health_interval_ms: u64,
    /// Redis to use instead of TEST_REDIS_URL.
    pub redis_url: Option<String>,
    /// Run as `gatewayctl standalone` does: the control plane on a SQLite file of the
    /// test's own, no Redis anywhere (data planes report usage over `ReportUsage`).
    pub standalone: bool,
    /// `--usage-retention-days` (default `never`: tests write events of any date).
    pub usage_retention: Option<String>,
}

impl Default for HarnessOptions {
    fn default() -> Self {
        Self {
            data_planes: 1,
            affinity: Affinity::User,
            health_interval_ms: 0,
            redis_url: None,
            standalone: false,
            usage_retention: None,
        }
    }
}

impl Harness {
    /// Starts a control plane and `data_planes` data planes on a fresh database and stream.
    pub async fn start(data_planes: usize) -> Self {
        Self::start_with(data_planes, Affinity::User).await
    }

    /// [`Harness::start`] with a chosen affinity mode.
    pub async fn start_with(data_planes: usize, affinity: Affinity) -> Self {
        Self::start_opts(HarnessOptions {
            data_planes,
            affinity,
            ..HarnessOptions::default()
        })
        .await
    }

    /// Starts with every option spelled out.
    pub async fn start_opts(options: HarnessOptions) -> Self {
        let HarnessOptions {
            data_planes,
            affinity,
            health_interval_ms,
            redis_url: private_redis,
            standalone,
            usage_retention,
        } = options;
        let sqlite_dir = standalone.then(|| {
            let dir =
                std::env::temp_dir().join(format!("cgw-sa-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&dir).expect("create the SQLite directory");
            dir
        });
        let mut h = Self {
            db: TestDb::create().await,
            redis_url: private_redis.unwrap_or_else(redis_url),
            usage_stream: format!("cgw-test:{}:usage", uuid::Uuid::new_v4().simple()),
            admin_token: Secret::new(format!("admin-{}", uuid::Uuid::new_v4().simple())),
            data_plane_token: Secret::new(format!("dp-{}", uuid::Uuid::new_v4().simple())),
            encryption_key: EncryptionKey::generate(),
            control_plane: None,
            data_planes: Vec::new(),
            mock: MockUpstream::start().await,
            affinity,
            health_interval_ms,
            sqlite_dir,
            usage_retention: usage_retention.unwrap_or_else(|| "never".into()),
            http: Client::builder(TokioExecutor::new()).build_http(),
        };
        h.start_control_plane().await;
        for _ in 0..data_planes {
            h.start_data_plane().await;
        }
        h
    }

    /// The control plane's configuration for this harness: the control plane's own flags,
    /// parsed without the environment, so every setting a test does not choose is the
    /// binary's default.
    pub fn control_plane_config(&self, grpc_addr: SocketAddr) -> control_plane::Config {
        let affinity = self
            .affinity
            .to_possible_value()
            .expect("every affinity has a flag value");
        let database_url = match &self.sqlite_dir {
            Some(dir) => format!("sqlite://{}", dir.join("gateway.db").display()),
            None => self.db.url.clone(),
        };
        let redis = match &self.sqlite_dir {
            Some(_) => Vec::new(),
            None => vec![format!("--redis-url={}", self.redis_url)],
        };
        control_plane::Config::from_flags(redis.into_iter().chain([
            format!("--database-url={database_url}"),
            format!("--admin-token={}", self.admin_token.expose()),
            format!("--data-plane-token={}", self.data_plane_token.expose()),
            format!("--encryption-key={}", self.encryption_key.to_hex()),
            format!("--grpc-addr={grpc_addr}"),
            "--metrics-addr=127.0.0.1:0".to_owned(),
            "--console-addr=127.0.0.1:0".to_owned(),
            format!("--usage-stream={}", self.usage_stream),
            "--consumer-name=test-consumer".to_owned(),
            // Housekeeping within seconds, so reclaiming a dead consumer's entries and
            // deleting idle consumers can be watched in a test.
            "--usage-housekeeping-secs=1".to_owned(),
            "--usage-stale-consumer-secs=3".to_owned(),
            format!("--affinity={}", affinity.get_name()),
            format!("--health-interval-ms={}", self.health_interval_ms),
            // A hung probe fails within 2 s and two failures mark an upstream unhealthy,
            // so health tests see a verdict quickly.
            "--health-timeout-ms=2000".to_owned(),
            "--health-unhealthy-after=2".to_owned(),
            format!("--usage-retention-days={}", self.usage_retention),
            "--log-format=text".to_owned(),
        ]))
        .expect("the harness's control-plane flags parse")
    }

    /// Starts (or restarts) the control plane on a new port.
    pub async fn start_control_plane(&mut self) {
        self.control_plane = Some(self.spawn_control_plane("test-consumer").await);
    }

    /// Stops the control plane and starts a new one on the same address, as a restarted
    /// process behind a stable service address would be.
    pub async fn restart_control_plane_in_place(&mut self) {
        let addr = self.control_plane().addr;
        self.stop_control_plane().await;
        self.start_control_plane_at(addr).await;
    }

    /// Starts the control plane on `addr`, where an earlier one (see
    /// [`Harness::control_plane_addr`]) served, so data planes reconnect to it.
    pub async fn start_control_plane_at(&mut self, addr: SocketAddr) {
        let listener = TcpListener::bind(addr)
            .await
            .expect("rebind the same address");
        self.control_plane = Some(self.serve_control_plane(listener, "test-consumer").await);
    }

    /// Where the running control plane serves gRPC.
    pub fn control_plane_addr(&self) -> SocketAddr {
        self.control_plane().addr
    }

    /// Starts one more control-plane replica on the same database and stream; the caller
    /// owns it.
    pub async fn spawn_control_plane(&self, consumer_name: &str) -> ControlPlaneHandle {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        self.serve_control_plane(listener, consumer_name).await
    }

    async fn serve_control_plane(
        &self,
        listener: TcpListener,
        consumer_name: &str,
    ) -> ControlPlaneHandle {
        let addr = listener.local_addr().expect("grpc addr");
        let mut config = self.control_plane_config(addr);
        config.consumer_name = consumer_name.to_owned();
        let cp = ControlPlane::start(config)
            .await
            .expect("control plane starts");
        let ingested = cp.ingested();
        let health_leader = cp.health_leader();
        let metrics_addr = cp.metrics_addr();
        let console_addr = cp.console_addr();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(cp.serve(listener, async {
            let _ = rx.await;
        }));
        ControlPlaneHandle {
            addr,
            ingested,
            health_leader,
            metrics_addr,
            console_addr,
            shutdown: Some(tx),
            task,
        }
    }

    /// Stops the control plane gracefully.
    pub async fn stop_control_plane(&mut self) {
        if let Some(cp) = self.control_plane.take() {
            cp.stop().await;
        }
    }

    fn control_plane(&self) -> &ControlPlaneHandle {
        self.control_plane.as_ref().expect("control plane running")
    }

    /// Starts one more data plane subscribed to the control plane.
    pub async fn start_data_plane(&mut self) -> usize {
        self.start_data_plane_opts(DataPlaneOptions::default())
            .await
    }

    /// Starts one more data plane subscribed to `control_plane_url`.
    pub async fn start_data_plane_with(&mut self, control_plane_url: String) -> usize {
        self.start_data_plane_opts(DataPlaneOptions {
            control_plane_url: Some(control_plane_url),
            ..DataPlaneOptions::default()
        })
        .await
    }

    /// Starts one more data plane with these options.
    pub async fn start_data_plane_opts(&mut self, options: DataPlaneOptions) -> usize {
        // A state directory of the data plane's own (its spool and snapshot, unless given),
        // removed when it stops.
        let state_dir =
            std::env::temp_dir().join(format!("cgw-dp-{}", uuid::Uuid::new_v4().simple()));
        let control_plane_url = options
            .control_plane_url
            .unwrap_or_else(|| format!("http://{}", self.control_plane().addr));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let addr = listener.local_addr().expect("http addr");
        let index = self.data_planes.len();
        let mut flags = vec![
            format!("--listen-addr={addr}"),
            format!("--control-plane-url={control_plane_url}"),
            format!("--data-plane-token={}", self.data_plane_token.expose()),
            format!("--usage-stream={}", self.usage_stream),
            format!("--node-id=dp-{index}"),
            // Tests stop data planes often; a stream left open must not hold one for long.
            "--shutdown-grace-secs=5".to_owned(),
            match &options.home {
                Some(home) => format!("--home={}", home.display()),
                None => format!("--state-dir={}", state_dir.display()),
            },
            "--log-format=text".to_owned(),
        ];
        if self.sqlite_dir.is_none() {
            flags.push(format!("--redis-url={}", self.redis_url));
        }
        if let Some(bytes) = options.max_body_bytes {
            flags.push(format!("--max-body-bytes={bytes}"));
        }
        if !options.trusted_proxies.is_empty() {
            let cidrs: Vec<String> = options
                .trusted_proxies
                .iter()
                .map(ToString::to_string)
                .collect();
            flags.push(format!("--trusted-proxies={}", cidrs.join(",")));
        }
        if let Some(path) = &options.spool_path {
            flags.push(format!("--spool-path={}", path.display()));
        }
        if let Some(path) = &options.snapshot_path {
            flags.push(format!("--snapshot-path={}", path.display()));
        }
        let mut config =
            data_plane::Config::from_flags(flags).expect("the harness's data-plane flags parse");
        // These flags take whole seconds; tests use fractions of one to stay fast.
        if let Some(timeout) = options.body_timeout {
            config.client_body_timeout = DurationSecs(timeout);
        }
        if let Some(timeout) = options.header_timeout {
            config.client_header_timeout = DurationSecs(timeout);
        }
        let dp = DataPlane::start(config).await.expect("data plane starts");
        let applied = dp.applied_version();
        let persisted = dp.persisted_version();
        let drains = dp.drains();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(dp.serve(listener, async {
            let _ = rx.await;
        }));
        self.data_planes.push(DataPlaneHandle {
            addr,
            applied,
            persisted,
            drains,
            state_dir,
            shutdown: Some(tx),
            task,
        });
        index
    }

    /// Where the (first) control plane serves the web console.
    pub fn console_addr(&self) -> SocketAddr {
        self.control_plane().console_addr
    }

    /// An admin client authenticated with the admin token.
    pub async fn admin(&self) -> Admin {
        let channel = Channel::from_shared(format!("http://{}", self.control_plane().addr))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect control plane");
        AdminServiceClient::with_interceptor(
            channel,
            BearerAuth::new(&self.admin_token).expect("token"),
        )
    }

    /// Arguments that point `gatewayctl` at this harness.
    pub fn gatewayctl_args(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec![
            "gatewayctl".to_owned(),
            "--endpoint".to_owned(),
            format!("http://{}", self.control_plane().addr),
            "--token".to_owned(),
            self.admin_token.expose().to_owned(),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        all
    }

    /// Waits until every data plane has applied `version`.
    pub async fn wait_applied(&mut self, version: u64) {
        for dp in &mut self.data_planes {
            dp.wait_applied(version).await;
        }
    }

    /// Waits until the ledger has ingested at least `n` events.
    pub async fn wait_ingested(&mut self, n: u64) {
        self.wait_ingested_within(n, EVENT_DEADLINE).await;
    }

    /// [`Harness::wait_ingested`] with a deadline of its own.
    pub async fn wait_ingested_within(&mut self, n: u64, deadline: Duration) {
        let cp = self.control_plane.as_mut().expect("control plane running");
        tokio::time::timeout(deadline, cp.ingested.wait_for(|v| *v >= n))
            .await
            .expect("usage ingested in time")
            .expect("consumer running");
    }

    /// Adds an upstream served by the mock; its API key is `sk-upstream-<name>`.
    pub async fn add_upstream(
        &self,
        name: &str,
        priority: i32,
        weight: u32,
    ) -> (v1::Upstream, u64) {
        self.add_upstream_serving(name, priority, weight, &[]).await
    }

    /// Adds an upstream on the mock that serves only `models` (none: every model).
    pub async fn add_upstream_serving(
        &self,
        name: &str,
        priority: i32,
        weight: u32,
        models: &[&str],
    ) -> (v1::Upstream, u64) {
        let mut request = self.upstream_request(name, priority, weight);
        request.models = models.iter().map(|m| (*m).to_owned()).collect();
        self.create_upstream(request).await
    }

    /// What `add_upstream` sends for an upstream on the mock, to be changed before
    /// `create_upstream`.
    pub fn upstream_request(
        &self,
        name: &str,
        priority: i32,
        weight: u32,
    ) -> v1::CreateUpstreamRequest {
        v1::CreateUpstreamRequest {
            name: name.into(),
            base_url: self.mock.base_url(name),
            api_key: format!("sk-upstream-{name}"),
            priority,
            weight: Some(weight),
            max_retries: Some(1),
            timeout_ms: Some(5_000),
            disabled: false,
            probe_path: None,
            models: Vec::new(),
        }
    }

    /// Creates an upstream; returns it and the version that carries it.
    pub async fn create_upstream(&self, request: v1::CreateUpstreamRequest) -> (v1::Upstream, u64) {
        let response = self
            .admin()
            .await
            .create_upstream(request)
            .await
            .expect("create upstream");
        let version = version_of(&response);
        (response.into_inner(), version)
    }

    /// Adds a user with a balance in micro-units.
    pub async fn add_user(&self, name: &str, balance_micros: i64) -> (v1::User, u64) {
        let response = self
            .admin()
            .await
            .create_user(v1::CreateUserRequest {
                name: name.into(),
                balance_micros,
                multiplier_ppm: None,
            })
            .await
            .expect("create user");
        let version = version_of(&response);
        (response.into_inner(), version)
    }

    /// Creates a key; returns it with its secret and the version.
    pub async fn add_key(&self, user_id: i64) -> (v1::Key, String, u64) {
        let response = self
            .admin()
            .await
            .create_key(v1::CreateKeyRequest {
                user_id,
                name: "test".into(),
                ..Default::default()
            })
            .await
            .expect("create key");
        let version = version_of(&response);
        let created = response.into_inner();
        (created.key.expect("key"), created.secret, version)
    }

    /// Creates users until one's ring choice among `tier` (upstream id, weight) is `home`;
    /// returns that user with a key, and the version that carries the key.
    pub async fn user_homed_on(&self, tier: &[(i64, u32)], home: i64) -> (v1::User, String, u64) {
        let ring = gateway_proto::ring::Ring::new(
            DEFAULT_RING_SEED,
            tier.iter()
                .map(|&(id, weight)| gateway_proto::ring::RingMember { id, weight }),
        )
        .expect("ring");
        for i in 0..1000 {
            let (user, _) = self
                .add_user(
                    &format!("homed-{home}-{i}-{}", uuid::Uuid::new_v4().simple()),
                    100_000_000,
                )
                .await;
            if ring.pick(format!("user:{}", user.id).as_bytes(), |_| true) == Some(home) {
                let (_, secret, version) = self.add_key(user.id).await;
                return (user, secret, version);
            }
        }
        panic!("no user homed on upstream {home}");
    }

    /// Sets a model's price (micro-units per 1M tokens).
    pub async fn set_price(&self, model: &str, input: i64, cached: i64, output: i64) -> u64 {
        let response = self
            .admin()
            .await
            .set_price(v1::SetPriceRequest {
                price: Some(v1::Price {
                    model: model.into(),
                    input_micros: input,
                    cached_input_micros: cached,
                    output_micros: output,
                }),
            })
            .await
            .expect("set price");
        version_of(&response)
    }

    /// POSTs `body` to a data plane with the given headers.
    pub async fn post(
        &self,
        data_plane: usize,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Response<Incoming> {
        let mut request = Request::post(self.data_planes[data_plane].url(path))
            .header("content-type", "application/json");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        self.http
            .request(request.body(Full::new(body.into())).expect("request"))
            .await
            .expect("data plane answers")
    }

    /// GETs a path from a data plane.
    pub async fn get(&self, data_plane: usize, path: &str) -> Response<Incoming> {
        self.get_with(data_plane, path, &[]).await
    }

    /// GETs a path from a data plane with headers.
    pub async fn get_with(
        &self,
        data_plane: usize,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Response<Incoming> {
        let mut request = Request::get(self.data_planes[data_plane].url(path));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request.body(Full::new(Bytes::new())).expect("request");
        self.http
            .request(request)
            .await
            .expect("data plane answers")
    }

    /// GETs a path from the control plane's metrics and probe server.
    pub async fn get_control_plane(&self, path: &str) -> Response<Incoming> {
        let addr = self
            .control_plane
            .as_ref()
            .expect("control plane running")
            .metrics_addr;
        let request = Request::get(format!("http://{addr}{path}"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        self.http
            .request(request)
            .await
            .expect("control plane answers")
    }

    /// Stops everything and drops the database and stream.
    pub async fn shutdown(mut self) {
        for dp in self.data_planes.drain(..) {
            dp.stop().await;
        }
        self.stop_control_plane().await;
        if let Ok(client) = redis::Client::open(self.redis_url.as_str())
            && let Ok(mut conn) = client.get_multiplexed_async_connection().await
        {
            let _: Result<(), _> = redis::cmd("DEL")
                .arg(&self.usage_stream)
                .query_async(&mut conn)
                .await;
        }
        self.db.drop_database().await;
        if let Some(dir) = self.sqlite_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Reads `body` until what arrived contains `marker` (or the body ends); returns what arrived
/// and leaves the rest of the body unread.
pub async fn read_until(body: &mut Incoming, marker: &str) -> String {
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(marker) {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    seen.extend_from_slice(data);
                }
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Reads a whole response body.
pub async fn body_bytes(response: Response<Incoming>) -> Bytes {
    response
        .into_body()
        .collect()
        .await
        .expect("read body")
        .to_bytes()
}

/// Reads a whole response body as JSON.
pub async fn body_json(response: Response<Incoming>) -> serde_json::Value {
    serde_json::from_slice(&body_bytes(response).await).expect("JSON body")
}

/// The `x-request-id` header of a response.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("every response carries x-request-id")
        .to_owned()
}

/// Puts `events` on the harness's usage stream as data planes would (pipelined `XADD`s).
pub async fn put_on_stream(
    h: &Harness,
    events: impl IntoIterator<Item = gateway_proto::v1::UsageEvent>,
) {
    use prost::Message;

    let client = redis::Client::open(h.redis_url.as_str()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis answers");
    let events: Vec<_> = events.into_iter().collect();
    for chunk in events.chunks(1000) {
        let mut pipe = redis::pipe();
        for event in chunk {
            pipe.cmd("XADD")
                .arg(&h.usage_stream)
                .arg("*")
                .arg(gateway_proto::USAGE_EVENT_FIELD)
                .arg(event.encode_to_vec())
                .ignore();
        }
        pipe.query_async::<()>(&mut conn)
            .await
            .expect("XADD a batch");
    }
}

/// A completed Codex-sized usage event of `user_id` through `key_id`, starting now, costing
/// 16,500 µ: what the benchmarks feed the ledger.
pub fn bench_usage_event(user_id: i64, key_id: i64) -> gateway_proto::v1::UsageEvent {
    gateway_proto::v1::UsageEvent {
        id: uuid::Uuid::now_v7().to_string(),
        request_id: uuid::Uuid::now_v7().to_string(),
        key_id,
        user_id,
        upstream_id: Some(1),
        model: "gpt-5.1-codex".into(),
        endpoint: "responses".into(),
        input_tokens: 24_000,
        cached_tokens: 20_000,
        output_tokens: 900,
        reasoning_tokens: 400,
        cost_micros: 16_500,
        status: gateway_proto::v1::UsageStatus::Completed as i32,
        stream: true,
        estimated: false,
        ttfb_ms: 300,
        duration_ms: 9_000,
        node_id: "bench".into(),
        started_at_ms: chrono::Utc::now().timestamp_millis(),
    }
}

/// A realistic Codex first-turn request body (captured shape, long texts filled in).
pub fn codex_request(model: &str, stream: bool, conversation: &str) -> Bytes {
    let body = serde_json::json!({
        "model": model,
        "stream": stream,
        "input": [
            {"type": "message", "id": "msg_dev", "role": "developer",
             "content": [{"type": "input_text", "text": "x".repeat(16_979)}]},
            {"type": "message", "id": "msg_user", "role": "user",
             "content": [{"type": "input_text", "text": "say hello"}]}
        ],
        "tools": [{"type": "function", "name": "exec_command"}, {"type": "web_search", "name": null}],
        "tool_choice": "auto",
        "parallel_tool_calls": true,
        "reasoning": {"summary": "auto"},
        "store": false,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": conversation,
        "client_metadata": {"session_id": conversation, "thread_id": conversation},
    });
    // Pretty-printed with a trailing newline: byte-for-byte forwarding must keep even this.
    let mut text = serde_json::to_string_pretty(&body).expect("encode");
    text.push('\n');
    Bytes::from(text)
}
