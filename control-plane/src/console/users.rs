//! `/admin/users`: search and page through users, create one with a balance and multiplier,
//! and a user's page — top up or adjust with a reason, rename, change the multiplier, their
//! keys and what they have spent per model. Each change is the admin API's own call.

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
    money::Micros,
    v1::{self, admin_service_server::AdminService},
};

use super::{
    Console, Page, as_session, failed, keys::KeyRow, render, session::Session, short_time,
};

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/admin/users", get(list).post(create))
        .route("/admin/users/new", get(new_form))
        .route("/admin/users/{id}", get(show).post(update))
        .route("/admin/users/{id}/balance", post(adjust))
}

/// Users per page.
const PAGE: u32 = 50;

/// A user as the pages show them.
pub(super) struct UserView {
    pub id: i64,
    pub name: String,
    pub balance: String,
    pub negative: bool,
    pub multiplier: String,
    pub created: String,
}

impl From<v1::User> for UserView {
    fn from(u: v1::User) -> Self {
        Self {
            id: u.id,
            name: u.name,
            balance: Micros(u.balance_micros).to_string(),
            negative: u.balance_micros < 0,
            multiplier: Micros(i64::try_from(u.multiplier_ppm).unwrap_or(i64::MAX)).to_string(),
            created: short_time(&u.created_at),
        }
    }
}

#[derive(Template)]
#[template(path = "console/users.html")]
struct ListPage {
    page: Page,
    users: Vec<UserView>,
    search: String,
    /// The link to the next page, if there may be one.
    next: Option<String>,
    paged: bool,
}

#[derive(serde::Deserialize)]
struct ListQuery {
    search: Option<String>,
    cursor: Option<String>,
}

async fn list(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    session: Session,
    Query(q): Query<ListQuery>,
) -> Response {
    let page = Page::new(&headers, "/admin/users", |t| t.users, Some(&session));
    let search = q.search.unwrap_or_default().trim().to_owned();
    let request = v1::ListUsersRequest {
        limit: Some(PAGE),
        cursor: q.cursor.clone().filter(|c| !c.is_empty()),
        search: (!search.is_empty()).then(|| search.clone()),
    };
    let listed = match console
        .admin
        .list_users(as_session(&session, request))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(status) => return failed(page, &status),
    };
    let next = listed.next_cursor.map(|c| {
        format!(
            "/admin/users?search={}&cursor={c}",
            super::query_value(&search)
        )
    });
    let users = listed.users.into_iter().map(Into::into).collect();
    let paged = q.cursor.is_some();
    render(
        StatusCode::OK,
        &ListPage {
            page,
            users,
            search,
            next,
            paged,
        },
    )
}

#[derive(Debug, Default, serde::Deserialize)]
struct UserForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    balance: String,
    #[serde(default)]
    multiplier: String,
}

#[derive(Template)]
#[template(path = "console/user_new.html")]
struct NewPage {
    page: Page,
    form: UserForm,
    error: Option<String>,
}

async fn new_form(headers: HeaderMap, session: Session) -> Response {
    let page = Page::new(&headers, "/admin/users/new", |t| t.add_user, Some(&session));
    let form = UserForm {
        balance: "0.00".into(),
        multiplier: "1.0".into(),
        ..UserForm::default()
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

/// An amount as typed (`10.00`); empty is `default`.
fn amount(field: &str, value: &str, default: Micros) -> Result<Micros, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(default);
    }
    value.parse().map_err(|e| format!("{field} {value:?}: {e}"))
}

/// A multiplier as typed (`1.5`) in parts per million; empty is unset.
fn multiplier_ppm(value: &str) -> Result<Option<u64>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let ppm: Micros = value
        .parse()
        .map_err(|e| format!("multiplier {value:?}: {e}"))?;
    u64::try_from(ppm.get())
        .map(Some)
        .map_err(|_| format!("multiplier {value:?} must not be negative"))
}

async fn create(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    session: Session,
    Form(form): Form<UserForm>,
) -> Response {
    if let Err(r) = session.check_form(&headers, &form.csrf) {
        return *r;
    }
    let page = Page::new(&headers, "/admin/users/new", |t| t.add_user, Some(&session));
    let request = match (|| {
        Ok::<_, String>(v1::CreateUserRequest {
            name: form.name.clone(),
            balance_micros: amount("balance", &form.balance, Micros::ZERO)?.get(),
            multiplier_ppm: multiplier_ppm(&form.multiplier)?,
        })
    })() {
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
        .create_user(as_session(&session, request))
        .await
    {
        Ok(r) => {
            Redirect::to(&format!("/admin/users/{}?done=saved", r.into_inner().id)).into_response()
        }
        Err(status) if super::is_input(&status) => {
            let error = Some(status.message().to_owned());
            render(
                StatusCode::UNPROCESSABLE_ENTITY,
                &NewPage { page, form, error },
            )
        }
        Err(status) => failed(page, &status),
    }
}

/// One row of a user's spend.
struct SpendRow {
    model: String,
    requests: i64,
    cost: String,
}

#[derive(Template)]
#[template(path = "console/user.html")]
struct UserPage {
    page: Page,
    user: UserView,
    keys: Vec<KeyRow>,
    spend: Vec<SpendRow>,
    notice: Option<&'static str>,
    error: Option<String>,
}

#[derive(serde::Deserialize)]
struct Notice {
    done: Option<String>,
}

async fn show(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    session: Session,
    Path(id): Path<i64>,
    Query(notice): Query<Notice>,
) -> Response {
    user_page(
        &console,
        &session,
        &headers,
        id,
        notice.done.as_deref(),
        None,
    )
    .await
}

/// The user's page, with a notice or the error of a form it posted.
async fn user_page(
    console: &Console,
    session: &Session,
    headers: &HeaderMap,
    id: i64,
    done: Option<&str>,
    error: Option<String>,
) -> Response {
    let page = Page::new(
        headers,
        format!("/admin/users/{id}"),
        |t| t.user,
        Some(session),
    );
    let user = match console
        .admin
        .get_user(as_session(session, v1::GetUserRequest { id }))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(status) => return failed(page, &status),
    };
    let keys = match console
        .admin
        .list_keys(as_session(
            session,
            v1::ListKeysRequest {
                user_id: Some(id),
                limit: Some(100),
                cursor: None,
            },
        ))
        .await
    {
        Ok(r) => r.into_inner().keys,
        Err(status) => return failed(page, &status),
    };
    let spend = match console
        .admin
        .summarize_usage(as_session(
            session,
            v1::SummarizeUsageRequest {
                by: v1::SummaryBy::Model as i32,
                user_id: Some(id),
                ..Default::default()
            },
        ))
        .await
    {
        Ok(r) => r.into_inner().rows,
        Err(status) => return failed(page, &status),
    };
    let t = page.t;
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    render(
        status,
        &UserPage {
            keys: keys.into_iter().map(|k| KeyRow::new(k, t)).collect(),
            spend: spend
                .into_iter()
                .map(|r| SpendRow {
                    model: r.group,
                    requests: r.requests,
                    cost: Micros(r.cost_micros).to_string(),
                })
                .collect(),
            user: user.into(),
            notice: match done {
                Some("saved") => Some(t.saved),
                _ => None,
            },
            error,
            page,
        },
    )
}

async fn update(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    session: Session,
    Path(id): Path<i64>,
    Form(form): Form<UserForm>,
) -> Response {
    if let Err(r) = session.check_form(&headers, &form.csrf) {
        return *r;
    }
    let multiplier = match multiplier_ppm(&form.multiplier) {
        Ok(m) => m,
        Err(e) => return user_page(&console, &session, &headers, id, None, Some(e)).await,
    };
    let request = v1::UpdateUserRequest {
        id,
        name: Some(form.name.clone()),
        multiplier_ppm: multiplier,
    };
    match console
        .admin
        .update_user(as_session(&session, request))
        .await
    {
        Ok(_) => Redirect::to(&format!("/admin/users/{id}?done=saved")).into_response(),
        Err(status) if super::is_input(&status) => {
            let error = Some(status.message().to_owned());
            user_page(&console, &session, &headers, id, None, error).await
        }
        Err(status) => {
            let page = Page::new(&headers, "/admin/users", |t| t.users, Some(&session));
            failed(page, &status)
        }
    }
}

#[derive(serde::Deserialize)]
struct AdjustForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    reason: String,
}

async fn adjust(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    session: Session,
    Path(id): Path<i64>,
    Form(form): Form<AdjustForm>,
) -> Response {
    if let Err(r) = session.check_form(&headers, &form.csrf) {
        return *r;
    }
    let amount = match amount("amount", &form.amount, Micros::ZERO) {
        Ok(a) => a,
        Err(e) => return user_page(&console, &session, &headers, id, None, Some(e)).await,
    };
    let request = v1::AdjustBalanceRequest {
        user_id: id,
        amount_micros: amount.get(),
        reason: form.reason,
    };
    match console
        .admin
        .adjust_balance(as_session(&session, request))
        .await
    {
        Ok(_) => Redirect::to(&format!("/admin/users/{id}?done=saved")).into_response(),
        Err(status) if super::is_input(&status) => {
            let error = Some(status.message().to_owned());
            user_page(&console, &session, &headers, id, None, error).await
        }
        Err(status) => {
            let page = Page::new(&headers, "/admin/users", |t| t.users, Some(&session));
            failed(page, &status)
        }
    }
}
