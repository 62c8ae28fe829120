//! `/admin/usage`: the ledger's events, newest first, filtered by user, key, upstream, model,
//! status and time, 50 a page by keyset cursor; and `/admin/usage.csv`, exactly the current
//! filters' events as CSV (the columns `gatewayctl usage export` writes), streamed page by
//! page so a large export never sits in memory.

use std::sync::Arc;

use askama::Template;
use axum::{
    Router,
    body::Body,
    extract::{Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::Bytes;
use gateway_proto::{
    money::Micros,
    names::{Named, name_of},
    v1::{self, admin_service_server::AdminService},
};

use super::{Console, Page, as_session, failed, render, session::Session, short_time};

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/admin/usage", get(list))
        .route("/admin/usage.csv", get(export))
}

/// Events per page.
const PAGE: u32 = 50;
/// Events per page of an export.
const EXPORT_PAGE: u32 = 1_000;

/// The filters as typed; empty means any.
#[derive(Debug, Default, Clone, serde::Deserialize)]
struct Filters {
    #[serde(default)]
    user: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    upstream: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    cursor: String,
}

fn id(field: &str, value: &str) -> Result<Option<i64>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| format!("{field} must be an id, got {value:?}"))
}

fn text(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

impl Filters {
    fn request(&self, limit: u32) -> Result<v1::ListUsageRequest, String> {
        let status = match self.status.trim() {
            "" => None,
            s => Some(s.parse::<v1::UsageStatus>().map_err(|e| e.to_string())? as i32),
        };
        Ok(v1::ListUsageRequest {
            user_id: id("user", &self.user)?,
            key_id: id("key", &self.key)?,
            upstream_id: id("upstream", &self.upstream)?,
            model: text(&self.model),
            since: text(&self.since),
            until: text(&self.until),
            limit: Some(limit),
            cursor: text(&self.cursor),
            status,
        })
    }

    /// These filters as a query string (without the cursor).
    fn query(&self) -> String {
        [
            ("user", &self.user),
            ("key", &self.key),
            ("upstream", &self.upstream),
            ("model", &self.model),
            ("status", &self.status),
            ("since", &self.since),
            ("until", &self.until),
        ]
        .iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| format!("{k}={}", super::query_value(v.trim())))
        .collect::<Vec<_>>()
        .join("&")
    }
}

struct EventRow {
    at: String,
    user_id: i64,
    key_id: i64,
    upstream: String,
    model: String,
    input: i64,
    cached: i64,
    output: i64,
    reasoning: i64,
    cost: String,
    status: &'static str,
    failed: bool,
    ttfb_ms: u32,
    duration_ms: u32,
}

#[derive(Template)]
#[template(path = "console/usage.html")]
struct UsagePage {
    page: Page,
    filters: Filters,
    statuses: Vec<&'static str>,
    events: Vec<EventRow>,
    csv: String,
    next: Option<String>,
    first: Option<String>,
    error: Option<String>,
}

async fn list(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    session: Session,
    Query(filters): Query<Filters>,
) -> Response {
    let page = Page::new(&headers, "/admin/usage", |t| t.usage, Some(&session));
    let query = filters.query();
    let mut view = UsagePage {
        statuses: v1::UsageStatus::ALL.iter().map(|s| s.name()).collect(),
        events: Vec::new(),
        csv: format!("/admin/usage.csv?{query}"),
        next: None,
        first: (!filters.cursor.is_empty()).then(|| format!("/admin/usage?{query}")),
        error: None,
        filters,
        page,
    };
    let request = match view.filters.request(PAGE) {
        Ok(r) => r,
        Err(e) => {
            view.error = Some(e);
            return render(StatusCode::UNPROCESSABLE_ENTITY, &view);
        }
    };
    match console
        .admin
        .list_usage(as_session(&session, request))
        .await
    {
        Ok(r) => {
            let listed = r.into_inner();
            view.next = listed
                .next_cursor
                .map(|c| format!("/admin/usage?{query}&cursor={}", super::query_value(&c)));
            view.events = listed.events.into_iter().map(event_row).collect();
            render(StatusCode::OK, &view)
        }
        Err(status) if super::is_input(&status) => {
            view.error = Some(status.message().to_owned());
            render(StatusCode::UNPROCESSABLE_ENTITY, &view)
        }
        Err(status) => failed(view.page, &status),
    }
}

fn event_row(e: v1::UsageRecord) -> EventRow {
    let status = name_of::<v1::UsageStatus>(e.status);
    EventRow {
        at: short_time(&e.created_at),
        user_id: e.user_id,
        key_id: e.key_id,
        upstream: e
            .upstream_id
            .map_or_else(|| "—".to_owned(), |u| u.to_string()),
        model: e.model,
        input: e.input_tokens,
        cached: e.cached_tokens,
        output: e.output_tokens,
        reasoning: e.reasoning_tokens,
        cost: Micros(e.cost_micros).to_string(),
        failed: !matches!(status, "completed" | "incomplete"),
        status,
        ttfb_ms: e.ttfb_ms,
        duration_ms: e.duration_ms,
    }
}

/// Where an export is: the next page's cursor, or done.
enum Export {
    Start,
    After(String),
    Done,
}

async fn export(
    State(console): State<Arc<Console>>,
    session: Session,
    Query(filters): Query<Filters>,
) -> Response {
    let filters = Filters {
        cursor: String::new(),
        ..filters
    };
    let first = match filters.request(EXPORT_PAGE) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let columns = Arc::new(gateway_proto::csv::usage_columns());
    let pages = futures_util::stream::unfold(Export::Start, move |at| {
        let console = console.clone();
        let session = session.clone();
        let columns = columns.clone();
        let mut request = first.clone();
        async move {
            let mut chunk = String::new();
            match at {
                Export::Done => return None,
                Export::Start => {
                    chunk.push_str(&columns.join(","));
                    chunk.push('\n');
                }
                Export::After(cursor) => request.cursor = Some(cursor),
            }
            match console
                .admin
                .list_usage(as_session(&session, request))
                .await
            {
                Ok(r) => {
                    let page = r.into_inner();
                    for e in &page.events {
                        chunk.push_str(&gateway_proto::csv::usage_row(&columns, e));
                        chunk.push('\n');
                    }
                    let next = page.next_cursor.map_or(Export::Done, Export::After);
                    Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), next))
                }
                Err(status) => {
                    tracing::error!(target: "Console", error = %status.message(), "usage export stopped");
                    Some((
                        Err(std::io::Error::other(status.message().to_owned())),
                        Export::Done,
                    ))
                }
            }
        }
    });
    let mut response = Body::from_stream(pages).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"usage.csv\""),
    );
    response
}
