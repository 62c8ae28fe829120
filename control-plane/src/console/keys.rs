//! `/admin/keys`: page through keys (all, or one user's), create one — its secret shown once,
//! with a copy button — with its limits and spending caps, and revoke one after confirming.

use std::sync::Arc;

use askama::Template;
use axum::{
    Form, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use gateway_proto::v1::{self, SpendLimit, admin_service_server::AdminService};

use super::{
    Console, Page, as_session, failed, render,
    session::{CsrfForm, Session},
    short_time,
    text::Text,
};

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/admin/keys", get(list).post(create))
        .route("/admin/keys/new", get(new_form))
        .route("/admin/keys/{id}/revoke", get(confirm_revoke).post(revoke))
}

/// Keys per page.
const PAGE: u32 = 50;

/// A key as its row shows it.
pub(super) struct KeyRow {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub prefix: String,
    pub revoked: bool,
    pub expires: String,
    pub models: String,
    pub ip_allow: String,
    pub rpm: String,
    pub concurrency: String,
    /// Each cap with what is spent and left.
    pub caps: Vec<String>,
    pub created: String,
}

impl KeyRow {
    pub(super) fn new(k: v1::Key, t: &Text) -> Self {
        let or_none = |list: &[String]| {
            if list.is_empty() {
                t.none.to_owned()
            } else {
                list.join(", ")
            }
        };
        Self {
            id: k.id,
            user_id: k.user_id,
            name: k.name,
            prefix: k.prefix,
            revoked: k.revoked,
            expires: k
                .expires_at
                .as_deref()
                .map_or_else(|| "—".to_owned(), short_time),
            models: if k.models.is_empty() {
                t.all_models.to_owned()
            } else {
                k.models.join(", ")
            },
            ip_allow: or_none(&k.ip_allow),
            rpm: k.rpm.map_or_else(|| "—".to_owned(), |v| v.to_string()),
            concurrency: k
                .concurrency
                .map_or_else(|| "—".to_owned(), |v| v.to_string()),
            caps: k.spend_limits.iter().map(ToString::to_string).collect(),
            created: short_time(&k.created_at),
        }
    }
}

#[derive(Template)]
#[template(path = "console/keys.html")]
struct ListPage {
    page: Page,
    keys: Vec<KeyRow>,
    user: Option<i64>,
    next: Option<String>,
    paged: bool,
}

#[derive(serde::Deserialize)]
struct ListQuery {
    user: Option<i64>,
    cursor: Option<String>,
}

async fn list(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    session: Session,
    Query(q): Query<ListQuery>,
) -> Response {
    let page = Page::new(&headers, "/admin/keys", |t| t.keys, Some(&session));
    let request = v1::ListKeysRequest {
        user_id: q.user,
        limit: Some(PAGE),
        cursor: q.cursor.clone().filter(|c| !c.is_empty()),
    };
    let listed = match console.admin.list_keys(as_session(&session, request)).await {
        Ok(r) => r.into_inner(),
        Err(status) => return failed(page, &status),
    };
    let next = listed.next_cursor.map(|c| match q.user {
        Some(u) => format!("/admin/keys?user={u}&cursor={c}"),
        None => format!("/admin/keys?cursor={c}"),
    });
    let t = page.t;
    let keys = listed.keys.into_iter().map(|k| KeyRow::new(k, t)).collect();
    render(
        StatusCode::OK,
        &ListPage {
            page,
            keys,
            user: q.user,
            next,
            paged: q.cursor.is_some(),
        },
    )
}

/// The key form's fields (DESIGN §10: the CLI's flag names).
#[derive(Debug, Default, serde::Deserialize)]
struct KeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    expires: String,
    #[serde(default)]
    models: String,
    #[serde(default)]
    ip_allow: String,
    #[serde(default)]
    rpm: String,
    #[serde(default)]
    concurrency: String,
    #[serde(default)]
    spend_limit: String,
}

#[derive(Template)]
#[template(path = "console/key_new.html")]
struct NewPage {
    page: Page,
    form: KeyForm,
    error: Option<String>,
}

#[derive(serde::Deserialize)]
struct NewQuery {
    user: Option<i64>,
}

async fn new_form(headers: HeaderMap, session: Session, Query(q): Query<NewQuery>) -> Response {
    let page = Page::new(&headers, "/admin/keys/new", |t| t.add_key, Some(&session));
    let form = KeyForm {
        user: q.user.map(|u| u.to_string()).unwrap_or_default(),
        ..KeyForm::default()
    };
    render(
        StatusCode::OK,
        &NewPage {
            page,
            form,
            error: None,
        },
    )
}

fn list_field(value: &str) -> Vec<String> {
    value
        .split([',', '\n'])
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

fn limit(field: &str, value: &str) -> Result<Option<u32>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| format!("{field} must be a whole number, got {value:?}"))
}

impl KeyForm {
    fn request(&self) -> Result<v1::CreateKeyRequest, String> {
        let user = self.user.trim();
        let user_id = user
            .parse()
            .map_err(|_| format!("user must be a user id, got {user:?}"))?;
        let expires = self.expires.trim();
        Ok(v1::CreateKeyRequest {
            user_id,
            name: self.name.clone(),
            expires_at: (!expires.is_empty()).then(|| expires.to_owned()),
            models: list_field(&self.models),
            ip_allow: list_field(&self.ip_allow),
            rpm: limit("rpm", &self.rpm)?,
            concurrency: limit("concurrency", &self.concurrency)?,
            spend_limits: list_field(&self.spend_limit)
                .iter()
                .map(|l| l.parse::<SpendLimit>().map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()?,
        })
    }
}

#[derive(Template)]
#[template(path = "console/key_created.html")]
struct CreatedPage {
    page: Page,
    key: KeyRow,
    secret: String,
}

async fn create(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    session: Session,
    Form(form): Form<KeyForm>,
) -> Response {
    if let Err(r) = session.check_form(&headers, &form.csrf) {
        return *r;
    }
    let page = Page::new(&headers, "/admin/keys/new", |t| t.add_key, Some(&session));
    let request = match form.request() {
        Ok(r) => r,
        Err(error) => {
            let error = Some(error);
            return render(
                StatusCode::UNPROCESSABLE_ENTITY,
                &NewPage { page, form, error },
            );
        }
    };
    match console
        .admin
        .create_key(as_session(&session, request))
        .await
    {
        Ok(r) => {
            let created = r.into_inner();
            let Some(key) = created.key else {
                let status = tonic::Status::internal("the new key came back without its row");
                return failed(page, &status);
            };
            let page = Page::new(&headers, "/admin/keys", |t| t.key_created, Some(&session));
            let key = KeyRow::new(key, page.t);
            render(
                StatusCode::OK,
                &CreatedPage {
                    page,
                    key,
                    secret: created.secret,
                },
            )
        }
        Err(status) if super::is_input(&status) || status.code() == tonic::Code::NotFound => {
            let error = Some(status.message().to_owned());
            render(
                StatusCode::UNPROCESSABLE_ENTITY,
                &NewPage { page, form, error },
            )
        }
        Err(status) => failed(page, &status),
    }
}

#[derive(Template)]
#[template(path = "console/key_revoke.html")]
struct RevokePage {
    page: Page,
    key: KeyRow,
}

async fn confirm_revoke(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    session: Session,
    Path(id): Path<i64>,
) -> Response {
    let path = format!("/admin/keys/{id}/revoke");
    let page = Page::new(&headers, path, |t| t.revoke_confirm, Some(&session));
    match console
        .admin
        .get_key(as_session(&session, v1::GetKeyRequest { id }))
        .await
    {
        Ok(r) => {
            let key = KeyRow::new(r.into_inner(), page.t);
            render(StatusCode::OK, &RevokePage { page, key })
        }
        Err(status) => failed(page, &status),
    }
}

async fn revoke(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    session: Session,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = session.check_form(&headers, &form.csrf) {
        return *r;
    }
    match console
        .admin
        .revoke_key(as_session(&session, v1::RevokeKeyRequest { id }))
        .await
    {
        Ok(r) => {
            let user = r.into_inner().user_id;
            Redirect::to(&format!("/admin/users/{user}?done=saved")).into_response()
        }
        Err(status) => {
            let page = Page::new(&headers, "/admin/keys", |t| t.keys, Some(&session));
            failed(page, &status)
        }
    }
}
