//! `/admin/upstreams`: the list (tier, weight, enabled, health, last probe; the key only as
//! its hint), add and edit with every field, enable/disable, delete after a confirmation, and
//! "test health" with status, latency and error. Each change is the admin API's own call.

use std::sync::Arc;

use askama::Template;
use axum::{
    Form, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use gateway_proto::{
    names::name_of,
    v1::{self, admin_service_server::AdminService},
};

use super::{
    Console, Page, as_session, failed, is_input, render,
    session::{CsrfForm, Session},
    short_time,
    text::Text,
};

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/admin/upstreams", get(list).post(create))
        .route("/admin/upstreams/new", get(new_form))
        .route("/admin/upstreams/{id}", post(update))
        .route("/admin/upstreams/{id}/edit", get(edit_form))
        .route("/admin/upstreams/{id}/enabled", post(set_enabled))
        .route(
            "/admin/upstreams/{id}/delete",
            get(confirm_delete).post(delete),
        )
        .route("/admin/upstreams/{id}/test", post(test))
}

/// An upstream as its row shows it.
struct Row {
    up: v1::Upstream,
    /// In the page's language…
    health: &'static str,
    /// …and as the stylesheet knows it.
    health_class: &'static str,
    checked: String,
    models: String,
}

/// An upstream's health in `t`'s language, and as the stylesheet knows it.
pub(super) fn health_of(health: i32, t: &Text) -> (&'static str, &'static str) {
    match name_of::<v1::UpstreamHealth>(health) {
        "healthy" => (t.healthy, "healthy"),
        "unhealthy" => (t.unhealthy, "unhealthy"),
        _ => (t.unknown, "unknown"),
    }
}

#[derive(Template)]
#[template(path = "console/upstreams.html")]
struct ListPage {
    page: Page,
    rows: Vec<Row>,
    notice: Option<&'static str>,
}

#[derive(serde::Deserialize)]
struct Notice {
    done: Option<String>,
}

async fn list(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    session: Session,
    Query(notice): Query<Notice>,
) -> Response {
    let page = Page::new(
        &headers,
        "/admin/upstreams",
        |t| t.upstreams,
        Some(&session),
    );
    let listed = console
        .admin
        .list_upstreams(as_session(&session, v1::ListUpstreamsRequest {}))
        .await;
    let upstreams = match listed {
        Ok(r) => r.into_inner().upstreams,
        Err(status) => return failed(page, &status),
    };
    let t = page.t;
    let rows = upstreams
        .into_iter()
        .map(|up| Row {
            health: health_of(up.health, t).0,
            health_class: health_of(up.health, t).1,
            checked: up
                .health_checked_at
                .clone()
                .map_or_else(|| t.never.to_owned(), |at| short_time(&at)),
            models: if up.models.is_empty() {
                t.all_models.to_owned()
            } else {
                up.models.join(", ")
            },
            up,
        })
        .collect();
    let notice = match notice.done.as_deref() {
        Some("saved") => Some(t.saved),
        Some("deleted") => Some(t.deleted),
        _ => None,
    };
    render(StatusCode::OK, &ListPage { page, rows, notice })
}

/// The upstream form's fields, as typed (DESIGN §10: the CLI's flag names).
#[derive(Debug, Default, serde::Deserialize)]
struct UpstreamForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    base_url: String,
    /// Write-only: never sent back, not even into a form shown again after an error.
    #[serde(default)]
    api_key: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    weight: String,
    #[serde(default)]
    max_retries: String,
    /// Seconds.
    #[serde(default)]
    timeout: String,
    #[serde(default)]
    probe_path: String,
    #[serde(default)]
    models: String,
    /// A checkbox: present when ticked.
    enabled: Option<String>,
}

#[derive(Template)]
#[template(path = "console/upstream_form.html")]
struct FormPage {
    page: Page,
    /// The upstream edited; none when adding.
    id: Option<i64>,
    /// Its key's hint, when editing.
    key_hint: String,
    form: UpstreamForm,
    error: Option<String>,
}

impl FormPage {
    fn enabled(&self) -> bool {
        self.form.enabled.is_some()
    }
}

fn defaults() -> UpstreamForm {
    UpstreamForm {
        priority: "0".into(),
        weight: "1".into(),
        max_retries: "3".into(),
        timeout: "120".into(),
        probe_path: "/v1/models".into(),
        enabled: Some("on".into()),
        ..UpstreamForm::default()
    }
}

async fn new_form(headers: HeaderMap, session: Session) -> Response {
    let page = Page::new(
        &headers,
        "/admin/upstreams/new",
        |t| t.add_upstream,
        Some(&session),
    );
    let form = FormPage {
        page,
        id: None,
        key_hint: String::new(),
        form: defaults(),
        error: None,
    };
    render(StatusCode::OK, &form)
}

async fn edit_form(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    session: Session,
    Path(id): Path<i64>,
) -> Response {
    let path = format!("/admin/upstreams/{id}/edit");
    let page = Page::new(&headers, path, |t| t.edit_upstream, Some(&session));
    let got = console
        .admin
        .get_upstream(as_session(&session, v1::GetUpstreamRequest { id }))
        .await;
    let up = match got {
        Ok(r) => r.into_inner(),
        Err(status) => return failed(page, &status),
    };
    let form = UpstreamForm {
        name: up.name,
        base_url: up.base_url,
        priority: up.priority.to_string(),
        weight: up.weight.to_string(),
        max_retries: up.max_retries.to_string(),
        timeout: format_seconds(up.timeout_ms),
        probe_path: up.probe_path,
        models: up.models.join(", "),
        enabled: up.enabled.then(|| "on".into()),
        ..UpstreamForm::default()
    };
    let form = FormPage {
        page,
        id: Some(id),
        key_hint: up.api_key_hint,
        form,
        error: None,
    };
    render(StatusCode::OK, &form)
}

fn format_seconds(ms: u32) -> String {
    if ms.is_multiple_of(1000) {
        (ms / 1000).to_string()
    } else {
        format!("{:.3}", f64::from(ms) / 1000.0)
    }
}

/// A number field: empty is unset; anything else must be a number of this type.
fn number<T: std::str::FromStr>(field: &str, value: &str) -> Result<Option<T>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| format!("{field} must be a whole number, got {value:?}"))
}

/// Seconds as typed (`120`, `2.5`) in milliseconds.
fn timeout_ms(value: &str) -> Result<Option<u32>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 && s * 1000.0 <= f64::from(u32::MAX) => {
            Ok(Some((s * 1000.0).round() as u32))
        }
        _ => Err(format!(
            "timeout must be a number of seconds, got {value:?}"
        )),
    }
}

fn models(value: &str) -> Vec<String> {
    value
        .split([',', '\n'])
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect()
}

impl UpstreamForm {
    fn create_request(&self) -> Result<v1::CreateUpstreamRequest, String> {
        Ok(v1::CreateUpstreamRequest {
            name: self.name.clone(),
            base_url: self.base_url.clone(),
            api_key: self.api_key.clone(),
            priority: number("priority", &self.priority)?.unwrap_or(0),
            weight: number("weight", &self.weight)?,
            max_retries: number("max_retries", &self.max_retries)?,
            timeout_ms: timeout_ms(&self.timeout)?,
            disabled: self.enabled.is_none(),
            probe_path: Some(self.probe_path.trim().to_owned()),
            models: models(&self.models),
        })
    }

    fn update_request(&self, id: i64) -> Result<v1::UpdateUpstreamRequest, String> {
        let key = self.api_key.trim();
        Ok(v1::UpdateUpstreamRequest {
            id,
            name: Some(self.name.clone()),
            base_url: Some(self.base_url.clone()),
            // An empty key field keeps the key.
            api_key: (!key.is_empty()).then(|| key.to_owned()),
            priority: Some(number("priority", &self.priority)?.unwrap_or(0)),
            weight: number("weight", &self.weight)?,
            max_retries: number("max_retries", &self.max_retries)?,
            timeout_ms: timeout_ms(&self.timeout)?,
            enabled: Some(self.enabled.is_some()),
            probe_path: Some(self.probe_path.trim().to_owned()),
            models: Some(v1::StringList {
                values: models(&self.models),
            }),
        })
    }
}

/// The form again, with the API's message and what was typed (except the key).
fn form_again(
    page: Page,
    id: Option<i64>,
    key_hint: String,
    form: UpstreamForm,
    error: String,
) -> Response {
    let form = UpstreamForm {
        api_key: String::new(),
        ..form
    };
    let page = FormPage {
        page,
        id,
        key_hint,
        form,
        error: Some(error),
    };
    render(StatusCode::UNPROCESSABLE_ENTITY, &page)
}

async fn create(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    session: Session,
    Form(form): Form<UpstreamForm>,
) -> Response {
    if let Err(r) = session.check_form(&headers, &form.csrf) {
        return *r;
    }
    let page = Page::new(
        &headers,
        "/admin/upstreams/new",
        |t| t.add_upstream,
        Some(&session),
    );
    let request = match form.create_request() {
        Ok(r) => r,
        Err(e) => return form_again(page, None, String::new(), form, e),
    };
    match console
        .admin
        .create_upstream(as_session(&session, request))
        .await
    {
        Ok(_) => Redirect::to("/admin/upstreams?done=saved").into_response(),
        Err(status) if is_input(&status) => {
            form_again(page, None, String::new(), form, status.message().to_owned())
        }
        Err(status) => failed(page, &status),
    }
}

async fn update(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    session: Session,
    Path(id): Path<i64>,
    Form(form): Form<UpstreamForm>,
) -> Response {
    if let Err(r) = session.check_form(&headers, &form.csrf) {
        return *r;
    }
    let path = format!("/admin/upstreams/{id}/edit");
    let page = Page::new(&headers, path, |t| t.edit_upstream, Some(&session));
    let hint = || async {
        console
            .admin
            .get_upstream(as_session(&session, v1::GetUpstreamRequest { id }))
            .await
            .map(|r| r.into_inner().api_key_hint)
            .unwrap_or_default()
    };
    let request = match form.update_request(id) {
        Ok(r) => r,
        Err(e) => return form_again(page, Some(id), hint().await, form, e),
    };
    match console
        .admin
        .update_upstream(as_session(&session, request))
        .await
    {
        Ok(_) => Redirect::to("/admin/upstreams?done=saved").into_response(),
        Err(status) if is_input(&status) => {
            let message = status.message().to_owned();
            form_again(page, Some(id), hint().await, form, message)
        }
        Err(status) => failed(page, &status),
    }
}

#[derive(serde::Deserialize)]
struct EnabledForm {
    #[serde(default)]
    csrf: String,
    enabled: bool,
}

async fn set_enabled(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    session: Session,
    Path(id): Path<i64>,
    Form(form): Form<EnabledForm>,
) -> Response {
    if let Err(r) = session.check_form(&headers, &form.csrf) {
        return *r;
    }
    let request = v1::UpdateUpstreamRequest {
        id,
        enabled: Some(form.enabled),
        ..Default::default()
    };
    match console
        .admin
        .update_upstream(as_session(&session, request))
        .await
    {
        Ok(_) => Redirect::to("/admin/upstreams?done=saved").into_response(),
        Err(status) => {
            let page = Page::new(
                &headers,
                "/admin/upstreams",
                |t| t.upstreams,
                Some(&session),
            );
            failed(page, &status)
        }
    }
}

#[derive(Template)]
#[template(path = "console/upstream_delete.html")]
struct DeletePage {
    page: Page,
    up: v1::Upstream,
}

async fn confirm_delete(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    session: Session,
    Path(id): Path<i64>,
) -> Response {
    let path = format!("/admin/upstreams/{id}/delete");
    let page = Page::new(&headers, path, |t| t.delete_confirm, Some(&session));
    match console
        .admin
        .get_upstream(as_session(&session, v1::GetUpstreamRequest { id }))
        .await
    {
        Ok(r) => render(
            StatusCode::OK,
            &DeletePage {
                page,
                up: r.into_inner(),
            },
        ),
        Err(status) => failed(page, &status),
    }
}

async fn delete(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    session: Session,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = session.check_form(&headers, &form.csrf) {
        return *r;
    }
    let request = v1::DeleteUpstreamRequest { id };
    match console
        .admin
        .delete_upstream(as_session(&session, request))
        .await
    {
        Ok(_) => Redirect::to("/admin/upstreams?done=deleted").into_response(),
        Err(status) => {
            let page = Page::new(
                &headers,
                "/admin/upstreams",
                |t| t.upstreams,
                Some(&session),
            );
            failed(page, &status)
        }
    }
}

#[derive(Template)]
#[template(path = "console/upstream_probe.html")]
struct ProbePage {
    page: Page,
    up: v1::Upstream,
    probe: v1::UpstreamProbe,
}

async fn test(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    session: Session,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = session.check_form(&headers, &form.csrf) {
        return *r;
    }
    let path = format!("/admin/upstreams/{id}/test");
    let page = Page::new(&headers, path, |t| t.probe_result, Some(&session));
    let up = match console
        .admin
        .get_upstream(as_session(&session, v1::GetUpstreamRequest { id }))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(status) => return failed(page, &status),
    };
    let request = v1::TestUpstreamRequest { id };
    match console
        .admin
        .test_upstream(as_session(&session, request))
        .await
    {
        Ok(r) => render(
            StatusCode::OK,
            &ProbePage {
                page,
                up,
                probe: r.into_inner(),
            },
        ),
        Err(status) => failed(page, &status),
    }
}
