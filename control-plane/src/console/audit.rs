//! `/admin/audit`: every admin change, newest first, 50 a page — when, who and from where,
//! what on which target, the fields it set (never a secret) and the version it produced.

use std::sync::Arc;

use askama::Template;
use axum::{
    Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
    routing::get,
};
use gateway_proto::v1::{self, admin_service_server::AdminService};

use super::{Console, Page, as_session, failed, render, session::Session, short_time};

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new().route("/admin/audit", get(list))
}

struct Entry {
    at: String,
    who: String,
    from: String,
    action: String,
    target: String,
    version: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    page: Page,
    entries: Vec<Entry>,
    next: Option<String>,
    paged: bool,
}

#[derive(serde::Deserialize)]
struct ListQuery {
    cursor: Option<String>,
}

async fn list(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    session: Session,
    Query(q): Query<ListQuery>,
) -> Response {
    let page = Page::new(&headers, "/admin/audit", |t| t.audit, Some(&session));
    let request = v1::ListAuditRequest {
        limit: Some(50),
        cursor: q.cursor.clone().filter(|c| !c.is_empty()),
        since: None,
    };
    let listed = match console
        .admin
        .list_audit(as_session(&session, request))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(status) => return failed(page, &status),
    };
    let entries = listed
        .entries
        .into_iter()
        .map(|e| Entry {
            at: short_time(&e.at),
            who: e.principal,
            from: e.source,
            action: e.action,
            target: e.target,
            version: e
                .config_version
                .map_or_else(|| "—".to_owned(), |v| v.to_string()),
            detail: e.detail,
        })
        .collect();
    let next = listed
        .next_cursor
        .map(|c| format!("/admin/audit?cursor={c}"));
    render(
        StatusCode::OK,
        &AuditPage {
            page,
            entries,
            next,
            paged: q.cursor.is_some(),
        },
    )
}
