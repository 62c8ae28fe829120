//! The web console: server-rendered pages (askama templates compiled into the binary, plain
//! HTML forms, no script) on `CONSOLE_ADDR`. Every change goes through the admin API's own
//! handlers ([`Admin`]), so validation and its messages are the API's and the audit log names
//! the console session that made it.
//!
//! A request runs: security headers on every answer → the language (switch cookie, else
//! `Accept-Language`) → the session (cookie → digest → store; none sends to sign-in) → for a
//! form, the same-origin check and the session's CSRF token → the page's handler.

mod audit;
mod chart;
mod dashboard;
mod keys;
mod portal;
mod prices;
mod session;
mod text;
mod upstreams;
mod usage;
mod users;

use std::{net::SocketAddr, sync::Arc};

use askama::Template;
use axum::{
    Router,
    extract::Query,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use gateway_proto::auth::Secret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Status};
use tracing::{error, info};

pub use self::text::Lang;
use self::{session::Session, text::Text};
use crate::{
    grpc::{Admin, Usage},
    store::Store,
};

/// What every console handler shares.
#[derive(Debug)]
pub struct Console {
    admin: Admin,
    /// The usage service's handlers: the portal shows what a key's `GET /v1/usage` shows.
    usage: Usage,
    store: Store,
    admin_token: Secret,
    limiter: session::SignInLimiter,
}

impl Console {
    /// A console over `admin` and `usage` (the API's handlers) and `store` (its sessions),
    /// opened with `admin_token`.
    pub fn new(admin: Admin, usage: Usage, store: Store, admin_token: Secret) -> Arc<Self> {
        Arc::new(Self {
            admin,
            usage,
            store,
            admin_token,
            limiter: session::SignInLimiter::default(),
        })
    }
}

/// The console's routes.
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/admin", get(|| async { Redirect::to("/admin/") }))
        .route(
            "/admin/login",
            get(session::login_page).post(session::login),
        )
        .route("/admin/logout", post(session::logout))
        .route("/admin/lang", get(switch_language))
        .route("/admin/static/console.css", get(stylesheet))
        .merge(dashboard::routes())
        .merge(upstreams::routes())
        .merge(users::routes())
        .merge(keys::routes())
        .merge(prices::routes())
        .merge(audit::routes())
        .merge(usage::routes())
        .merge(portal::routes())
        .route("/portal/console.css", get(stylesheet))
        .route("/portal/lang", get(switch_portal_language))
        .route("/admin/static/console.js", get(script))
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(console)
}

/// Body of a console answer served by someone else's HTTP server.
pub type SiteBody = http_body_util::combinators::UnsyncBoxBody<
    bytes::Bytes,
    Box<dyn std::error::Error + Send + Sync>,
>;

/// Answers one request from `peer` that another server took (standalone's data plane serves
/// the console on its own port).
pub fn answer(
    console: &Arc<Console>,
    request: http::Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> crate::BoxFuture<http::Response<SiteBody>> {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let router = router(console.clone());
    Box::pin(async move {
        let (parts, body) = request.into_parts();
        let mut request = http::Request::from_parts(parts, axum::body::Body::new(body));
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let response = match router.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        response.map(|body| {
            body.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                .boxed_unsync()
        })
    })
}

/// Serves the console on `listener` until `cancel`.
pub async fn serve(
    listener: TcpListener,
    console: Arc<Console>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "console listening");
    }
    axum::serve(
        listener,
        router(console).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(cancel.cancelled_owned())
    .await
}

/// No script, no inline style, no framing, forms only to ourselves; and nothing cached.
async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../static/console.js"),
    )
}

async fn stylesheet() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../static/console.css"),
    )
}

#[derive(serde::Deserialize)]
struct LangQuery {
    to: String,
    back: Option<String>,
}

/// The language switch: remembers the choice and goes back to the page it was on.
async fn switch_language(Query(q): Query<LangQuery>) -> Response {
    // Only back to one of our own pages, never elsewhere.
    let back = q
        .back
        .filter(|b| b.starts_with("/admin") && !b.starts_with("//") && !b.contains('\\'))
        .unwrap_or_else(|| "/admin/".into());
    remember_language(&q.to, &back)
}

/// A redirect to `back` that sets the language cookie to `to` (English unless `zh`).
fn remember_language(to: &str, back: &str) -> Response {
    let code = if to == "zh" { "zh" } else { "en" };
    let mut response = Redirect::to(back).into_response();
    let cookie = format!("cgw_lang={code}; Path=/; Max-Age=31536000; SameSite=Strict");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// The portal's language switch: remembers the choice and goes back to the portal.
async fn switch_portal_language(Query(q): Query<LangQuery>) -> Response {
    remember_language(&q.to, "/portal/")
}

/// What every page's layout shows.
#[derive(Debug)]
pub(crate) struct Page {
    pub lang: Lang,
    pub t: &'static Text,
    /// The page's own path, for the language switch to return to.
    pub path: String,
    pub title: &'static str,
    /// The session's CSRF token; empty when signed out.
    pub csrf: String,
}

impl Page {
    pub(crate) fn new(
        headers: &HeaderMap,
        path: impl Into<String>,
        title: fn(&Text) -> &'static str,
        session: Option<&Session>,
    ) -> Self {
        let lang = session::language(headers);
        let t = lang.text();
        Self {
            lang,
            t,
            path: path.into(),
            title: title(t),
            csrf: session.map(|s| s.csrf.clone()).unwrap_or_default(),
        }
    }

    pub(crate) fn signed_in(&self) -> bool {
        !self.csrf.is_empty()
    }
}

/// Renders a template with `status`; a template that cannot render is our bug.
pub(crate) fn render(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            error!(error = %e, "a console page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page failed to render",
            )
                .into_response()
        }
    }
}

/// A page that only says what went wrong.
#[derive(Template)]
#[template(path = "console/message.html")]
pub(crate) struct MessagePage {
    pub page: Page,
    pub message: String,
}

/// The answer to an admin call the console made that failed: the API's own message, with the
/// status by whose fault it was.
pub(crate) fn failed(page: Page, status: &Status) -> Response {
    let (code, message) = match status.code() {
        Code::NotFound => (StatusCode::NOT_FOUND, status.message().to_owned()),
        Code::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            page.t.unavailable.to_owned(),
        ),
        Code::InvalidArgument | Code::AlreadyExists | Code::FailedPrecondition => (
            StatusCode::UNPROCESSABLE_ENTITY,
            status.message().to_owned(),
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            status.message().to_owned(),
        ),
    };
    render(code, &MessagePage { page, message })
}

/// Whether the admin API refused what was typed (the form is shown again with its message).
pub(crate) fn is_input(status: &Status) -> bool {
    matches!(status.code(), Code::InvalidArgument | Code::AlreadyExists)
}

/// `2026-12-02T07:10:33.123Z` as `2026-12-02 07:10:33 UTC`.
pub(crate) fn short_time(rfc3339: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        Err(_) => rfc3339.to_owned(),
    }
}

/// `value` percent-encoded for a query string.
pub(crate) fn query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An admin API request made by this console session: the audit log names it.
pub(crate) fn as_session<T>(session: &Session, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(session.actor());
    request
}
