//! The floor under the data plane, for `proxy-bench`: the same HTTP stack — hyper's HTTP/1
//! server configured as the data plane configures it, a current-thread tokio runtime, and the
//! data plane's own upstream client and pool — forwarding every request to one upstream with
//! none of the product's work: no key, no admission, no field scan, no routing, no metering.
//! What the gateway costs above this binary is the product; what this binary costs above
//! nginx is the stack.
//!
//! `proxy-floor LISTEN_ADDR UPSTREAM_BASE_URL` (the bench starts it pinned to its core).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use data_plane::upstream::{Target, UpstreamClient};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::net::TcpListener;

type Body = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

struct Floor {
    client: UpstreamClient,
    target: Target,
    authorization: HeaderValue,
}

impl Floor {
    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
            return status(StatusCode::BAD_REQUEST);
        };
        // The gateway's upstream path for every proxied route.
        let Ok(uri) = self.target.path_and_query("/v1/responses", None) else {
            return status(StatusCode::INTERNAL_SERVER_ERROR);
        };
        let mut headers = HeaderMap::with_capacity(parts.headers.len() + 1);
        for (name, value) in &parts.headers {
            if name != header::HOST
                && name != header::AUTHORIZATION
                && name != header::CONNECTION
                && name != header::CONTENT_LENGTH
            {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.insert(header::AUTHORIZATION, self.authorization.clone());
        let mut upstream = Request::new(Full::new(body));
        *upstream.method_mut() = parts.method;
        *upstream.uri_mut() = uri;
        *upstream.headers_mut() = headers;
        match self.client.send(&self.target, upstream).await {
            Ok(response) => response.map(|b| b.map_err(Into::into).boxed_unsync()),
            Err(_) => status(StatusCode::BAD_GATEWAY),
        }
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::new())
            .map_err(|never: Infallible| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = code;
    response
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(base_url)) = (args.get(1), args.get(2)) else {
        panic!("usage: proxy-floor LISTEN_ADDR UPSTREAM_BASE_URL");
    };
    let floor = Arc::new(Floor {
        client: UpstreamClient::new().expect("TLS roots"),
        target: Target::parse(base_url).expect("UPSTREAM_BASE_URL"),
        authorization: HeaderValue::from_static("Bearer sk-floor"),
    });
    let listener = TcpListener::bind(listen.as_str()).await.expect("bind");
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let floor = floor.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let floor = floor.clone();
                async move { Ok::<_, Infallible>(floor.handle(request).await) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
