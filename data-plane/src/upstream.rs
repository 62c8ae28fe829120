//! The HTTP/1.1 client to upstreams: keep-alive connections with no task of their own.
//!
//! A connection is driven by whoever holds it — the request's own task, through
//! [`UpstreamBody`] — instead of by a task per connection that hands the body over a channel
//! one chunk per wake-up. Bytes the upstream sent together are read, decoded and handed to the
//! response body in one poll, so the metering tap merges them into one write to the client
//! (a burst of SSE events leaves in one `writev`, not one per event), and a request costs no
//! task switches between the upstream socket and the client's. Nor does it wake its own task:
//! the wakes hyper's channels send between the connection and the response, both polled in
//! that one poll, are held (see [`Quiet`]).
//!
//! Idle connections wait in the pool unpolled, newest first. One the upstream closed in the
//! meantime is noticed when taken out (a poll sees the end of the stream) and dropped; a
//! request a parked connection turned away unsent goes on a new connection (it never reached
//! the upstream). A connection goes back to the pool only when its response body was read to
//! the end; anything else closes it.

use std::{
    collections::{HashMap, VecDeque},
    future::{Future, poll_fn},
    pin::{Pin, pin},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::{
    HeaderValue, Request, Response, Uri, header,
    uri::{Authority, PathAndQuery, Scheme},
};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::{
    body::Incoming,
    client::conn::{TrySendError, http1},
};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::{client::legacy::connect::HttpConnector, rt::TokioIo};
use tokio::net::TcpStream;
use tower::ServiceExt;

/// How long a connection may wait in the pool.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Most idle connections kept per upstream origin.
const MAX_IDLE_PER_ORIGIN: usize = 1024;
/// How often expired idle connections of every origin are closed.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

type Io = MaybeHttpsStream<TokioIo<TcpStream>>;
type Driver = http1::Connection<Io, Full<Bytes>>;

/// Where a connection goes: scheme and authority of the upstream's base URL.
type Origin = (Scheme, Authority);

/// Why a request got no response head.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the upstream URL has no scheme or host")]
    NoOrigin,
    #[error("connecting failed: {0}")]
    Connect(Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// One connection: the handle requests are sent on and the state machine that does the I/O.
struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: Pin<Box<Driver>>,
    /// What the connection and its response are polled with (see [`Quiet`]).
    quiet: Arc<Quiet>,
    quiet_waker: Waker,
}

impl Conn {
    fn new(sender: http1::SendRequest<Full<Bytes>>, driver: Driver) -> Self {
        let quiet = Arc::new(Quiet::default());
        Self {
            sender,
            driver: Box::pin(driver),
            quiet_waker: Waker::from(quiet.clone()),
            quiet,
        }
    }

    /// Lets the connection read and write what it can; true once it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        self.driver.as_mut().poll(cx).is_ready()
    }

    /// Whether it has ended, found without waiting (an end of stream already received is seen).
    fn ended(&mut self) -> bool {
        self.drive(&mut Context::from_waker(Waker::noop()))
    }

    /// Runs `poll`, which drives the connection and takes what it produced, for the task
    /// behind `cx`, without that task waking itself on the way (see [`Quiet`]).
    fn poll_quietly<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Self, &mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        self.quiet.task.register(cx.waker());
        self.quiet.polling.store(true, Ordering::SeqCst);
        let waker = self.quiet_waker.clone();
        let result = poll(self, &mut Context::from_waker(&waker));
        self.quiet.polling.store(false, Ordering::SeqCst);
        if self.quiet.held.swap(false, Ordering::SeqCst) && result.is_pending() {
            // A wake came during the poll and nothing was produced: it may have been news
            // from elsewhere (another thread's I/O driver), so it is passed on after all.
            cx.waker().wake_by_ref();
        }
        result
    }
}

/// The waker a connection and its response are polled with. hyper's client hands the response
/// head and each body frame from the connection to the response over channels, and each side
/// of a channel wakes the other. Here both sides are polled in one poll of one task — the
/// connection decodes, the response takes at once — so each of those wakes would wake the task
/// that is running, and every frame would poll the whole request once more for nothing. So a
/// wake is held while such a poll runs; it is passed on only if the poll ends with nothing
/// produced. A poll that produced a frame is polled again by whoever reads it (hyper's server
/// and the drain read a body until it is pending), which drives the connection again.
#[derive(Debug, Default)]
struct Quiet {
    /// The task reading the connection now.
    task: AtomicWaker,
    /// A poll is running.
    polling: AtomicBool,
    /// A wake came while it ran.
    held: AtomicBool,
}

impl Wake for Quiet {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.polling.load(Ordering::SeqCst) {
            self.held.store(true, Ordering::SeqCst);
        } else {
            self.task.wake();
        }
    }
}

struct Parked {
    conn: Conn,
    since: Instant,
}

struct Idle {
    by_origin: HashMap<Origin, VecDeque<Parked>>,
    swept: Instant,
}

struct Shared {
    connector: HttpsConnector<HttpConnector>,
    idle: Mutex<Idle>,
}

impl Shared {
    fn idle(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The newest parked connection to `origin` that is still open.
    fn checkout(&self, origin: &Origin) -> Option<Conn> {
        let mut idle = self.idle();
        let parked = idle.by_origin.get_mut(origin)?;
        while let Some(mut p) = parked.pop_back() {
            if p.since.elapsed() < IDLE_TIMEOUT && !p.conn.ended() && p.conn.sender.is_ready() {
                return Some(p.conn);
            }
        }
        None
    }

    /// Parks a connection whose response was read to the end.
    fn release(&self, origin: Origin, mut conn: Conn) {
        // The poll that lets the connection see its response is over and take the next.
        if conn.ended() || conn.sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle();
        if now.duration_since(idle.swept) >= SWEEP_EVERY {
            idle.swept = now;
            idle.by_origin.retain(|_, parked| {
                parked.retain(|p| now.duration_since(p.since) < IDLE_TIMEOUT);
                !parked.is_empty()
            });
        }
        let parked = idle.by_origin.entry(origin).or_default();
        while parked
            .front()
            .is_some_and(|p| now.duration_since(p.since) >= IDLE_TIMEOUT)
        {
            parked.pop_front();
        }
        if parked.len() < MAX_IDLE_PER_ORIGIN {
            parked.push_back(Parked { conn, since: now });
        }
    }
}

/// The pooled client for http:// and https:// upstreams; cheap to clone.
#[derive(Clone)]
pub struct UpstreamClient {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient").finish_non_exhaustive()
    }
}

impl UpstreamClient {
    /// A client with TLS through rustls (ring provider, webpki roots) and no-delay sockets.
    pub fn new() -> Result<Self, rustls::Error> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self {
            shared: Arc::new(Shared {
                connector,
                idle: Mutex::new(Idle {
                    by_origin: HashMap::new(),
                    swept: Instant::now(),
                }),
            }),
        })
    }

    /// Sends `request` (its URI in origin form, from [`Target::path_and_query`]) to `target`
    /// and waits for the response head. The response's body carries the connection: polling
    /// the body drives it.
    pub async fn send(
        &self,
        target: &Target,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        request
            .headers_mut()
            .insert(header::HOST, target.host.clone());
        let origin = target.origin.clone();
        if let Some(mut conn) = self.shared.checkout(&origin) {
            match exchange(&mut conn, request).await {
                Ok(response) => return Ok(self.with_body(response, conn, origin)),
                Err(mut refused) => match refused.take_message() {
                    // Closed before it took the request: the upstream never saw it.
                    Some(unsent) => request = unsent,
                    None => return Err(refused.into_error().into()),
                },
            }
        }
        // Boxed: connecting (resolving, a TLS handshake) has a large state, which inline would
        // be copied with every request's future though most requests reuse a connection.
        let mut conn = Box::pin(self.connect(&origin)).await?;
        match exchange(&mut conn, request).await {
            Ok(response) => Ok(self.with_body(response, conn, origin)),
            Err(err) => Err(err.into_error().into()),
        }
    }

    async fn connect(&self, origin: &Origin) -> Result<Conn, SendError> {
        let uri = Uri::builder()
            .scheme(origin.0.clone())
            .authority(origin.1.clone())
            .path_and_query("/")
            .build()
            .map_err(|_| SendError::NoOrigin)?;
        let io = self
            .shared
            .connector
            .clone()
            .oneshot(uri)
            .await
            .map_err(SendError::Connect)?;
        let (sender, driver) = http1::handshake(io).await?;
        Ok(Conn::new(sender, driver))
    }

    fn with_body(
        &self,
        response: Response<Incoming>,
        conn: Conn,
        origin: Origin,
    ) -> Response<UpstreamBody> {
        response.map(|body| UpstreamBody {
            body,
            ended: false,
            link: Some(Box::new(Link {
                conn,
                shared: self.shared.clone(),
                origin,
            })),
        })
    }
}

/// Where an upstream's requests go, worked out once from its base URL (when a snapshot is
/// applied) instead of a URL formatted and parsed again on every attempt: the origin its
/// connections are pooled by, the `Host` header, and the base path requests go under.
#[derive(Debug, Clone)]
pub struct Target {
    origin: Origin,
    host: HeaderValue,
    /// Without a trailing slash; empty for none.
    base_path: Box<str>,
}

impl Target {
    /// The target of `base_url` (`scheme://host[:port][/path]`; a query is not kept).
    pub fn parse(base_url: &str) -> Result<Self, SendError> {
        let parts = base_url
            .parse::<Uri>()
            .map_err(|_| SendError::NoOrigin)?
            .into_parts();
        let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
            return Err(SendError::NoOrigin);
        };
        let default_port = if scheme == Scheme::HTTPS { 443 } else { 80 };
        let host = match authority.port_u16() {
            Some(port) if port == default_port => HeaderValue::from_str(authority.host()),
            _ => HeaderValue::from_str(authority.as_str()),
        }
        .map_err(|_| SendError::NoOrigin)?;
        let base_path = parts
            .path_and_query
            .as_ref()
            .map_or("", PathAndQuery::path)
            .trim_end_matches('/')
            .into();
        Ok(Self {
            origin: (scheme, authority),
            host,
            base_path,
        })
    }

    /// The origin-form request target of `path` (and `query`) under the base path.
    pub fn path_and_query(&self, path: &str, query: Option<&str>) -> Result<Uri, SendError> {
        let mut target = String::with_capacity(
            self.base_path.len() + path.len() + query.map_or(0, |q| q.len() + 1),
        );
        target.push_str(&self.base_path);
        target.push_str(path);
        if let Some(query) = query {
            target.push('?');
            target.push_str(query);
        }
        PathAndQuery::from_maybe_shared(Bytes::from(target))
            .map(Uri::from)
            .map_err(|_| SendError::NoOrigin)
    }
}

/// Sends `request` on `conn`, driving the connection until the response head arrives.
async fn exchange(
    conn: &mut Conn,
    request: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, TrySendError<Request<Full<Bytes>>>> {
    let mut response = pin!(conn.sender.try_send_request(request));
    let mut driving = true;
    poll_fn(|cx| {
        conn.poll_quietly(cx, |conn, cx| {
            // The connection writes the request and reads the head; once it has ended the
            // response future reports why.
            if driving && conn.drive(cx) {
                driving = false;
            }
            response.as_mut().poll(cx)
        })
    })
    .await
}

/// An upstream response body that drives its connection as it is read, and parks the
/// connection for the next request once read to the end.
pub struct UpstreamBody {
    body: Incoming,
    /// The end has been read (hyper's chunked bodies never say so themselves).
    ended: bool,
    /// `None` once the connection has ended.
    link: Option<Box<Link>>,
}

/// The connection a body is read from, and the pool it returns to.
struct Link {
    conn: Conn,
    shared: Arc<Shared>,
    origin: Origin,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("body", &self.body)
            .field("open", &self.link.is_some())
            .finish_non_exhaustive()
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        // First the connection decodes what has arrived into the body, then the body hands
        // it over: both in this poll, with no other task in between.
        let body = &mut this.body;
        let frame = match this.link.as_mut() {
            Some(link) => {
                let mut ended = false;
                let frame = link.conn.poll_quietly(cx, |conn, cx| {
                    ended = conn.drive(cx);
                    Pin::new(&mut *body).poll_frame(cx)
                });
                if ended {
                    this.link = None;
                }
                frame
            }
            None => Pin::new(body).poll_frame(cx),
        };
        if let Poll::Ready(None) = frame {
            this.ended = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if self.is_end_stream()
            && let Some(link) = self.link.take()
        {
            let Link {
                conn,
                shared,
                origin,
            } = *link;
            shared.release(origin, conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
        sync::mpsc,
    };

    use super::*;

    /// Wakes the test's task, counting the wakes that come while it polls (the task waking
    /// itself). One waker for every poll, so a wake through a registration an earlier poll
    /// left is counted too.
    #[derive(Default)]
    struct Counting {
        task: Mutex<Option<Waker>>,
        polling: AtomicBool,
        from_within: AtomicUsize,
    }

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            if self.polling.load(Ordering::SeqCst) {
                self.from_within.fetch_add(1, Ordering::SeqCst);
            }
            if let Some(task) = &*self.task.lock().unwrap() {
                task.wake_by_ref();
            }
        }
    }

    /// Polls `f` to completion with `counting`'s waker.
    async fn poll_counting<T>(
        counting: &Arc<Counting>,
        mut f: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> T {
        let waker = Waker::from(counting.clone());
        poll_fn(|cx| {
            *counting.task.lock().unwrap() = Some(cx.waker().clone());
            counting.polling.store(true, Ordering::SeqCst);
            let result = f(&mut Context::from_waker(&waker));
            counting.polling.store(false, Ordering::SeqCst);
            result
        })
        .await
    }

    #[tokio::test]
    async fn reading_a_response_never_wakes_the_reading_task_from_within() {
        // An upstream that answers with a chunked body, one chunk each time it is told to.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (next, mut told) = mpsc::unbounded_channel::<&'static str>();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await.unwrap();
            socket
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                .await
                .unwrap();
            while let Some(chunk) = told.recv().await {
                let framed = format!("{:x}\r\n{chunk}\r\n", chunk.len());
                socket.write_all(framed.as_bytes()).await.unwrap();
            }
            socket.write_all(b"0\r\n\r\n").await.unwrap();
            // Hold the connection open: it goes back to the pool.
            let _ = socket.read(&mut request).await;
        });

        let client = UpstreamClient::new().unwrap();
        let target = Target::parse(&format!("http://{addr}")).unwrap();
        let mut request = Request::new(Full::new(Bytes::from_static(b"{}")));
        *request.uri_mut() = target.path_and_query("/v1/responses", None).unwrap();
        *request.method_mut() = http::Method::POST;
        let counting = Arc::new(Counting::default());
        let mut response = pin!(client.send(&target, request));
        let response = poll_counting(&counting, |cx| response.as_mut().poll(cx)).await;
        let mut body = response.unwrap().into_body();
        for chunk in ["a", "bb", "ccc"] {
            next.send(chunk).unwrap();
            let frame = poll_counting(&counting, |cx| Pin::new(&mut body).poll_frame(cx)).await;
            assert_eq!(frame.unwrap().unwrap().into_data().unwrap(), chunk);
        }
        drop(next);
        let end = poll_counting(&counting, |cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(end.is_none());
        assert_eq!(
            counting.from_within.load(Ordering::SeqCst),
            0,
            "reading the response woke its own task"
        );
        assert!(body.is_end_stream());
    }

    #[test]
    fn requests_leave_in_origin_form_with_the_host_they_name() {
        for (base_url, query, host, path) in [
            (
                "http://pool.example/openai/",
                Some("a=1"),
                "pool.example",
                "/openai/v1/responses?a=1",
            ),
            (
                "http://127.0.0.1:8080",
                None,
                "127.0.0.1:8080",
                "/v1/responses",
            ),
            (
                "https://api.example:443",
                None,
                "api.example",
                "/v1/responses",
            ),
            (
                "http://api.example:443/",
                None,
                "api.example:443",
                "/v1/responses",
            ),
        ] {
            let target = Target::parse(base_url).unwrap();
            let uri = target.path_and_query("/v1/responses", query).unwrap();
            assert_eq!(uri, path, "{base_url}");
            assert_eq!(target.host, host, "{base_url}");
            let (scheme, authority) = &target.origin;
            assert_eq!(
                format!("{scheme}://{authority}"),
                base_url.trim_end_matches('/').trim_end_matches("/openai"),
                "{base_url}"
            );
        }
        for bad in ["/v1", "pool.example/openai", "http://"] {
            assert!(
                matches!(Target::parse(bad), Err(SendError::NoOrigin)),
                "{bad}"
            );
        }
    }
}
