//! Proxy benchmark: the same load against the mock upstream directly, through nginx
//! `proxy_pass` (when nginx is installed) and through the gateway's data plane, in one run.
//!
//! The proxy under test (data plane or nginx, one worker) is pinned to core 0; this process —
//! load generator and mock upstream — should run on the other core (`scripts/bench` starts it
//! with `taskset -c 1`). For each of JSON (≈9.5 KB Codex-sized request bodies) and SSE (20
//! chunks) at each connection count it prints req/s, p50/p99 latency, p50/p99 TTFB, the proxy's
//! CPU time per request (from /proc) and its RSS.
//!
//! `scripts/bench [SECONDS]` (needs the release data-plane binary, Redis; nginx optional).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use gateway_tests::fake_control_plane::{FakeControlPlane, snapshot};
use hdrhistogram::Histogram;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

const KEYS: usize = 5_000;
const SSE_CHUNKS: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Json,
    Sse,
}

/// A request body the size of a Codex turn (~9.5 KB).
fn body(mode: Mode) -> Bytes {
    let text = "x".repeat(9_000);
    Bytes::from(format!(
        r#"{{"model":"gpt-5.1-codex","stream":{},"store":false,"input":[{{"type":"message","role":"developer","content":[{{"type":"input_text","text":"{text}"}}]}},{{"type":"message","role":"user","content":[{{"type":"input_text","text":"say hello"}}]}}],"tools":[{{"type":"function","name":"exec_command"}}],"prompt_cache_key":"bench"}}"#,
        mode == Mode::Sse
    ))
}

type MockBody = BoxBody<Bytes, Infallible>;

/// The upstream: answers instantly, with a static JSON body or 20 SSE chunks + completion.
async fn mock(listener: TcpListener) {
    let usage = r#"{"input_tokens":2400,"input_tokens_details":{"cached_tokens":2000},"output_tokens":120,"output_tokens_details":{"reasoning_tokens":40},"total_tokens":2520}"#;
    let json = Bytes::from(format!(
        r#"{{"id":"resp_1","object":"response","status":"completed","output":[{{"type":"message","role":"assistant","content":[{{"type":"output_text","text":"{}"}}]}}],"usage":{usage}}}"#,
        "hello ".repeat(150)
    ));
    let mut events: Vec<Bytes> = vec![Bytes::from_static(
        b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"status\":\"in_progress\"}}\n\n",
    )];
    for i in 0..SSE_CHUNKS {
        events.push(Bytes::from(format!(
            "event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"sequence_number\":{i},\"delta\":\"word{i} \"}}\n\n"
        )));
    }
    events.push(Bytes::from(format!(
        "event: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{{\"status\":\"completed\",\"usage\":{usage}}}}}\n\n"
    )));
    let events = Arc::new(events);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let (json, events) = (json.clone(), events.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (json, events) = (json.clone(), events.clone());
                async move {
                    let (_, body) = req.into_parts();
                    let request = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let stream = memchr::memmem::find(&request, b"\"stream\":true").is_some();
                    let response: Response<MockBody> = if stream {
                        let frames: Vec<Result<Frame<Bytes>, Infallible>> =
                            events.iter().cloned().map(|e| Ok(Frame::data(e))).collect();
                        let mut r = Response::new(BoxBody::new(StreamBody::new(
                            futures_util::stream::iter(frames),
                        )));
                        r.headers_mut()
                            .insert("content-type", "text/event-stream".parse().unwrap());
                        r
                    } else {
                        let mut r = Response::new(BoxBody::new(Full::new(json)));
                        r.headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
                        r
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

struct Run {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    ttfb: Histogram<u64>,
}

/// `connections` clients, each on its own keep-alive connection, for `duration`.
async fn load(
    addr: SocketAddr,
    path: &str,
    auth: &str,
    mode: Mode,
    connections: usize,
    duration: Duration,
) -> Run {
    let body = body(mode);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (body, path, auth) = (body.clone(), path.to_owned(), auth.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new(3).unwrap();
            let mut ttfb = Histogram::<u64>::new(3).unwrap();
            let (mut ok, mut errors) = (0u64, 0u64);
            let stream = TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            while Instant::now() < deadline {
                let request = Request::post(path.as_str())
                    .header("host", "bench")
                    .header("authorization", auth.as_str())
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
                    .unwrap();
                let t0 = Instant::now();
                if sender.ready().await.is_err() {
                    errors += 1;
                    break;
                }
                let Ok(response) = sender.send_request(request).await else {
                    errors += 1;
                    break;
                };
                if !response.status().is_success() {
                    errors += 1;
                }
                let mut body = response.into_body();
                let mut first = None;
                while let Some(frame) = body.frame().await {
                    if first.is_none() && frame.is_ok() {
                        first = Some(t0.elapsed());
                    }
                }
                let total = t0.elapsed();
                latency.record(total.as_micros() as u64).unwrap();
                ttfb.record(first.unwrap_or(total).as_micros() as u64)
                    .unwrap();
                ok += 1;
            }
            (ok, errors, latency, ttfb)
        }));
    }
    let mut run = Run {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: Histogram::new(3).unwrap(),
        ttfb: Histogram::new(3).unwrap(),
    };
    for t in tasks {
        let (ok, errors, latency, ttfb) = t.await.unwrap();
        run.requests += ok;
        run.errors += errors;
        run.latency.add(latency).unwrap();
        run.ttfb.add(ttfb).unwrap();
    }
    run.elapsed = started.elapsed();
    run
}

/// CPU seconds (user + system) of a process and its children's threads, from /proc.
fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let after_comm = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
            let fields: Vec<&str> = after_comm.split_whitespace().collect();
            // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the comm.
            let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
                + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
            ticks as f64 / 100.0
        })
        .sum()
}

fn rss_mb(pids: &[u32], field: &str) -> f64 {
    pids.iter()
        .map(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0
        })
        .sum()
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn wait_http(addr: SocketAddr, path: &str) {
    for _ in 0..500 {
        if let Ok(stream) = TcpStream::connect(addr).await
            && let Ok((mut sender, conn)) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        {
            tokio::spawn(conn);
            let request = Request::get(path)
                .header("host", "x")
                .body(Full::new(Bytes::new()))
                .unwrap();
            if let Ok(r) = sender.send_request(request).await
                && r.status().is_success()
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{addr}{path} never became ready");
}

struct Target {
    name: &'static str,
    addr: SocketAddr,
    path: String,
    pids: Vec<u32>,
}

/// Child processes, stopped with SIGTERM (nginx's master then takes its workers down).
struct Guard(Vec<Child>);
impl Drop for Guard {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

fn nginx_children(master: u32) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &master.to_string()])
        .output();
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    })
    .unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args.get(1).map_or(5, |s| s.parse().expect("SECONDS"));
    let duration = Duration::from_secs(seconds);
    let target_dir =
        PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()));
    // The data plane as images ship it: the `dist` profile (override with BENCH_PROFILE).
    let profile = std::env::var("BENCH_PROFILE").unwrap_or_else(|_| "dist".into());
    let data_plane_bin = target_dir.join(&profile).join("data-plane");
    assert!(
        data_plane_bin.exists(),
        "build it first: cargo build --profile {profile} --bin data-plane"
    );
    let redis_url =
        std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let stream = format!("cgw-bench:{}", uuid::Uuid::new_v4().simple());

    let mock_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock_addr = mock_listener.local_addr().unwrap();
    tokio::spawn(mock(mock_listener));

    // The gateway, fed a snapshot with thousands of keys by a stand-in control plane.
    let mut fake = FakeControlPlane::start().await;
    let secrets: Vec<String> = (0..KEYS).map(|i| format!("cgw-bench-key-{i:05}")).collect();
    let secret_refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let mut snap = snapshot(1, &format!("http://{mock_addr}/openai"), &secret_refs);
    snap.users[0].balance_micros = i64::MAX / 2;
    let gateway_addr = free_addr();
    let mut children = Guard(Vec::new());
    let dp = Command::new("taskset")
        .args(["-c", "0"])
        .arg(&data_plane_bin)
        .env("LISTEN_ADDR", gateway_addr.to_string())
        .env("CONTROL_PLANE_URL", fake.url())
        .env("DATA_PLANE_TOKEN", "bench-token-bench-token")
        .env("REDIS_URL", &redis_url)
        .env("USAGE_STREAM", &stream)
        .env("NODE_ID", "bench")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start data plane");
    let dp_pid = dp.id();
    children.0.push(dp);
    fake.snapshots.send(snap).await.unwrap();
    fake.reply().await;
    wait_http(gateway_addr, "/readyz").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss = rss_mb(&[dp_pid], "VmRSS:");

    let mut targets = vec![Target {
        name: "direct",
        addr: mock_addr,
        path: "/openai/v1/responses".into(),
        pids: vec![],
    }];
    let nginx_dir = std::env::temp_dir().join(format!("cgw-bench-nginx-{}", std::process::id()));
    if Command::new("nginx")
        .arg("-v")
        .stderr(Stdio::null())
        .status()
        .is_ok()
    {
        std::fs::create_dir_all(&nginx_dir).unwrap();
        let nginx_addr = free_addr();
        let conf = format!(
            "worker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  keepalive_requests 10000000;\n  client_body_buffer_size 64k;\n  upstream mock {{ server {mock_addr}; keepalive 128; }}\n  server {{\n    listen {nginx_addr};\n    location / {{\n      proxy_pass http://mock;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_buffering off;\n    }}\n  }}\n}}\n",
            dir = nginx_dir.display()
        );
        let conf_path = nginx_dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let nginx = Command::new("taskset")
            .args(["-c", "0", "nginx", "-p"])
            .arg(&nginx_dir)
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let master = nginx.id();
        children.0.push(nginx);
        wait_http_post(nginx_addr).await;
        let mut pids = vec![master];
        pids.extend(nginx_children(master));
        targets.push(Target {
            name: "nginx",
            addr: nginx_addr,
            path: "/openai/v1/responses".into(),
            pids,
        });
    }
    targets.push(Target {
        name: "gateway",
        addr: gateway_addr,
        path: "/v1/responses".into(),
        pids: vec![dp_pid],
    });

    let auth = format!("Bearer {}", secrets[KEYS / 2]);
    println!(
        "proxy-bench: {seconds} s per run; proxy pinned to core 0; {KEYS} keys in the gateway's snapshot"
    );
    println!("gateway RSS idle after snapshot: {idle_rss:.1} MB\n");
    println!(
        "| mode | conns | target | req/s | p50 ms | p99 ms | TTFB p50 ms | TTFB p99 ms | proxy CPU µs/req | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut results = Vec::new();
    // BENCH_ONLY=sse,gateway (any of json, sse, direct, nginx, gateway) narrows the matrix,
    // e.g. to profile one case.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|o| o == name);
    let modes: Vec<Mode> = [Mode::Json, Mode::Sse]
        .into_iter()
        .filter(|m| {
            let name = if *m == Mode::Json { "json" } else { "sse" };
            !only.split(',').any(|o| o == "json" || o == "sse") || wanted(name)
        })
        .collect();
    let only_targets = only
        .split(',')
        .any(|o| ["direct", "nginx", "gateway"].contains(&o));
    for mode in modes {
        for connections in [16usize, 64] {
            for t in targets.iter().filter(|t| !only_targets || wanted(t.name)) {
                // Warm up connections and caches.
                load(
                    t.addr,
                    &t.path,
                    &auth,
                    mode,
                    connections,
                    Duration::from_millis(500),
                )
                .await;
                let cpu0 = cpu_seconds(&t.pids);
                let run = load(t.addr, &t.path, &auth, mode, connections, duration).await;
                let cpu = cpu_seconds(&t.pids) - cpu0;
                let rps = run.requests as f64 / run.elapsed.as_secs_f64();
                let us_per_req = if t.pids.is_empty() {
                    f64::NAN
                } else {
                    cpu * 1e6 / run.requests.max(1) as f64
                };
                let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
                println!(
                    "| {} | {connections} | {} | {rps:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
                    if mode == Mode::Json { "JSON" } else { "SSE" },
                    t.name,
                    ms(&run.latency, 0.5),
                    ms(&run.latency, 0.99),
                    ms(&run.ttfb, 0.5),
                    ms(&run.ttfb, 0.99),
                    if us_per_req.is_nan() {
                        "-".into()
                    } else {
                        format!("{us_per_req:.1}")
                    },
                    run.errors,
                );
                results.push((
                    mode,
                    connections,
                    t.name,
                    ms(&run.latency, 0.99),
                    us_per_req,
                ));
            }
        }
    }
    let peak = rss_mb(&[dp_pid], "VmHWM:");
    println!(
        "\ngateway RSS: idle {idle_rss:.1} MB, peak under load {peak:.1} MB (target ≤ 30 MB idle)"
    );
    let find = |mode: Mode, c: usize, name: &str| {
        results
            .iter()
            .find(|r| r.0 == mode && r.1 == c && r.2 == name)
            .map(|r| (r.3, r.4))
    };
    if let (Some((direct, _)), Some((gateway, _))) = (
        find(Mode::Json, 16, "direct"),
        find(Mode::Json, 16, "gateway"),
    ) {
        println!(
            "added p99 at 16 connections, JSON: {:.2} ms (target ≤ 1 ms)",
            gateway - direct
        );
    }
    if let (Some((direct, _)), Some((gateway, _))) = (
        find(Mode::Sse, 16, "direct"),
        find(Mode::Sse, 16, "gateway"),
    ) {
        println!(
            "added p99 at 16 connections, SSE:  {:.2} ms (target ≤ 1 ms)",
            gateway - direct
        );
    }
    for mode in [Mode::Json, Mode::Sse] {
        if let (Some((_, nginx)), Some((_, gateway))) =
            (find(mode, 16, "nginx"), find(mode, 16, "gateway"))
        {
            println!(
                "proxy CPU per {} request at 16 connections: gateway {gateway:.1} µs vs nginx {nginx:.1} µs ({:.2}×)",
                if mode == Mode::Json { "JSON" } else { "SSE" },
                gateway / nginx
            );
        }
    }
    drop(children);
    let _ = std::fs::remove_dir_all(&nginx_dir);
    if let Ok(client) = redis::Client::open(redis_url.as_str())
        && let Ok(mut conn) = client.get_multiplexed_async_connection().await
    {
        let _: Result<(), _> = redis::cmd("DEL").arg(&stream).query_async(&mut conn).await;
    }
}

async fn wait_http_post(addr: SocketAddr) {
    for _ in 0..500 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nginx never listened on {addr}");
}
