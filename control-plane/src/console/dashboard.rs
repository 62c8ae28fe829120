//! `/admin/`: the dashboard. Requests (and errors), tokens (uncached input, cached input,
//! output), cost, error rate and cache-hit ratio (cached ÷ input) over the last 48 hours by
//! hour or the last 90 days by day, each by model and by upstream, and every upstream's health
//! at a glance. It asks the admin API's usage summaries for windows on whole hours and days,
//! which the rollups answer without reading events; a model or upstream picked from the tables
//! narrows everything to it.

use std::{collections::HashMap, sync::Arc};

use askama::Template;
use axum::{
    Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
    routing::get,
};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use gateway_proto::v1::{self, SummaryBy, admin_service_server::AdminService};

use super::{
    Console, Page, as_session,
    chart::{self, Bucket, Chart, Series},
    failed, query_value, render,
    session::Session,
    short_time,
    text::Text,
    upstreams::health_of,
};

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new().route("/admin/", get(dashboard))
}

/// The time a dashboard covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Window {
    /// The last 48 UTC hours, this one included, by hour.
    Hours,
    /// The last 90 UTC days, today included, by day.
    Days,
}

impl Window {
    fn parse(text: Option<&str>) -> Self {
        match text {
            Some("90d") => Self::Days,
            _ => Self::Hours,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Self::Hours => "48h",
            Self::Days => "90d",
        }
    }

    /// The buckets' starts, oldest first, up to the one holding `now`.
    fn buckets(self, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let (step, count) = match self {
            Self::Hours => (TimeDelta::hours(1), 48),
            Self::Days => (TimeDelta::days(1), 90),
        };
        let last = now.duration_trunc(step).unwrap_or(now);
        (0..count).rev().map(|i| last - step * i).collect()
    }

    /// How a summary names the bucket starting at `t`.
    fn group(self, t: DateTime<Utc>) -> String {
        match self {
            Self::Hours => t.format("%Y-%m-%dT%H:00:00Z").to_string(),
            Self::Days => t.format("%Y-%m-%d").to_string(),
        }
    }

    /// How the chart labels it.
    fn label(self, t: DateTime<Utc>) -> String {
        match self {
            Self::Hours => t.format("%m-%d %H:00").to_string(),
            Self::Days => t.format("%m-%d").to_string(),
        }
    }

    fn by(self) -> SummaryBy {
        match self {
            Self::Hours => SummaryBy::Hour,
            Self::Days => SummaryBy::Day,
        }
    }
}

#[derive(Debug, Default, serde::Deserialize)]
struct DashboardQuery {
    window: Option<String>,
    #[serde(default)]
    model: String,
    #[serde(default)]
    upstream: String,
}

/// Totals as the cards and tables show them.
struct Figures {
    requests: String,
    input: String,
    cached: String,
    output: String,
    cost: String,
    error_rate: String,
    cache_hit: String,
}

impl Figures {
    fn of(r: &v1::UsageSummaryRow) -> Self {
        Self {
            requests: grouped(r.requests),
            input: chart::compact(r.input_tokens as f64),
            cached: chart::compact(r.cached_tokens as f64),
            output: chart::compact(r.output_tokens as f64),
            cost: chart::money(r.cost_micros as f64),
            error_rate: chart::percent(error_rate(r)),
            cache_hit: chart::percent(cache_hit(r)),
        }
    }
}

/// A row of the by-model or by-upstream table; `link` narrows the dashboard to it.
struct Group {
    name: String,
    link: String,
    figures: Figures,
}

/// The by-model or by-upstream table.
struct GroupTable {
    id: &'static str,
    title: &'static str,
    /// Its first column's heading.
    column: &'static str,
    groups: Vec<Group>,
}

/// An upstream at a glance.
struct Glance {
    id: i64,
    name: String,
    enabled: bool,
    health: &'static str,
    health_class: &'static str,
    checked: String,
    error: String,
}

#[derive(Template)]
#[template(path = "console/dashboard.html")]
struct DashboardPage {
    page: Page,
    window: &'static str,
    /// Links to the other window and to no narrowing, keeping what else is set.
    hours_link: String,
    days_link: String,
    narrowed: Vec<String>,
    totals: Figures,
    charts: Vec<Chart>,
    width: f64,
    height: f64,
    middle: f64,
    tables: [GroupTable; 2],
    glance: Vec<Glance>,
    empty: bool,
}

async fn dashboard(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    session: Session,
    Query(q): Query<DashboardQuery>,
) -> Response {
    let page = Page::new(&headers, "/admin/", |t| t.dashboard, Some(&session));
    let t = page.t;
    let window = Window::parse(q.window.as_deref());
    let model = Some(q.model.trim().to_owned()).filter(|m| !m.is_empty());
    let upstream = q.upstream.trim().parse::<i64>().ok();
    let buckets = window.buckets(Utc::now());
    let since = buckets
        .first()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let summary = |by: SummaryBy| v1::SummarizeUsageRequest {
        by: by as i32,
        user_id: None,
        key_id: None,
        upstream_id: upstream,
        model: model.clone(),
        since: since.clone(),
        until: None,
    };
    let admin = &console.admin;
    let (series, by_model, by_upstream, listed) = tokio::join!(
        admin.summarize_usage(as_session(&session, summary(window.by()))),
        admin.summarize_usage(as_session(&session, summary(SummaryBy::Model))),
        admin.summarize_usage(as_session(&session, summary(SummaryBy::Upstream))),
        admin.list_upstreams(as_session(&session, v1::ListUpstreamsRequest {})),
    );
    let (series, by_model, by_upstream, listed) = match (series, by_model, by_upstream, listed) {
        (Ok(s), Ok(m), Ok(u), Ok(l)) => (
            s.into_inner().rows,
            m.into_inner().rows,
            u.into_inner().rows,
            l.into_inner().upstreams,
        ),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
            return failed(page, &e);
        }
    };

    let link = |window: Window, model: Option<&str>, upstream: Option<i64>| {
        let mut query = vec![format!("window={}", window.code())];
        if let Some(m) = model {
            query.push(format!("model={}", query_value(m)));
        }
        if let Some(u) = upstream {
            query.push(format!("upstream={u}"));
        }
        format!("/admin/?{}", query.join("&"))
    };
    let names: HashMap<String, String> = listed
        .iter()
        .map(|u| (u.id.to_string(), u.name.clone()))
        .collect();
    let upstream_name = |group: &str| match group {
        "-" => t.no_upstream_reached.to_owned(),
        id => names.get(id).cloned().unwrap_or_else(|| format!("#{id}")),
    };
    let mut narrowed = Vec::new();
    if let Some(m) = &model {
        narrowed.push(format!("{}: {m}", t.model));
    }
    if let Some(u) = upstream {
        narrowed.push(format!("{}: {}", t.upstream, upstream_name(&u.to_string())));
    }

    let by_bucket: HashMap<&str, &v1::UsageSummaryRow> =
        series.iter().map(|r| (r.group.as_str(), r)).collect();
    let zero = v1::UsageSummaryRow::default();
    let rows: Vec<(String, &v1::UsageSummaryRow)> = buckets
        .iter()
        .map(|&b| {
            let group = window.group(b);
            (
                window.label(b),
                by_bucket.get(group.as_str()).copied().unwrap_or(&zero),
            )
        })
        .collect();
    let total = series.iter().fold(v1::UsageSummaryRow::default(), add);
    let charts = charts(t, &rows);

    let models: Vec<Group> = by_model
        .iter()
        .map(|r| Group {
            name: r.group.clone(),
            link: link(window, Some(&r.group), upstream),
            figures: Figures::of(r),
        })
        .collect();
    let upstreams: Vec<Group> = by_upstream
        .iter()
        .map(|r| Group {
            name: upstream_name(&r.group),
            link: r
                .group
                .parse()
                .map(|id| link(window, model.as_deref(), Some(id)))
                .unwrap_or_default(),
            figures: Figures::of(r),
        })
        .collect();
    let glance = listed
        .iter()
        .map(|u| {
            let (health, health_class) = health_of(u.health, t);
            Glance {
                id: u.id,
                name: u.name.clone(),
                enabled: u.enabled,
                health,
                health_class,
                checked: u
                    .health_checked_at
                    .as_deref()
                    .map_or_else(|| t.never.to_owned(), short_time),
                error: u.health_error.clone(),
            }
        })
        .collect();
    render(
        StatusCode::OK,
        &DashboardPage {
            window: window.code(),
            hours_link: link(Window::Hours, model.as_deref(), upstream),
            days_link: link(Window::Days, model.as_deref(), upstream),
            narrowed,
            empty: series.is_empty(),
            totals: Figures::of(&total),
            charts,
            width: chart::WIDTH,
            height: chart::HEIGHT,
            middle: chart::HEIGHT / 2.0,
            tables: [
                GroupTable {
                    id: "by-model",
                    title: t.by_model,
                    column: t.model,
                    groups: models,
                },
                GroupTable {
                    id: "by-upstream",
                    title: t.by_upstream,
                    column: t.upstream,
                    groups: upstreams,
                },
            ],
            glance,
            page,
        },
    )
}

/// The four charts over `rows` (each bucket's label and totals).
fn charts(t: &'static Text, rows: &[(String, &v1::UsageSummaryRow)]) -> Vec<Chart> {
    let buckets = |values: fn(&v1::UsageSummaryRow) -> Vec<f64>| -> Vec<Bucket> {
        rows.iter()
            .map(|(label, r)| Bucket {
                label: label.clone(),
                values: values(r),
            })
            .collect()
    };
    let series = |class, label| Series { class, label };
    vec![
        Chart::stacked(
            t.requests,
            &[series("s-ok", t.succeeded), series("s-err", t.errors)],
            &buckets(|r| {
                vec![
                    (r.requests - r.errors).max(0) as f64,
                    r.errors.max(0) as f64,
                ]
            }),
            chart::compact,
        ),
        Chart::stacked(
            t.tokens,
            &[
                series("s-cached", t.cached),
                series("s-input", t.uncached_input),
                series("s-output", t.output),
            ],
            &buckets(|r| {
                vec![
                    r.cached_tokens as f64,
                    (r.input_tokens - r.cached_tokens).max(0) as f64,
                    r.output_tokens as f64,
                ]
            }),
            chart::compact,
        ),
        Chart::stacked(
            t.cost,
            &[series("s-cost", t.cost)],
            &buckets(|r| vec![r.cost_micros as f64]),
            chart::money,
        ),
        Chart::ratios(
            t.rates,
            &[series("s-hit", t.cache_hit), series("s-err", t.error_rate)],
            &buckets(|r| vec![cache_hit(r), error_rate(r)]),
        ),
    ]
}

/// Errors ÷ requests; NaN for no requests.
fn error_rate(r: &v1::UsageSummaryRow) -> f64 {
    ratio(r.errors, r.requests)
}

/// Cached ÷ input tokens; NaN for no input.
fn cache_hit(r: &v1::UsageSummaryRow) -> f64 {
    ratio(r.cached_tokens, r.input_tokens)
}

fn ratio(part: i64, whole: i64) -> f64 {
    if whole > 0 {
        part as f64 / whole as f64
    } else {
        f64::NAN
    }
}

/// `a` plus `b`'s counters.
fn add(a: v1::UsageSummaryRow, b: &v1::UsageSummaryRow) -> v1::UsageSummaryRow {
    v1::UsageSummaryRow {
        group: String::new(),
        requests: a.requests + b.requests,
        input_tokens: a.input_tokens + b.input_tokens,
        cached_tokens: a.cached_tokens + b.cached_tokens,
        output_tokens: a.output_tokens + b.output_tokens,
        reasoning_tokens: a.reasoning_tokens + b.reasoning_tokens,
        cost_micros: a.cost_micros + b.cost_micros,
        estimated: a.estimated + b.estimated,
        errors: a.errors + b.errors,
    }
}

/// `1234567` as `1,234,567`.
fn grouped(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_end_with_the_bucket_holding_now() {
        let now = DateTime::parse_from_rfc3339("2026-12-02T10:25:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let hours = Window::Hours.buckets(now);
        assert_eq!(hours.len(), 48);
        assert_eq!(Window::Hours.group(hours[47]), "2026-12-02T10:00:00Z");
        assert_eq!(Window::Hours.group(hours[0]), "2026-11-30T11:00:00Z");
        let days = Window::Days.buckets(now);
        assert_eq!(days.len(), 90);
        assert_eq!(Window::Days.group(days[89]), "2026-12-02");
        assert_eq!(Window::Days.group(days[0]), "2026-09-04");
    }

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(-12_345), "-12,345");
    }
}
