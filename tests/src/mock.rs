//! A mock upstream that speaks the Responses API over SSE and JSON, bound to port 0. It
//! records every request (path, headers, exact body bytes) and can be told how to answer.

use std::{
    collections::VecDeque,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use serde_json::json;
use tokio::{
    net::TcpListener,
    sync::{Notify, mpsc},
};
use tokio_stream::wrappers::ReceiverStream;

/// Token counts the mock reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MockUsage {
    pub input: u64,
    pub cached: u64,
    pub output: u64,
    pub reasoning: u64,
}

impl Default for MockUsage {
    fn default() -> Self {
        Self {
            input: 1200,
            cached: 1000,
            output: 300,
            reasoning: 120,
        }
    }
}

/// A way for the mock to fail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Fault {
    /// Answer normally.
    #[default]
    None,
    /// Answer this status with an error body (naming an internal URL and key, which must
    /// never reach the client), and `Retry-After: N` when given.
    Status(u16, Option<u32>),
    /// Accept the request and never send a response head.
    HangBeforeHead,
    /// Send this many events (or, for JSON, half the body), then break the connection.
    CutAfter(usize),
    /// `response.created`, then `response.failed` before any output.
    FailedBeforeOutput,
    /// Answer normally but report no usage.
    OmitUsage,
}

/// How the mock answers a request.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Usage to report in the terminal event / JSON body.
    pub usage: MockUsage,
    /// Number of `response.output_text.delta` events.
    pub deltas: usize,
    /// When set, the stream pauses after the first output delta until notified.
    pub gate: Option<Arc<Notify>>,
    /// Pause between events (a slow but alive stream).
    pub gap: Option<std::time::Duration>,
    pub fault: Fault,
    /// Answer with `Connection: close` and close the connection after the response.
    pub close_connection: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            usage: MockUsage::default(),
            deltas: 5,
            gate: None,
            gap: None,
            fault: Fault::None,
            close_connection: false,
        }
    }
}

impl Behaviour {
    /// The default answer with this fault.
    pub fn fault(fault: Fault) -> Self {
        Self {
            fault,
            ..Self::default()
        }
    }
}

/// Body type of mock responses; an error breaks the connection mid-body.
type MockBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Debug, thiserror::Error)]
#[error("mock cut the stream")]
struct Cut;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: http::Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    /// The `authorization` header as text.
    pub fn authorization(&self) -> &str {
        self.headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

#[derive(Debug, Default)]
struct State {
    behaviour: Behaviour,
    queued: VecDeque<Behaviour>,
    /// Per pool (first path segment): queued answers, then a standing behaviour.
    pool_queued: std::collections::HashMap<String, VecDeque<Behaviour>>,
    pool_behaviour: std::collections::HashMap<String, Behaviour>,
    recorded: Vec<Recorded>,
    /// Pools whose `GET /v1/models` answers with this status instead of 200.
    failing_probes: std::collections::HashMap<String, StatusCode>,
}

/// The running mock.
#[derive(Debug, Clone)]
pub struct MockUpstream {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// TCP connections accepted so far.
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl MockUpstream {
    /// Starts the mock on 127.0.0.1, port 0.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let addr = listener.local_addr().expect("mock addr");
        let state = Arc::new(Mutex::new(State::default()));
        let mock = Self {
            addr,
            state,
            connections: Arc::default(),
        };
        let server = mock.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                server
                    .connections
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mock = server.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let mock = mock.clone();
                        async move { Ok::<_, Infallible>(mock.answer(req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        mock
    }

    /// TCP connections the mock has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Base URL for an upstream named `pool` on this mock (never ends in `/v1`).
    pub fn base_url(&self, pool: &str) -> String {
        format!("http://{}/{pool}", self.addr)
    }

    /// Sets how every following request is answered.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.state.lock().expect("mock state").behaviour = behaviour;
    }

    /// Answers the next request this way, then returns to the default behaviour.
    pub fn queue(&self, behaviour: Behaviour) {
        self.state
            .lock()
            .expect("mock state")
            .queued
            .push_back(behaviour);
    }

    /// Answers every request to `pool` this way (None: back to the shared behaviour).
    pub fn set_pool_behaviour(&self, pool: &str, behaviour: Option<Behaviour>) {
        let mut state = self.state.lock().expect("mock state");
        match behaviour {
            Some(b) => state.pool_behaviour.insert(pool.to_owned(), b),
            None => state.pool_behaviour.remove(pool),
        };
    }

    /// Answers the next request to `pool` this way.
    pub fn queue_for(&self, pool: &str, behaviour: Behaviour) {
        self.state
            .lock()
            .expect("mock state")
            .pool_queued
            .entry(pool.to_owned())
            .or_default()
            .push_back(behaviour);
    }

    /// POSTs received by `pool`.
    pub fn posts(&self, pool: &str) -> Vec<Recorded> {
        let prefix = format!("/{pool}/");
        self.recorded()
            .into_iter()
            .filter(|r| r.method == http::Method::POST && r.path.starts_with(&prefix))
            .collect()
    }

    /// Makes `GET {pool}/v1/models` answer `status` (None: 200 again).
    pub fn fail_probes(&self, pool: &str, status: Option<StatusCode>) {
        let mut state = self.state.lock().expect("mock state");
        match status {
            Some(s) => state.failing_probes.insert(pool.to_owned(), s),
            None => state.failing_probes.remove(pool),
        };
    }

    /// Health probes received for `pool`.
    pub fn probes(&self, pool: &str) -> usize {
        let prefix = format!("/{pool}/");
        self.recorded()
            .iter()
            .filter(|r| r.method == http::Method::GET && r.path.starts_with(&prefix))
            .count()
    }

    /// Every request received so far.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.state.lock().expect("mock state").recorded.clone()
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<MockBody> {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if parts.method == http::Method::GET {
            return self.models(&parts);
        }
        let behaviour = self.choose(&parts, &body);
        let close = behaviour.close_connection;
        let mut response = respond(&parts, &body, behaviour).await;
        if close {
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        response
    }

    /// Records the request and picks the behaviour that answers it.
    fn choose(&self, parts: &http::request::Parts, body: &Bytes) -> Behaviour {
        let mut state = self.state.lock().expect("mock state");
        state.recorded.push(Recorded {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            headers: parts.headers.clone(),
            body: body.clone(),
        });
        let pool = parts
            .uri
            .path()
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        if let Some(b) = state
            .pool_queued
            .get_mut(&pool)
            .and_then(VecDeque::pop_front)
        {
            b
        } else if let Some(b) = state.pool_behaviour.get(&pool) {
            b.clone()
        } else {
            state
                .queued
                .pop_front()
                .unwrap_or_else(|| state.behaviour.clone())
        }
    }
}

/// The mock's answer to a POST, as `behaviour` says.
async fn respond(
    parts: &http::request::Parts,
    body: &Bytes,
    behaviour: Behaviour,
) -> Response<MockBody> {
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let model = request["model"].as_str().unwrap_or("mock-model").to_owned();
    match behaviour.fault {
        Fault::Status(code, retry_after) => {
            let body = json!({"error": {
                    "message": "pool exploded at https://internal.pool.example/v1 with key sk-internal-secret-key",
                    "type": "server_error"}});
            let mut response = full_response(body.to_string());
            *response.status_mut() = StatusCode::from_u16(code).expect("status");
            if let Some(after) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", http::HeaderValue::from(after));
            }
            return response;
        }
        Fault::HangBeforeHead => {
            std::future::pending::<()>().await;
        }
        _ => {}
    }
    let path = parts.uri.path();
    if path.ends_with("/chat/completions") || path.ends_with("/v1/completions") {
        let include_usage = request["stream_options"]["include_usage"].as_bool() == Some(true);
        return chat(
            model,
            behaviour,
            request["stream"].as_bool() == Some(true),
            include_usage,
        );
    }
    if request["stream"].as_bool() == Some(true) {
        sse(model, behaviour)
    } else {
        let status = if behaviour.fault == Fault::FailedBeforeOutput {
            "failed"
        } else {
            "completed"
        };
        let mut body = response_object(&model, &behaviour, status);
        if behaviour.fault == Fault::OmitUsage {
            body["usage"] = serde_json::Value::Null;
        }
        let text = body.to_string();
        let mut response = if let Fault::CutAfter(_) = behaviour.fault {
            let half = Bytes::from(text[..text.len() / 2].to_owned());
            let frames: Vec<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>> =
                vec![Ok(Frame::data(half)), Err(Box::new(Cut))];
            Response::new(BoxBody::new(StreamBody::new(tokio_stream::iter(frames))))
        } else {
            gated_halves(text, behaviour.gate.clone())
        };
        response.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        response
    }
}

impl MockUpstream {
    fn models(&self, parts: &http::request::Parts) -> Response<MockBody> {
        let path = parts.uri.path().to_owned();
        let pool = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let failing = {
            let mut state = self.state.lock().expect("mock state");
            state.recorded.push(Recorded {
                method: parts.method.clone(),
                path: path.clone(),
                headers: parts.headers.clone(),
                body: Bytes::new(),
            });
            state.failing_probes.get(&pool).copied()
        };
        let (status, body) = match failing {
            Some(status) => (
                status,
                json!({"error": {"message": "probe failure", "type": "server_error"}}),
            ),
            None if path.ends_with("/v1/models") => (
                StatusCode::OK,
                json!({"object": "list", "data": [{"id": "mock-model", "object": "model"}]}),
            ),
            None => (
                StatusCode::NOT_FOUND,
                json!({"error": {"message": "no such path"}}),
            ),
        };
        let mut response = full_response(body.to_string());
        *response.status_mut() = status;
        response
    }
}

fn full_response(text: String) -> Response<MockBody> {
    Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    )
}

fn chat_usage_json(u: MockUsage) -> serde_json::Value {
    json!({
        "prompt_tokens": u.input,
        "prompt_tokens_details": {"cached_tokens": u.cached},
        "completion_tokens": u.output,
        "completion_tokens_details": {"reasoning_tokens": u.reasoning},
        "total_tokens": u.input + u.output,
    })
}

/// A chat/completions answer: one JSON body, or chunks ending in `data: [DONE]` with a
/// usage-only chunk (`choices: []`) before it only when the request asked for usage.
/// A JSON body in two halves; with a gate, the second half waits until it opens.
fn gated_halves(text: String, gate: Option<Arc<Notify>>) -> Response<MockBody> {
    let Some(gate) = gate else {
        return full_response(text);
    };
    type Item = Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>;
    let (tx, rx) = mpsc::channel::<Item>(2);
    tokio::spawn(async move {
        let mid = text.len() / 2;
        let _ = tx
            .send(Ok(Frame::data(Bytes::from(text[..mid].to_owned()))))
            .await;
        gate.notified().await;
        let _ = tx
            .send(Ok(Frame::data(Bytes::from(text[mid..].to_owned()))))
            .await;
    });
    Response::new(BoxBody::new(StreamBody::new(ReceiverStream::new(rx))))
}

fn chat(model: String, b: Behaviour, stream: bool, include_usage: bool) -> Response<MockBody> {
    let content: String = (0..b.deltas).map(|i| format!("word{i} ")).collect();
    let usage = if b.fault == Fault::OmitUsage {
        serde_json::Value::Null
    } else {
        chat_usage_json(b.usage)
    };
    if !stream {
        let body = json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": usage,
        });
        let mut response = gated_halves(body.to_string(), b.gate.clone());
        response.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        return response;
    }
    let mut chunks = Vec::new();
    for i in 0..b.deltas {
        let mut chunk = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": model,
            "choices": [{"index": 0, "delta": {"content": format!("word{i} ")}, "finish_reason": null}]});
        if include_usage {
            chunk["usage"] = serde_json::Value::Null;
        }
        chunks.push(format!("data: {chunk}\n\n"));
    }
    if include_usage && !usage.is_null() {
        let usage = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": model,
            "choices": [], "usage": usage});
        chunks.push(format!("data: {usage}\n\n"));
    }
    chunks.push("data: [DONE]\n\n".to_owned());
    type Item = Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>;
    let (tx, rx) = mpsc::channel::<Item>(4);
    let gate = b.gate.clone();
    let gap = b.gap;
    tokio::spawn(async move {
        for (i, chunk) in chunks.into_iter().enumerate() {
            if tx.send(Ok(Frame::data(Bytes::from(chunk)))).await.is_err() {
                return;
            }
            if let Some(gap) = gap {
                tokio::time::sleep(gap).await;
            }
            if i == 0
                && let Some(gate) = &gate
            {
                gate.notified().await;
            }
        }
    });
    let mut response = Response::new(BoxBody::new(StreamBody::new(ReceiverStream::new(rx))));
    response.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("text/event-stream"),
    );
    response
}

fn usage_json(u: MockUsage) -> serde_json::Value {
    json!({
        "input_tokens": u.input,
        "input_tokens_details": {"cached_tokens": u.cached},
        "output_tokens": u.output,
        "output_tokens_details": {"reasoning_tokens": u.reasoning},
        "total_tokens": u.input + u.output,
    })
}

fn response_object(model: &str, b: &Behaviour, status: &str) -> serde_json::Value {
    let text: String = (0..b.deltas).map(|i| format!("word{i} ")).collect();
    json!({
        "id": "resp_mock",
        "object": "response",
        "created_at": 1_700_000_000,
        "status": status,
        "model": model,
        "output": [{
            "type": "message",
            "id": "msg_mock",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }],
        "usage": usage_json(b.usage),
    })
}

fn event(kind: &str, seq: &mut u64, mut data: serde_json::Value) -> Bytes {
    data["type"] = json!(kind);
    data["sequence_number"] = json!(*seq);
    *seq += 1;
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

fn sse(model: String, b: Behaviour) -> Response<MockBody> {
    type Item = Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>;
    let (tx, rx) = mpsc::channel::<Item>(16);
    tokio::spawn(async move {
        let mut seq = 0;
        let in_progress = json!({"id": "resp_mock", "object": "response", "status": "in_progress", "model": model, "output": []});
        let item = json!({"type": "message", "id": "msg_mock", "status": "in_progress", "role": "assistant", "content": []});
        let mut events = vec![
            event(
                "response.created",
                &mut seq,
                json!({"response": in_progress}),
            ),
            event(
                "response.in_progress",
                &mut seq,
                json!({"response": in_progress}),
            ),
        ];
        if b.fault == Fault::FailedBeforeOutput {
            let failed = json!({"id": "resp_mock", "object": "response", "status": "failed", "model": model,
                "error": {"code": "server_error", "message": "pool failed"}, "output": [], "usage": null});
            events.push(event(
                "response.failed",
                &mut seq,
                json!({"response": failed}),
            ));
        } else {
            events.push(event(
                "response.output_item.added",
                &mut seq,
                json!({"output_index": 0, "item": item}),
            ));
            events.push(event("response.content_part.added", &mut seq, json!({"item_id": "msg_mock", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": ""}})));
            for i in 0..b.deltas {
                events.push(event(
                    "response.output_text.delta",
                    &mut seq,
                    json!({"item_id": "msg_mock", "output_index": 0, "content_index": 0, "delta": format!("word{i} ")}),
                ));
            }
            let mut done = response_object(&model, &b, "completed");
            if b.fault == Fault::OmitUsage {
                done["usage"] = serde_json::Value::Null;
            }
            events.push(event(
                "response.output_text.done",
                &mut seq,
                json!({"item_id": "msg_mock", "output_index": 0, "content_index": 0}),
            ));
            events.push(event(
                "response.content_part.done",
                &mut seq,
                json!({"item_id": "msg_mock", "output_index": 0, "content_index": 0}),
            ));
            events.push(event(
                "response.output_item.done",
                &mut seq,
                json!({"output_index": 0, "item": done["output"][0]}),
            ));
            events.push(event(
                "response.completed",
                &mut seq,
                json!({"response": done}),
            ));
        }
        let mut gated = false;
        for (i, e) in events.into_iter().enumerate() {
            if let Fault::CutAfter(n) = b.fault
                && i == n
            {
                let _ = tx.send(Err(Box::new(Cut))).await;
                return;
            }
            let is_delta =
                String::from_utf8_lossy(&e).starts_with("event: response.output_text.delta");
            if tx.send(Ok(Frame::data(e))).await.is_err() {
                return;
            }
            if is_delta
                && !gated
                && let Some(gate) = &b.gate
            {
                gated = true;
                gate.notified().await;
            }
            if let Some(gap) = b.gap {
                tokio::time::sleep(gap).await;
            }
        }
    });
    let mut response = Response::new(BoxBody::new(StreamBody::new(ReceiverStream::new(rx))));
    response.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("text/event-stream"),
    );
    response
}
