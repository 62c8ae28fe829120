//! `/portal/`: a key holder signs in with their gateway key and sees that key's balance, caps
//! with what is spent and left, limits and latest requests — nothing of any other key or user.
//! Its session is a portal one (its own cookie, path and kind), which `/admin` never accepts.

use std::{net::SocketAddr, sync::Arc};

use askama::Template;
use axum::{
    Form, Router,
    extract::{ConnectInfo, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use chrono::Utc;
use gateway_proto::{
    digest::KeyDigest,
    ids::KeyId,
    money::Micros,
    names::name_of,
    v1::{self, usage_service_server::UsageService},
};
use sha2::{Digest, Sha256};

use super::{
    Console, MessagePage, Page, render,
    session::{CsrfForm, PORTAL_COOKIE, Session, random_token},
    short_time,
};
use crate::store::SessionRow;

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/portal", get(|| async { Redirect::to("/portal/") }))
        .route("/portal/", get(home))
        .route("/portal/login", get(login_page).post(login))
        .route("/portal/logout", post(logout))
}

#[derive(Template)]
#[template(path = "console/portal_login.html")]
struct LoginPage {
    page: Page,
    error: Option<&'static str>,
}

async fn login_page(headers: HeaderMap) -> Response {
    let page = Page::new(&headers, "/portal/login", |t| t.portal, None);
    render(StatusCode::OK, &LoginPage { page, error: None })
}

#[derive(serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    key: String,
}

async fn login(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let page = Page::new(&headers, "/portal/login", |t| t.portal, None);
    if !console.limiter.allow(peer.ip()) {
        let error = Some(page.t.too_many_attempts);
        return render(StatusCode::TOO_MANY_REQUESTS, &LoginPage { page, error });
    }
    let digest = KeyDigest::of_secret(form.key.trim());
    let key = match console.store.key_by_digest(digest.as_bytes()).await {
        Ok(key) => key,
        Err(e) => {
            tracing::error!(error = %e, "cannot look up a portal key");
            let message = page.t.unavailable.to_owned();
            return render(
                StatusCode::SERVICE_UNAVAILABLE,
                &MessagePage { page, message },
            );
        }
    };
    let now = Utc::now();
    let Some(key) = key.filter(|k| k.revoked_at.is_none() && k.expires_at.is_none_or(|e| e > now))
    else {
        let error = Some(page.t.wrong_key);
        return render(StatusCode::UNAUTHORIZED, &LoginPage { page, error });
    };
    let token = random_token();
    let row = SessionRow {
        digest: Sha256::digest(token.as_bytes()).to_vec(),
        kind: "portal".into(),
        key_id: Some(key.id),
        csrf: random_token(),
        source: peer.to_string(),
        created_at: now,
        expires_at: now + chrono::Duration::hours(12),
    };
    if let Err(e) = console.store.create_session(&row).await {
        tracing::error!(error = %e, "cannot keep a portal session");
        let message = page.t.unavailable.to_owned();
        return render(
            StatusCode::SERVICE_UNAVAILABLE,
            &MessagePage { page, message },
        );
    }
    let cookie =
        format!("{PORTAL_COOKIE}={token}; Path=/portal; HttpOnly; SameSite=Strict; Max-Age=43200");
    let mut response = Redirect::to("/portal/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

struct Event {
    at: String,
    model: String,
    input: i64,
    cached: i64,
    output: i64,
    cost: String,
    status: &'static str,
}

#[derive(Template)]
#[template(path = "console/portal.html")]
struct PortalPage {
    page: Page,
    prefix: String,
    name: String,
    balance: String,
    caps: Vec<String>,
    models: String,
    rpm: String,
    concurrency: String,
    expires: String,
    events: Vec<Event>,
}

async fn home(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let (session, key_id) = match Session::portal(&console, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let page = Page::new(&headers, "/portal/", |t| t.portal, Some(&session));
    let key = match console.store.get_key(KeyId(key_id)).await {
        Ok(key) => key,
        Err(e) => {
            tracing::error!(error = %e, "cannot read a portal key");
            let message = page.t.unavailable.to_owned();
            return render(
                StatusCode::SERVICE_UNAVAILABLE,
                &MessagePage { page, message },
            );
        }
    };
    if key.revoked_at.is_some() {
        return Redirect::to("/portal/login").into_response();
    }
    // What the key's own `GET /v1/usage` answers, from the same handler.
    let usage = console
        .usage
        .key_usage(tonic::Request::new(v1::KeyUsageRequest {
            key_id,
            user_id: key.user_id.get(),
            limit: Some(20),
        }))
        .await;
    let usage = match usage {
        Ok(r) => r.into_inner(),
        Err(status) => return super::failed(page, &status),
    };
    let t = page.t;
    let view = PortalPage {
        prefix: key.prefix,
        name: key.name,
        balance: Micros(usage.balance_micros).to_string(),
        caps: usage.spend_limits.iter().map(ToString::to_string).collect(),
        models: if key.models.is_empty() {
            t.all_models.to_owned()
        } else {
            key.models.join(", ")
        },
        rpm: key.rpm.map_or_else(|| "—".to_owned(), |v| v.to_string()),
        concurrency: key
            .concurrency
            .map_or_else(|| "—".to_owned(), |v| v.to_string()),
        expires: key
            .expires_at
            .map_or_else(|| "—".to_owned(), |e| short_time(&e.to_rfc3339())),
        events: usage
            .events
            .into_iter()
            .map(|e| Event {
                at: short_time(&e.created_at),
                model: e.model,
                input: e.input_tokens,
                cached: e.cached_tokens,
                output: e.output_tokens,
                cost: Micros(e.cost_micros).to_string(),
                status: name_of::<v1::UsageStatus>(e.status),
            })
            .collect(),
        page,
    };
    render(StatusCode::OK, &view)
}

async fn logout(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let (session, _) = match Session::portal(&console, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(r) = session.check_form(&headers, &form.csrf) {
        return *r;
    }
    if let Err(e) = console.store.end_session(&session.digest).await {
        tracing::error!(error = %e, "cannot end a portal session");
    }
    let mut response = Redirect::to("/portal/login").into_response();
    let cleared = format!("{PORTAL_COOKIE}=; Path=/portal; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&cleared) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}
