//! Traces reach an OpenTelemetry collector: a real OTLP/gRPC server on port 0 receives the
//! spans of a proxied request (with its upstream attempt as a child), the snapshot apply, the
//! usage publish and the ledger's consumer batch, under the configured service name.
//!
//! Its own test binary, because the exporter is installed process-wide, as in the binaries.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use gateway_telemetry::{LogFormat, TelemetryArgs};
use gateway_tests::{Harness, MockUsage, body_bytes, request_id};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, any_value::Value},
};
use tokio::{net::TcpListener, sync::Notify};
use tokio_stream::wrappers::TcpListenerStream;

/// One received span, flattened.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: HashMap<String, String>,
}

/// A collector that keeps every span it is sent.
#[derive(Debug, Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| text(kv.value.as_ref()))
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                received.push(Received {
                    service: service.clone(),
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                        .collect(),
                });
            }
        }
        self.spans.lock().unwrap().extend(received);
        self.arrived.notify_waiters();
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

const WANTED: [&str; 5] = [
    "proxy_request",
    "upstream_attempt",
    "snapshot_apply",
    "usage_publish",
    "usage_batch",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_a_request_and_its_usage_reach_the_collector() {
    let collector = Collector::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let telemetry = Arc::new(
        gateway_telemetry::init(
            &TelemetryArgs {
                log_format: LogFormat::Text,
                otlp_endpoint: Some(format!("http://{addr}")),
                service_name: Some("gateway-under-test".into()),
            },
            "unused-default",
        )
        .unwrap(),
    );
    assert!(telemetry.exporting());

    let mut h = Harness::start(1).await;
    h.add_upstream("pool-a", 0, 1).await;
    h.set_price("gpt-5", 1_000_000, 100_000, 2_000_000).await;
    let (user, _) = h.add_user("traced", 10_000_000).await;
    let (_, secret, version) = h.add_key(user.id).await;
    h.wait_applied(version).await;
    h.mock.set_behaviour(gateway_tests::Behaviour {
        usage: MockUsage {
            input: 100,
            cached: 0,
            output: 10,
            reasoning: 0,
        },
        ..gateway_tests::Behaviour::default()
    });
    let auth = format!("Bearer {secret}");
    let response = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", &auth)],
            r#"{"model":"gpt-5","stream":true,"input":"hi"}"#,
        )
        .await;
    assert_eq!(response.status(), 200);
    let id = request_id(response.headers());
    body_bytes(response).await;
    h.wait_ingested(1).await;

    // Spans are batched; flush until every kind has arrived (a span that ends after one flush
    // goes out with the next), within a deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let arrived = collector.arrived.notified();
        let flusher = telemetry.clone();
        tokio::task::spawn_blocking(move || flusher.flush())
            .await
            .unwrap();
        let names: Vec<String> = collector
            .spans
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.name.clone())
            .collect();
        if WANTED.iter().all(|w| names.iter().any(|n| n == w)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans missing; got {names:?}"
        );
        let _ = tokio::time::timeout(Duration::from_millis(500), arrived).await;
    }

    let spans = collector.spans.lock().unwrap().clone();
    assert!(spans.iter().all(|s| s.service == "gateway-under-test"));
    let request = spans
        .iter()
        .find(|s| s.name == "proxy_request" && s.attributes.get("request_id") == Some(&id))
        .unwrap_or_else(|| panic!("no proxy_request span for {id} in {spans:#?}"));
    assert_eq!(request.attributes["http.route"], "responses");
    assert_eq!(request.attributes["http.response.status_code"], "200");
    let attempt = spans
        .iter()
        .find(|s| s.name == "upstream_attempt" && s.parent_span_id == request.span_id)
        .unwrap_or_else(|| panic!("no upstream_attempt under the request in {spans:#?}"));
    assert_eq!(attempt.trace_id, request.trace_id);
    assert_eq!(attempt.attributes["upstream"], "pool-a");
    assert_eq!(attempt.attributes["outcome"], "ok");
    assert!(
        spans.iter().any(|s| s.name == "snapshot_apply"
            && s.attributes.get("version") == Some(&version.to_string()))
    );
    h.shutdown().await;
}
