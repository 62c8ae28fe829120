//! Proxy benchmark: the same load against the mock upstream directly, through nginx
//! `proxy_pass` (when nginx is installed) and through the gateway's data plane, in one run,
//! on the production path: Redis metering on, a priced model, the log level the binary ships
//! with (`RUST_LOG` unset), the data plane started on its core.
//!
//! The proxy under test (data plane or nginx, one worker) is pinned to core 0 from its start;
//! this process — a wrk-like load generator (raw HTTP/1.1 over keep-alive connections, one
//! request in flight per connection) and the mock upstream, on one thread — should run on the
//! other core (`scripts/bench` starts it with `taskset -c 1`). Cases: JSON with a Codex-sized
//! 9.5 KB body and with a 200 KB history; SSE with 20 deltas paced 5 ms apart and in a burst;
//! each at 16 and 64 connections, back to back. The Codex-sized JSON and the burst also run at
//! a fixed 2,000 requests a second over 16 connections (`json@2k`, `sse-burst@2k`): back to
//! back, a proxy's core is saturated and its latency is its queue, which repeats the CPU
//! figure; at a fixed rate the latency is what the proxy adds to a request. For each it prints req/s, p50/p99 latency, time to first
//! body byte (JSON) or to first token (SSE: the first output delta), the proxy's CPU time per
//! request (from /proc) and the gateway's peak RSS in that case, then the gateway's figures
//! as ratios against nginx's. Targets take turns for `BENCH_ROUNDS` rounds (default 3) and
//! every figure is the median of its rounds: a noisy neighbour on a shared machine then slows
//! all of them, not one.
//!
//! `scripts/bench [SECONDS]` (needs the `dist` data-plane binary and Redis; nginx for the
//! ratios). `BENCH_ONLY=json,sse-paced,gateway,nginx,16` narrows the matrix (any of the case
//! names, target names and connection counts).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::{Buf, Bytes, BytesMut};
use gateway_proto::v1;
use gateway_tests::fake_control_plane::{FakeControlPlane, snapshot};
use hdrhistogram::Histogram;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const KEYS: usize = 5_000;
const SSE_DELTAS: usize = 20;
/// Time between two deltas of a paced stream (the mock reads it from this request header).
const PACE_HEADER: &str = "x-bench-pace-ms";
const PACE_MS: u64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    /// A JSON answer to a Codex-sized (~9.5 KB) request.
    Json,
    /// A JSON answer to a long history (~200 KB) that Codex resends every turn.
    JsonLong,
    /// An SSE answer whose deltas come 5 ms apart, as a model writes.
    SsePaced,
    /// An SSE answer whose events all come at once.
    SseBurst,
    /// [`Case::Json`] at a fixed [`RATE`] instead of back to back: what a proxy adds to one
    /// request's latency when it is not saturated (saturated, every proxy's latency is its
    /// queue, the connections times its CPU per request).
    JsonAtRate,
    /// [`Case::SseBurst`] at a fixed [`RATE`].
    SseBurstAtRate,
}

/// Requests per second, over all connections, of the cases at a fixed rate: below what every
/// target serves on its core, so nothing queues but requests that arrive together.
const RATE: u32 = 2_000;

/// The 200 KB case runs last: the heap it grows stays mapped, and would count in the peaks of
/// the Codex-sized cases after it.
const CASES: [Case; 6] = [
    Case::Json,
    Case::SsePaced,
    Case::SseBurst,
    Case::JsonAtRate,
    Case::SseBurstAtRate,
    Case::JsonLong,
];

impl Case {
    fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::JsonLong => "json-200k",
            Self::SsePaced => "sse-paced",
            Self::SseBurst => "sse-burst",
            Self::JsonAtRate => "json@2k",
            Self::SseBurstAtRate => "sse-burst@2k",
        }
    }

    fn stream(self) -> bool {
        matches!(self, Self::SsePaced | Self::SseBurst | Self::SseBurstAtRate)
    }

    /// How long each of `connections` waits from one request's start to its next, when the
    /// case runs at a fixed rate.
    fn interval(self, connections: usize) -> Option<Duration> {
        matches!(self, Self::JsonAtRate | Self::SseBurstAtRate)
            .then(|| Duration::from_secs(connections as u64) / RATE)
    }

    /// The connection counts it runs at: the fixed-rate cases answer the latency targets,
    /// which are set at 16.
    fn connections(self) -> &'static [usize] {
        match self {
            Self::JsonAtRate | Self::SseBurstAtRate => &[16],
            _ => &[16, 64],
        }
    }

    /// The request body, fields in the order the Codex CLI sends them (`model` and `stream`
    /// first, `prompt_cache_key` after the history).
    fn body(self) -> Bytes {
        let history = match self {
            Self::JsonLong => long_history(200 * 1024),
            _ => format!(
                r#"{{"type":"message","role":"developer","content":[{{"type":"input_text","text":"{}"}}]}},{{"type":"message","role":"user","content":[{{"type":"input_text","text":"say hello"}}]}}"#,
                "x".repeat(9_000)
            ),
        };
        Bytes::from(format!(
            r#"{{"model":"gpt-5.1-codex","stream":{},"input":[{history}],"tools":[{{"type":"function","name":"exec_command"}}],"tool_choice":"auto","parallel_tool_calls":false,"reasoning":{{"effort":"medium"}},"store":false,"include":["reasoning.encrypted_content"],"prompt_cache_key":"019ad6c4-bench"}}"#,
            self.stream()
        ))
    }
}

/// A Codex-like history of about `size` bytes: instructions, then turns of messages, tool
/// calls with JSON-in-a-string arguments and their outputs, with escapes and non-ASCII text.
fn long_history(size: usize) -> String {
    let mut out = format!(
        r#"{{"type":"message","role":"developer","content":[{{"type":"input_text","text":"{}"}}]}}"#,
        "You are Codex, a coding agent.\\n".repeat(500)
    );
    let mut turn = 0;
    while out.len() < size {
        out.push_str(&format!(
            r#",{{"type":"message","role":"user","content":[{{"type":"input_text","text":"turn {turn}: fix the \"parser\" — naïve ünïcode\\tand tabs"}}]}},{{"type":"function_call","name":"exec_command","arguments":"{{\"cmd\":[\"rg\",\"-n\",\"fn parse\",\"src/\"],\"workdir\":\"/repo\"}}","call_id":"call_{turn}"}},{{"type":"function_call_output","call_id":"call_{turn}","output":"{}"}}"#,
            "src/parse.rs:12: fn parse(input: &str) -> Result<Ast, Error> {\\n".repeat(20)
        ));
        turn += 1;
    }
    out
}

type MockBody = BoxBody<Bytes, Infallible>;

/// The upstream: answers at once, with a static JSON body or SSE events (20 deltas, then
/// `response.completed`), paced when the request asks for it.
async fn mock(listener: TcpListener) {
    let usage = r#"{"input_tokens":2400,"input_tokens_details":{"cached_tokens":2000},"output_tokens":120,"output_tokens_details":{"reasoning_tokens":40},"total_tokens":2520}"#;
    let json = Bytes::from(format!(
        r#"{{"id":"resp_1","object":"response","status":"completed","output":[{{"type":"message","role":"assistant","content":[{{"type":"output_text","text":"{}"}}]}}],"usage":{usage}}}"#,
        "hello ".repeat(150)
    ));
    let mut events: Vec<Bytes> = vec![Bytes::from_static(
        b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"status\":\"in_progress\"}}\n\n",
    )];
    for i in 0..SSE_DELTAS {
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
                    let pace = req
                        .headers()
                        .get(PACE_HEADER)
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                        .map(Duration::from_millis);
                    let request = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let head = &request[..request.len().min(64)];
                    let response: Response<MockBody> =
                        if memchr::memmem::find(head, b"\"stream\":true").is_some() {
                            let frames = futures_util::stream::unfold(
                                (events, 0usize),
                                move |(events, i)| async move {
                                    let event = events.get(i)?.clone();
                                    if let Some(pace) = pace
                                        && i > 0
                                    {
                                        tokio::time::sleep(pace).await;
                                    }
                                    Some((Ok(Frame::data(event)), (events, i + 1)))
                                },
                            );
                            let mut r = Response::new(BoxBody::new(StreamBody::new(frames)));
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

impl Run {
    fn new() -> Self {
        Self {
            requests: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            latency: Histogram::new(3).unwrap(),
            ttfb: Histogram::new(3).unwrap(),
        }
    }
}

/// The bytes of one request, written whole on every turn (as wrk does).
fn request_bytes(path: &str, auth: &str, case: Case) -> Arc<Vec<u8>> {
    let body = case.body();
    let pace = if case == Case::SsePaced {
        format!("{PACE_HEADER}: {PACE_MS}\r\n")
    } else {
        String::new()
    };
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\n{pace}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Arc::new(out)
}

/// How a response body is framed.
enum Framing {
    Length(usize),
    Chunked,
}

/// The response head at the start of `buf`: status, framing and its length, once complete.
fn parse_head(buf: &[u8]) -> Result<Option<(u16, Framing, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buf).map_err(|e| e.to_string())? {
        httparse::Status::Partial => Ok(None),
        httparse::Status::Complete(len) => {
            let mut framing = Framing::Length(0);
            for h in response.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    let n = std::str::from_utf8(h.value).map_err(|e| e.to_string())?;
                    framing = Framing::Length(n.trim().parse().map_err(|_| "content-length")?);
                } else if h.name.eq_ignore_ascii_case("transfer-encoding")
                    && h.value.eq_ignore_ascii_case(b"chunked")
                {
                    framing = Framing::Chunked;
                }
            }
            Ok(Some((response.code.unwrap_or(0), framing, len)))
        }
    }
}

/// Walks complete chunks of a chunked body from `*pos`; true once the last chunk is read.
fn chunked_done(buf: &[u8], pos: &mut usize) -> Result<bool, String> {
    loop {
        let Some(eol) = memchr::memmem::find(&buf[*pos..], b"\r\n") else {
            return Ok(false);
        };
        let line = std::str::from_utf8(&buf[*pos..*pos + eol]).map_err(|e| e.to_string())?;
        let hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(hex, 16).map_err(|_| format!("chunk size {line:?}"))?;
        let data = *pos + eol + 2;
        if size == 0 {
            // No trailers: the body ends with an empty line.
            if buf.len() < data + 2 {
                return Ok(false);
            }
            *pos = data + 2;
            return Ok(true);
        }
        if buf.len() < data + size + 2 {
            return Ok(false);
        }
        *pos = data + size + 2;
    }
}

/// One keep-alive connection sending `request` until `deadline`: back to back, or one every
/// `pace.0` starting at `pace.1` (a turn missed by a slow answer is skipped, not made up in a
/// burst). Latency counts from the request's write, so the pacing itself adds nothing to it.
async fn connection(
    addr: SocketAddr,
    request: Arc<Vec<u8>>,
    deadline: Instant,
    pace: Option<(Duration, Instant)>,
) -> Run {
    let mut run = Run::new();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut next = pace.map(|(_, first)| first);
    while Instant::now() < deadline {
        if let (Some((every, _)), Some(at)) = (pace, next.as_mut()) {
            tokio::time::sleep_until(tokio::time::Instant::from_std(*at)).await;
            *at = (*at + every).max(Instant::now());
        }
        let t0 = Instant::now();
        match exchange(&mut stream, &request, &mut buf, t0).await {
            Ok((status, ttfb)) => {
                let total = t0.elapsed();
                run.latency.record(total.as_micros() as u64).unwrap();
                run.ttfb.record(ttfb.as_micros() as u64).unwrap();
                run.requests += 1;
                if !(200..300).contains(&status) {
                    run.errors += 1;
                }
            }
            Err(_) => {
                run.errors += 1;
                break;
            }
        }
    }
    run
}

/// What an SSE answer's first token looks like on the wire.
const FIRST_TOKEN: &[u8] = b"response.output_text.delta";

/// Writes one request and reads its whole response: its status and the time to its first
/// body byte (JSON) or to its first token (SSE: the first output delta; a gateway holds the
/// events before it back until it knows the stream will not be retried).
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut BytesMut,
    t0: Instant,
) -> Result<(u16, Duration), String> {
    stream.write_all(request).await.map_err(|e| e.to_string())?;
    let (status, framing, head_len) = loop {
        if let Some(head) = parse_head(buf)? {
            break head;
        }
        read_more(stream, buf).await?;
    };
    buf.advance(head_len);
    match framing {
        Framing::Length(_) => {
            while buf.is_empty() {
                read_more(stream, buf).await?;
            }
        }
        Framing::Chunked => {
            let mut searched = 0;
            while memchr::memmem::find(&buf[searched..], FIRST_TOKEN).is_none() {
                searched = buf.len().saturating_sub(FIRST_TOKEN.len());
                read_more(stream, buf).await?;
            }
        }
    }
    let ttfb = t0.elapsed();
    match framing {
        Framing::Length(n) => {
            while buf.len() < n {
                read_more(stream, buf).await?;
            }
            buf.advance(n);
        }
        Framing::Chunked => {
            let mut pos = 0;
            while !chunked_done(buf, &mut pos)? {
                read_more(stream, buf).await?;
            }
            buf.advance(pos);
        }
    }
    Ok((status, ttfb))
}

async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<(), String> {
    buf.reserve(64 * 1024);
    match stream.read_buf(buf).await {
        Ok(0) => Err("connection closed".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// `connections` clients, each on its own keep-alive connection, for `duration`; paced at
/// one request every `interval` each, their turns spread evenly, when there is one.
async fn load(
    addr: SocketAddr,
    request: &Arc<Vec<u8>>,
    connections: usize,
    duration: Duration,
    interval: Option<Duration>,
) -> Run {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            let pace =
                interval.map(|every| (every, started + every * i as u32 / connections as u32));
            tokio::spawn(connection(addr, request.clone(), deadline, pace))
        })
        .collect();
    let mut run = Run::new();
    for t in tasks {
        let one = t.await.unwrap();
        run.requests += one.requests;
        run.errors += one.errors;
        run.latency.add(one.latency).unwrap();
        run.ttfb.add(one.ttfb).unwrap();
    }
    run.elapsed = started.elapsed();
    run
}

/// CPU seconds (user + system) of a process and its children's threads, from /proc.
/// CPU time the processes have used, in seconds: the nanoseconds on a CPU of each of their
/// threads (`schedstat`). `stat`'s utime and stime count 10 ms ticks, a coarse grain for a
/// case of a few hundred streams (40 µs a stream in a 2 s paced run); they are the fallback.
fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .map(|&pid| on_cpu_ns(pid).map_or_else(|| ticks(pid), |ns| ns as f64 / 1e9))
        .sum()
}

fn on_cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

fn ticks(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the comm.
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / 100.0
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

/// Starts a new peak-RSS measurement of `pid` (its `VmHWM` is reset to what it uses now).
fn reset_peak_rss(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// The median of `values` (NaN for none).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
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
    /// Last started, first stopped: the data plane flushes its usage before its Redis goes.
    fn drop(&mut self) {
        for c in self.0.iter_mut().rev() {
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

/// One row of the results: medians over the rounds.
struct Row {
    case: Case,
    connections: usize,
    target: &'static str,
    p99_ms: f64,
    ttfb_p99_ms: f64,
    cpu_us: f64,
    /// The gateway's peak RSS during this case's runs.
    peak_rss_mb: f64,
}

/// What the gateway is held to, against nginx (or the mock itself) in the same run.
fn report(rows: &[Row]) {
    let find = |case: Case, c: usize, target: &str| {
        rows.iter()
            .find(|r| r.case == case && r.connections == c && r.target == target)
    };
    println!("\n| target | gateway | baseline | ratio / difference | |");
    println!("|---|---|---|---|---|");
    let line = |what: String, gateway: f64, baseline: f64, ratio: bool, bound: f64| {
        let (figure, met) = if ratio {
            let r = gateway / baseline;
            (format!("{r:.2}×"), r <= bound)
        } else {
            let d = gateway - baseline;
            (format!("{d:+.2} ms"), d <= bound)
        };
        println!(
            "| {what} | {gateway:.2} | {baseline:.2} | {figure} | {} |",
            if met { "met" } else { "**not met**" }
        );
    };
    for (case, bound) in [
        (Case::Json, 1.0),
        (Case::JsonLong, 1.0),
        (Case::SsePaced, 1.0),
        (Case::SseBurst, 1.5),
    ] {
        for c in [16, 64] {
            if let (Some(g), Some(n)) = (find(case, c, "gateway"), find(case, c, "nginx")) {
                line(
                    format!(
                        "CPU µs per request, {}, {c} conns (≤ {bound:.1}× nginx)",
                        case.name()
                    ),
                    g.cpu_us,
                    n.cpu_us,
                    true,
                    bound,
                );
            }
        }
    }
    // Back to back, a target's core is saturated and its latency is its queue (connections
    // times CPU per request): those lines repeat the CPU figures. The fixed-rate cases show
    // the latency a proxy adds to a request.
    let load = |case: Case| match case {
        Case::Json | Case::SseBurst => "back to back",
        Case::JsonAtRate | Case::SseBurstAtRate => "2,000 req/s",
        _ => "paced",
    };
    for case in [Case::Json, Case::JsonAtRate, Case::SsePaced] {
        if let (Some(g), Some(n)) = (find(case, 16, "gateway"), find(case, 16, "nginx")) {
            line(
                format!(
                    "p99 ms, {}, 16 conns, {} (≤ nginx + 0.5 ms)",
                    case.name(),
                    load(case)
                ),
                g.p99_ms,
                n.p99_ms,
                false,
                0.5,
            );
        }
    }
    for case in [Case::SsePaced, Case::SseBurst, Case::SseBurstAtRate] {
        if let (Some(g), Some(d)) = (find(case, 16, "gateway"), find(case, 16, "direct")) {
            line(
                format!(
                    "time to first token p99 ms, {}, 16 conns, {} (≤ direct + 0.5 ms)",
                    case.name(),
                    load(case)
                ),
                g.ttfb_p99_ms,
                d.ttfb_p99_ms,
                false,
                0.5,
            );
        }
    }
    // Codex-sized requests; 64 clients each sending 200 KB at once hold 13 MB of bodies in
    // flight by themselves (shown, not held to the bound).
    let peak = |cases: &[Case]| {
        rows.iter()
            .filter(|r| r.target == "gateway" && cases.contains(&r.case))
            .map(|r| r.peak_rss_mb)
            .fold(f64::NAN, f64::max)
    };
    let codex_sized = peak(&[
        Case::Json,
        Case::SsePaced,
        Case::SseBurst,
        Case::JsonAtRate,
        Case::SseBurstAtRate,
    ]);
    if !codex_sized.is_nan() {
        println!(
            "| peak RSS under load, Codex-sized requests (≤ 30 MB) | {codex_sized:.1} MB | | | {} |",
            if codex_sized <= 30.0 {
                "met"
            } else {
                "**not met**"
            }
        );
    }
    let long = peak(&[Case::JsonLong]);
    if !long.is_nan() {
        println!("| peak RSS under load, 200 KB requests (shown) | {long:.1} MB | | | |");
    }
}

/// Where each CPU gap lies: under the floor (the HTTP stack the gateway is built on) or above
/// it (the product's own work).
fn report_split(rows: &[Row]) {
    let find = |case: Case, c: usize, target: &str| {
        rows.iter()
            .find(|r| r.case == case && r.connections == c && r.target == target)
    };
    let mut split = false;
    for case in CASES {
        for c in [16, 64] {
            if let (Some(g), Some(f), Some(n)) = (
                find(case, c, "gateway"),
                find(case, c, "floor"),
                find(case, c, "nginx"),
            ) {
                if !split {
                    println!(
                        "\n| CPU µs per request | nginx | floor (the stack) | gateway | floor / nginx | gateway − floor (the product) |"
                    );
                    println!("|---|---|---|---|---|---|");
                    split = true;
                }
                println!(
                    "| {}, {c} conns | {:.1} | {:.1} | {:.1} | {:.2}× | {:+.1} µs |",
                    case.name(),
                    n.cpu_us,
                    f.cpu_us,
                    g.cpu_us,
                    f.cpu_us / n.cpu_us,
                    g.cpu_us - f.cpu_us
                );
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args.get(1).map_or(5, |s| s.parse().expect("SECONDS"));
    let duration = Duration::from_secs(seconds);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|r| *r > 0)
        .unwrap_or(3);
    let target_dir =
        PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()));
    // The data plane as images ship it: the `dist` profile (override with BENCH_PROFILE).
    let profile = std::env::var("BENCH_PROFILE").unwrap_or_else(|_| "dist".into());
    let data_plane_bin = target_dir.join(&profile).join("data-plane");
    assert!(
        data_plane_bin.exists(),
        "build it first: cargo build --profile {profile} --bin data-plane"
    );
    let mut children = Guard(Vec::new());
    let redis_url = match own_redis(&mut children).await {
        Some(url) => url,
        None => {
            eprintln!(
                "proxy-bench: no redis-server to start; using TEST_REDIS_URL, which the scheduler may run on the proxy's core"
            );
            std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
        }
    };
    let stream = format!("cgw-bench:{}", uuid::Uuid::new_v4().simple());

    let mock_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock_addr = mock_listener.local_addr().unwrap();
    tokio::spawn(mock(mock_listener));

    // The gateway, fed a snapshot with thousands of keys and a price by a stand-in control
    // plane, so every request is admitted, routed, priced and metered as in production.
    let mut fake = FakeControlPlane::start().await;
    let secrets: Vec<String> = (0..KEYS).map(|i| format!("cgw-bench-key-{i:05}")).collect();
    let secret_refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let mut snap = snapshot(1, &format!("http://{mock_addr}/openai"), &secret_refs);
    snap.users[0].balance_micros = i64::MAX / 2;
    snap.prices = vec![v1::Price {
        model: "*".into(),
        input_micros: 1_250_000,
        cached_input_micros: 125_000,
        output_micros: 10_000_000,
    }];
    let gateway_addr = free_addr();
    let state_dir = std::env::temp_dir().join(format!("cgw-bench-state-{}", std::process::id()));
    // Started on its core, so its runtime sizes itself to the one core it has; logs at the
    // level and in the format the binary ships with.
    let dp = Command::new("taskset")
        .args(["-c", "0"])
        .arg(&data_plane_bin)
        .env_remove("RUST_LOG")
        .env("LISTEN_ADDR", gateway_addr.to_string())
        .env("CONTROL_PLANE_URL", fake.url())
        .env("DATA_PLANE_TOKEN", "bench-token-bench-token")
        .env("REDIS_URL", &redis_url)
        .env("USAGE_STREAM", &stream)
        .env("STATE_DIR", &state_dir)
        .env("NODE_ID", "bench")
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
            "worker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  keepalive_requests 10000000;\n  client_body_buffer_size 256k;\n  client_max_body_size 16m;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n  upstream mock {{ server {mock_addr}; keepalive 128; }}\n  server {{\n    listen {nginx_addr};\n    location / {{\n      proxy_pass http://mock;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_buffering off;\n    }}\n  }}\n}}\n",
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
        wait_listening(nginx_addr, "nginx").await;
        let mut pids = vec![master];
        pids.extend(nginx_children(master));
        targets.push(Target {
            name: "nginx",
            addr: nginx_addr,
            path: "/openai/v1/responses".into(),
            pids,
        });
    } else {
        println!("nginx is not installed: no ratios (apt-get install nginx-light)");
    }
    // The stack without the product (see proxy-floor.rs), when it was built beside this bench.
    let floor_bin = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("proxy-floor")))
        .filter(|bin| bin.exists());
    if let Some(floor_bin) = floor_bin {
        let floor_addr = free_addr();
        let floor = Command::new("taskset")
            .args(["-c", "0"])
            .arg(&floor_bin)
            .arg(floor_addr.to_string())
            .arg(format!("http://{mock_addr}/openai"))
            .spawn()
            .expect("start proxy-floor");
        let floor_pid = floor.id();
        children.0.push(floor);
        wait_listening(floor_addr, "proxy-floor").await;
        targets.push(Target {
            name: "floor",
            addr: floor_addr,
            path: "/v1/responses".into(),
            pids: vec![floor_pid],
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
        "proxy-bench: {seconds} s per run, {rounds} rounds (medians); proxy pinned to core 0 from its start; {KEYS} keys in the gateway's snapshot; Redis metering on; RUST_LOG unset"
    );
    println!("gateway RSS idle after snapshot: {idle_rss:.1} MB\n");
    println!(
        "| case | conns | target | req/s | p50 ms | p99 ms | TTFB/TTFT p50 ms | TTFB/TTFT p99 ms | proxy CPU µs/req | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let only: Vec<&str> = only.split(',').filter(|o| !o.is_empty()).collect();
    // Each dimension is narrowed only when BENCH_ONLY names one of its values.
    let keep = |values: &[&str], value: &str| {
        !only.iter().any(|o| values.contains(o)) || only.contains(&value)
    };
    let case_names: Vec<&str> = CASES.iter().map(|c| c.name()).collect();
    let mut rows = Vec::new();
    for case in CASES.into_iter().filter(|c| keep(&case_names, c.name())) {
        for connections in case
            .connections()
            .iter()
            .copied()
            .filter(|c| keep(&["16", "64"], &c.to_string()))
        {
            let chosen: Vec<&Target> = targets
                .iter()
                .filter(|t| keep(&["direct", "nginx", "floor", "gateway"], t.name))
                .collect();
            // Targets take turns, round after round, so a slow spell of a shared machine
            // lands on all of them; each figure is the median of its rounds.
            let mut runs: Vec<Vec<(Run, f64)>> = chosen.iter().map(|_| Vec::new()).collect();
            reset_peak_rss(dp_pid);
            for _ in 0..rounds {
                for (t, runs) in chosen.iter().zip(&mut runs) {
                    let request = request_bytes(&t.path, &auth, case);
                    // Warm up connections and caches.
                    let interval = case.interval(connections);
                    load(
                        t.addr,
                        &request,
                        connections,
                        Duration::from_millis(300),
                        interval,
                    )
                    .await;
                    let cpu0 = cpu_seconds(&t.pids);
                    let run = load(t.addr, &request, connections, duration, interval).await;
                    let cpu = cpu_seconds(&t.pids) - cpu0;
                    runs.push((run, cpu));
                }
            }
            let peak_rss_mb = rss_mb(&[dp_pid], "VmHWM:");
            for (t, runs) in chosen.iter().zip(runs) {
                let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
                let of = |f: &dyn Fn(&Run, f64) -> f64| {
                    median(runs.iter().map(|(run, cpu)| f(run, *cpu)).collect())
                };
                let rps = of(&|run, _| run.requests as f64 / run.elapsed.as_secs_f64());
                let cpu_us = if t.pids.is_empty() {
                    f64::NAN
                } else {
                    of(&|run, cpu| cpu * 1e6 / run.requests.max(1) as f64)
                };
                let row = Row {
                    case,
                    connections,
                    target: t.name,
                    p99_ms: of(&|run, _| ms(&run.latency, 0.99)),
                    ttfb_p99_ms: of(&|run, _| ms(&run.ttfb, 0.99)),
                    cpu_us,
                    peak_rss_mb,
                };
                println!(
                    "| {} | {connections} | {} | {rps:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
                    case.name(),
                    t.name,
                    of(&|run, _| ms(&run.latency, 0.5)),
                    row.p99_ms,
                    of(&|run, _| ms(&run.ttfb, 0.5)),
                    row.ttfb_p99_ms,
                    if cpu_us.is_nan() {
                        "-".into()
                    } else {
                        format!("{cpu_us:.1}")
                    },
                    runs.iter().map(|(run, _)| run.errors).sum::<u64>(),
                );
                rows.push(row);
            }
        }
    }
    let peak = rows.iter().map(|r| r.peak_rss_mb).fold(f64::NAN, f64::max);
    println!("\ngateway RSS: idle {idle_rss:.1} MB, highest peak of a case {peak:.1} MB");
    report(&rows);
    report_split(&rows);
    drop(children);
    let _ = std::fs::remove_dir_all(&nginx_dir);
    let _ = std::fs::remove_dir_all(&state_dir);
    if let Ok(client) = redis::Client::open(redis_url.as_str())
        && let Ok(mut conn) = client.get_multiplexed_async_connection().await
    {
        let _: Result<(), _> = redis::cmd("DEL").arg(&stream).query_async(&mut conn).await;
    }
}

/// A Redis of the bench's own, where production has it: off the proxy's core (on another host
/// there; here on this process's core, whose affinity the child inherits). A shared Redis left
/// to the scheduler ran on the proxy's core after each batch of `XADD`s and held the requests
/// of that moment behind it, a tail nginx, which meters nothing, never pays.
async fn own_redis(children: &mut Guard) -> Option<String> {
    let addr = free_addr();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &addr.port().to_string()])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(std::env::temp_dir())
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    children.0.push(child);
    wait_listening(addr, "redis-server").await;
    Some(format!("redis://{addr}"))
}

/// Waits until `what` accepts connections on `addr`.
async fn wait_listening(addr: SocketAddr, what: &str) {
    for _ in 0..500 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} never listened on {addr}");
}
