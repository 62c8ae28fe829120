//! `/admin/prices`: every model's price per 1M tokens (`*` is the default), and setting one.

use std::sync::Arc;

use askama::Template;
use axum::{
    Form, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use gateway_proto::{
    money::Micros,
    v1::{self, admin_service_server::AdminService},
};

use super::{Console, Page, as_session, failed, is_input, render, session::Session};

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new().route("/admin/prices", get(list).post(set))
}

struct PriceRow {
    model: String,
    input: String,
    cached_input: String,
    output: String,
}

#[derive(Debug, Default, serde::Deserialize)]
struct PriceForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    input: String,
    #[serde(default)]
    cached_input: String,
    #[serde(default)]
    output: String,
}

#[derive(Template)]
#[template(path = "console/prices.html")]
struct PricesPage {
    page: Page,
    prices: Vec<PriceRow>,
    form: PriceForm,
    error: Option<String>,
    saved: bool,
}

#[derive(serde::Deserialize)]
struct Notice {
    done: Option<String>,
}

async fn list(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    session: Session,
    axum::extract::Query(notice): axum::extract::Query<Notice>,
) -> Response {
    let form = PriceForm {
        model: "*".into(),
        ..PriceForm::default()
    };
    page(
        &console,
        &session,
        &headers,
        form,
        None,
        notice.done.is_some(),
    )
    .await
}

async fn page(
    console: &Console,
    session: &Session,
    headers: &HeaderMap,
    form: PriceForm,
    error: Option<String>,
    saved: bool,
) -> Response {
    let page = Page::new(headers, "/admin/prices", |t| t.prices, Some(session));
    let prices = match console
        .admin
        .list_prices(as_session(session, v1::ListPricesRequest {}))
        .await
    {
        Ok(r) => r.into_inner().prices,
        Err(status) => return failed(page, &status),
    };
    let prices = prices
        .into_iter()
        .map(|p| PriceRow {
            model: p.model,
            input: Micros(p.input_micros).to_string(),
            cached_input: Micros(p.cached_input_micros).to_string(),
            output: Micros(p.output_micros).to_string(),
        })
        .collect();
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    render(
        status,
        &PricesPage {
            page,
            prices,
            form,
            error,
            saved,
        },
    )
}

fn price(field: &str, value: &str) -> Result<i64, String> {
    let value = value.trim();
    value
        .parse::<Micros>()
        .map(Micros::get)
        .map_err(|e| format!("{field} {value:?}: {e}"))
}

async fn set(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    session: Session,
    Form(form): Form<PriceForm>,
) -> Response {
    if let Err(r) = session.check_form(&headers, &form.csrf) {
        return *r;
    }
    let parsed = (|| {
        Ok::<_, String>(v1::Price {
            model: form.model.trim().to_owned(),
            input_micros: price("input", &form.input)?,
            cached_input_micros: price("cached_input", &form.cached_input)?,
            output_micros: price("output", &form.output)?,
        })
    })();
    let price = match parsed {
        Ok(p) => p,
        Err(e) => return page(&console, &session, &headers, form, Some(e), false).await,
    };
    let request = v1::SetPriceRequest { price: Some(price) };
    match console.admin.set_price(as_session(&session, request)).await {
        Ok(_) => Redirect::to("/admin/prices?done=saved").into_response(),
        Err(status) if is_input(&status) => {
            let error = Some(status.message().to_owned());
            page(&console, &session, &headers, form, error, false).await
        }
        Err(status) => {
            let page = Page::new(&headers, "/admin/prices", |t| t.prices, Some(&session));
            failed(page, &status)
        }
    }
}
