//! Signing in and out, and what every signed-in request checks. The admin token is exchanged
//! for a session: a random token in an HttpOnly, SameSite=Strict cookie (Secure behind TLS),
//! kept in the store only as its digest so every replica knows it and signing out ends it
//! everywhere. Every form carries the session's CSRF token, and a form from another origin is
//! refused before that. Sign-in attempts are limited per address.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use askama::Template;
use axum::{
    Form,
    extract::{ConnectInfo, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use chrono::Utc;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{Console, Lang, MessagePage, Page, render};
use crate::store::{Actor, SessionRow};

const COOKIE: &str = "cgw_session";
/// The key holder's portal session.
pub(super) const PORTAL_COOKIE: &str = "cgw_portal";
/// How long a session lasts.
const SESSION_HOURS: i64 = 12;
/// Sign-in attempts an address may make per minute.
const ATTEMPTS_PER_MINUTE: u32 = 10;

/// A signed-in console session.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(super) digest: Vec<u8>,
    pub(crate) csrf: String,
    source: String,
}

impl Session {
    /// The admin session the request's cookie names, or the answer that sends it to sign in.
    pub(crate) async fn admin(console: &Console, headers: &HeaderMap) -> Result<Self, Response> {
        Self::find(console, headers, COOKIE, "admin", "/admin/login")
            .await
            .map(|(session, _)| session)
    }

    /// The key holder's session the request's portal cookie names, and its key; a portal
    /// session is never an admin one (another cookie, another kind).
    pub(crate) async fn portal(
        console: &Console,
        headers: &HeaderMap,
    ) -> Result<(Self, i64), Response> {
        let (session, key) =
            Self::find(console, headers, PORTAL_COOKIE, "portal", "/portal/login").await?;
        match key {
            Some(key) => Ok((session, key)),
            None => Err(Redirect::to("/portal/login").into_response()),
        }
    }

    async fn find(
        console: &Console,
        headers: &HeaderMap,
        name: &str,
        kind: &str,
        login: &str,
    ) -> Result<(Self, Option<i64>), Response> {
        let Some(token) = cookie(headers, name) else {
            return Err(Redirect::to(login).into_response());
        };
        let digest = Sha256::digest(token.as_bytes()).to_vec();
        match console.store.session(&digest, Utc::now()).await {
            Ok(Some(row)) if row.kind == kind => Ok((
                Self {
                    digest,
                    csrf: row.csrf,
                    source: row.source,
                },
                row.key_id.map(|k| k.get()),
            )),
            Ok(_) => Err(Redirect::to(login).into_response()),
            Err(e) => {
                tracing::error!(error = %e, "cannot read console sessions");
                let page = Page::new(headers, "/admin/", |t| t.product, None);
                let message = page.t.unavailable.to_owned();
                Err(render(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &MessagePage { page, message },
                ))
            }
        }
    }

    /// Who the audit log names for this session's changes.
    pub(crate) fn actor(&self) -> Actor {
        Actor {
            principal: "console session".into(),
            source: self.source.clone(),
        }
    }

    /// Refuses a form that did not come from this session's own pages: a cross-site request,
    /// or a missing or wrong CSRF token.
    pub(crate) fn check_form(&self, headers: &HeaderMap, csrf: &str) -> Result<(), Box<Response>> {
        let cross_site = headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "cross-site" || v == "same-site");
        // The origin must be this host as the browser addressed it: `Host`, or the
        // `X-Forwarded-Host` a proxy in front set (a cross-site form cannot set headers).
        let header_text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let foreign_origin = match header_text(header::ORIGIN.as_str()) {
            Some(origin) => {
                let origin_host = origin.split_once("://").map(|(_, rest)| rest);
                ![header::HOST.as_str(), "x-forwarded-host"]
                    .into_iter()
                    .filter_map(header_text)
                    .any(|host| origin_host == Some(host))
            }
            None => false,
        };
        let token_ok = !csrf.is_empty()
            && csrf.len() == self.csrf.len()
            && csrf
                .bytes()
                .zip(self.csrf.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if cross_site || foreign_origin || !token_ok {
            let page = Page::new(headers, "/admin/", |t| t.product, Some(self));
            let message = page.t.forbidden.to_owned();
            return Err(Box::new(render(
                StatusCode::FORBIDDEN,
                &MessagePage { page, message },
            )));
        }
        Ok(())
    }
}

/// A handler that takes a [`Session`] runs only for a signed-in admin; anyone else is sent to
/// sign in.
impl axum::extract::FromRequestParts<Arc<Console>> for Session {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Response> {
        Self::admin(console, &parts.headers).await
    }
}

/// The language of a request: the switch's cookie, else `Accept-Language`.
pub(super) fn language(headers: &HeaderMap) -> Lang {
    Lang::choose(
        cookie(headers, "cgw_lang").as_deref(),
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    )
}

/// The value of cookie `name`.
pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

pub(super) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Sign-in attempts per address in the current minute.
#[derive(Debug, Default)]
pub(super) struct SignInLimiter {
    attempts: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl SignInLimiter {
    /// Counts an attempt from `ip`; whether it may go ahead.
    pub(super) fn allow(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let Ok(mut attempts) = self.attempts.lock() else {
            return false;
        };
        attempts.retain(|_, (since, _)| now.duration_since(*since) < Duration::from_secs(60));
        let (_, count) = attempts.entry(ip).or_insert((now, 0));
        *count += 1;
        *count <= ATTEMPTS_PER_MINUTE
    }
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    page: Page,
    error: Option<&'static str>,
}

pub(super) async fn login_page(headers: HeaderMap) -> Response {
    let page = Page::new(&headers, "/admin/login", |t| t.sign_in, None);
    render(StatusCode::OK, &LoginPage { page, error: None })
}

#[derive(serde::Deserialize)]
pub(super) struct LoginForm {
    token: String,
}

pub(super) async fn login(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let page = Page::new(&headers, "/admin/login", |t| t.sign_in, None);
    if !console.limiter.allow(peer.ip()) {
        let error = Some(page.t.too_many_attempts);
        return render(StatusCode::TOO_MANY_REQUESTS, &LoginPage { page, error });
    }
    if !console.admin_token.matches(form.token.trim()) {
        tracing::warn!(target: "Console", source = %peer, "console sign-in with a wrong token");
        let error = Some(page.t.wrong_token);
        return render(StatusCode::UNAUTHORIZED, &LoginPage { page, error });
    }
    let token = random_token();
    let now = Utc::now();
    let row = SessionRow {
        digest: Sha256::digest(token.as_bytes()).to_vec(),
        kind: "admin".into(),
        key_id: None,
        csrf: random_token(),
        source: peer.to_string(),
        created_at: now,
        expires_at: now + chrono::Duration::hours(SESSION_HOURS),
    };
    if let Err(e) = console.store.create_session(&row).await {
        tracing::error!(error = %e, "cannot keep a console session");
        let message = page.t.unavailable.to_owned();
        return render(
            StatusCode::SERVICE_UNAVAILABLE,
            &MessagePage { page, message },
        );
    }
    tracing::info!(target: "Console", source = %peer, "console session started");
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{COOKIE}={token}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_HOURS * 3600,
        if secure { "; Secure" } else { "" }
    );
    let mut response = Redirect::to("/admin/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// A form that carries only the session's CSRF token (sign out, delete, revoke, test).
#[derive(serde::Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    pub(super) csrf: String,
}

/// Ends the session in the store (so its cookie opens nothing anywhere) and clears the cookie.
pub(super) async fn logout(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    session: Session,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = session.check_form(&headers, &form.csrf) {
        return *r;
    }
    if let Err(e) = console.store.end_session(&session.digest).await {
        tracing::error!(error = %e, "cannot end a console session");
        let page = Page::new(&headers, "/admin/", |t| t.product, Some(&session));
        let message = page.t.unavailable.to_owned();
        return render(
            StatusCode::SERVICE_UNAVAILABLE,
            &MessagePage { page, message },
        );
    }
    let mut response = Redirect::to("/admin/login").into_response();
    let cleared = format!("{COOKIE}=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&cleared) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response.into_response()
}
