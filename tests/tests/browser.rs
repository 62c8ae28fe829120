//! The console in a real headless Chromium over WebDriver (Debian's `chromium` and
//! `chromium-driver`; `.ci/run` and `scripts/test` install them when absent): sign in, add an
//! upstream through the form and find it in the list and over gRPC, test its health, create a
//! user and a key (its secret shown once, copied, and working on the data plane), find a request
//! made with it on the usage page and in its CSV, sign in to the portal with it, switch to
//! Chinese, and the same pages on a 390-px phone without sideways scrolling. Every page is
//! saved as a PNG in `CONSOLE_SCREENSHOTS` (default: the system temp dir's
//! `codex-gateway-console`) to be looked at.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use fantoccini::{Client, ClientBuilder, Locator};
use gateway_proto::v1;
use gateway_tests::Harness;
use serde_json::json;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver on a port it chose itself; killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Self {
        let mut child = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{CHROMEDRIVER}: {e} (apt-get install chromium chromium-driver)")
            });
        let stdout = child.stdout.take().unwrap();
        let port = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| {
                line.split("started successfully on port ")
                    .nth(1)
                    .map(|p| p.trim_end_matches('.').trim().to_owned())
            })
            .expect("chromedriver says its port");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// A browser window of `width`×`height` CSS pixels whose language is `lang`; a narrow one
    /// is a phone (touch, its own viewport).
    async fn browser(&self, width: u32, height: u32, lang: &str) -> Client {
        let mut options = json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--no-first-run", "--disable-gpu",
                format!("--window-size={width},{height}"), format!("--lang={lang}"),
            ],
            "prefs": { "intl.accept_languages": lang },
        });
        if width < 500 {
            options["mobileEmulation"] = json!({
                "deviceMetrics": { "width": width, "height": height, "pixelRatio": 1 }
            });
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), options);
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn screenshots() -> PathBuf {
    let dir = std::env::var_os("CONSOLE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("codex-gateway-console"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Saves what the window shows as `name`.png; it must be a real picture.
async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 2_000, "{name}");
    let path = screenshots().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

async fn text(c: &Client) -> String {
    c.find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn path(c: &Client) -> String {
    c.current_url().await.unwrap().path().to_owned()
}

/// Whether the page fits the window's width (nothing to scroll sideways).
async fn fits(c: &Client) -> bool {
    c.execute(
        "return document.documentElement.scrollWidth <= window.innerWidth;",
        vec![],
    )
    .await
    .unwrap()
    .as_bool()
    .unwrap()
}

async fn sign_in(c: &Client, site: &str, token: &str) {
    c.goto(&format!("{site}/admin/")).await.unwrap();
    assert_eq!(
        path(c).await,
        "/admin/login",
        "signed out: to the sign-in page"
    );
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    c.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The sign-in page has an `h1` too: wait for the address, not for a heading.
    let dashboard = c.current_url().await.unwrap().join("/admin/").unwrap();
    c.wait()
        .for_url(&dashboard)
        .await
        .expect("signed in: to the dashboard");
}

/// Made-up traffic through `upstream`: every hour of the last two days and every day of the
/// last 90, a busier afternoon, three models, some cache misses, a few failures and a few
/// that reached no upstream.
fn dashboard_traffic(upstream: i64) -> Vec<v1::UsageEvent> {
    const HOUR: i64 = 3_600_000;
    let models = ["gpt-5.1-codex", "gpt-5-mini", "gpt-5"];
    let mut events = Vec::new();
    let mut push = |ago_ms: i64, n: i64| {
        for i in 0..n {
            // Of nobody the test signs in as: their balance and caps stay untouched.
            let mut e = gateway_tests::bench_usage_event(999, 999);
            let k = events.len() as i64;
            e.started_at_ms -= ago_ms + i * 1_000;
            e.model = models[(k % 7 % 3) as usize].into();
            e.cached_tokens = 24_000 * (4 + k.unsigned_abs() % 6) / 10;
            e.cost_micros = 9_000 + (k % 5) * 2_500;
            e.upstream_id = (k % 29 != 0).then_some(upstream);
            if k % 13 == 0 {
                e.status = v1::UsageStatus::UpstreamError as i32;
            }
            events.push(e);
        }
    };
    for hour in 1..48 {
        push(
            hour * HOUR,
            6 + (hour * 7 % 11) + if hour % 24 < 8 { 8 } else { 0 },
        );
    }
    for day in 2..90 {
        push(day * 24 * HOUR, 200 + (day * 37 % 90));
    }
    events
}

async fn fill(c: &Client, id: &str, value: &str) {
    let field = c.find(Locator::Id(id)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(value).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_the_gateway_from_the_console_in_chromium() {
    let mut h = Harness::start(1).await;
    let site = format!("http://{}", h.console_addr());
    let token = h.admin_token.expose().to_owned();
    let driver = Driver::start();

    // 1400×1000, English.
    let c = driver.browser(1400, 1000, "en-US").await;
    c.goto(&format!("{site}/admin/login")).await.unwrap();
    shot(&c, "login-en-1400").await;
    // A wrong token: a plain message, still signed out.
    fill(&c, "token", "not-the-admin-token").await;
    c.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Css(".error")).await.unwrap();
    assert!(text(&c).await.contains("Wrong token."));
    sign_in(&c, &site, &token).await;
    assert!(text(&c).await.contains("No requests in this window yet."));
    shot(&c, "dashboard-empty-en-1400").await;
    c.find(Locator::LinkText("Upstreams"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let upstreams = c
        .current_url()
        .await
        .unwrap()
        .join("/admin/upstreams")
        .unwrap();
    c.wait().for_url(&upstreams).await.unwrap();
    assert!(text(&c).await.contains("No upstreams yet"));
    shot(&c, "upstreams-empty-en-1400").await;

    c.find(Locator::LinkText("Add upstream"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Id("base_url")).await.unwrap();
    fill(&c, "name", "pool-a").await;
    fill(&c, "base_url", &h.mock.base_url("pool-a")).await;
    fill(&c, "api_key", "sk-browser-secret-7777").await;
    fill(&c, "weight", "2").await;
    fill(&c, "timeout", "30").await;
    fill(&c, "models", "gpt-5.1-codex").await;
    shot(&c, "upstream-new-en-1400").await;
    c.find(Locator::Css("form.grid button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Css("table")).await.unwrap();
    let listed = text(&c).await;
    assert!(
        listed.contains("pool-a") && listed.contains("Saved."),
        "{listed}"
    );
    assert!(!c.source().await.unwrap().contains("sk-browser-secret-7777"));
    shot(&c, "upstreams-en-1400").await;

    let mut admin = h.admin().await;
    let up = admin
        .list_upstreams(v1::ListUpstreamsRequest {})
        .await
        .unwrap()
        .into_inner()
        .upstreams
        .into_iter()
        .find(|u| u.name == "pool-a")
        .expect("the form's upstream is in the admin API");
    assert_eq!((up.weight, up.timeout_ms), (2, 30_000));
    assert_eq!(up.models, ["gpt-5.1-codex"]);

    c.find(Locator::Css(&format!(
        "#upstream-{} form[action$='/test'] button",
        up.id
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    c.wait()
        .for_element(Locator::Css("dl.fields"))
        .await
        .unwrap();
    let probe = text(&c).await;
    assert!(
        probe.contains("healthy") && probe.contains("200"),
        "{probe}"
    );
    shot(&c, "upstream-test-en-1400").await;

    c.goto(&format!("{site}/admin/upstreams/{}/edit", up.id))
        .await
        .unwrap();
    shot(&c, "upstream-edit-en-1400").await;
    c.goto(&format!("{site}/admin/upstreams/{}/delete", up.id))
        .await
        .unwrap();
    shot(&c, "upstream-delete-en-1400").await;

    // A user with a balance, then a key for them: its secret shown once, copied with the
    // button, and working on the data plane.
    c.find(Locator::LinkText("Users"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::LinkText("Add user"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Id("balance")).await.unwrap();
    fill(&c, "name", "ada").await;
    fill(&c, "balance", "25.00").await;
    shot(&c, "user-new-en-1400").await;
    c.find(Locator::Css("form.grid button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Id("amount")).await.unwrap();
    assert_eq!(
        c.find(Locator::Id("balance"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "25.00"
    );
    let user_path = path(&c).await;
    c.find(Locator::LinkText("Create key"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Id("spend_limit"))
        .await
        .unwrap();
    fill(&c, "name", "laptop").await;
    fill(&c, "rpm", "120").await;
    fill(&c, "spend_limit", "20.00, 5.00/day").await;
    shot(&c, "key-new-en-1400").await;
    c.find(Locator::Css("form.grid button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let secret_field = c.wait().for_element(Locator::Id("secret")).await.unwrap();
    let secret = secret_field.prop("value").await.unwrap().unwrap();
    assert!(secret.starts_with("cgw-"), "{secret}");
    let copy = c.find(Locator::Css("[data-copy=secret]")).await.unwrap();
    copy.click().await.unwrap();
    // The page's one script runs under its CSP: the button says it copied.
    c.wait()
        .for_element(Locator::XPath(
            "//button[@data-copy='secret' and normalize-space()='Copied']",
        ))
        .await
        .unwrap();
    shot(&c, "key-created-en-1400").await;
    let version = h.set_price("*", 1_250_000, 125_000, 10_000_000).await;
    h.wait_applied(version).await;
    let models = h
        .get_with(
            0,
            "/v1/models",
            &[("authorization", &format!("Bearer {secret}"))],
        )
        .await;
    assert_eq!(
        models.status(),
        200,
        "the console's key works on the data plane"
    );
    // A request through the data plane with that key: billed, on the usage page and in the
    // page's CSV.
    let answer = h
        .post(
            0,
            "/v1/responses",
            &[("authorization", &format!("Bearer {secret}"))],
            gateway_tests::codex_request("gpt-5.1-codex", false, "console"),
        )
        .await;
    assert_eq!(answer.status(), 200);
    let request_id = answer.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    http_body_util::BodyExt::collect(answer.into_body())
        .await
        .unwrap();
    h.wait_ingested(1).await;
    c.find(Locator::LinkText("Usage"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Css("table")).await.unwrap();
    let usage = text(&c).await;
    assert!(
        usage.contains("gpt-5.1-codex") && usage.contains("completed"),
        "{usage}"
    );
    shot(&c, "usage-en-1400").await;
    let csv_href = c
        .find(Locator::LinkText("Download CSV"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    assert!(csv_href.starts_with("/admin/usage.csv"), "{csv_href}");
    // The same download, with the browser's session (its CSP lets no script fetch it).
    let cookie = c.get_named_cookie("cgw_session").await.unwrap();
    let mut download = gateway_tests::console::ConsoleClient::new(h.console_addr());
    download.set_cookies(
        [("cgw_session".to_owned(), cookie.value().to_owned())]
            .into_iter()
            .collect(),
    );
    let csv = download.get(&csv_href).await;
    assert_eq!(csv.status, 200);
    let csv = csv.body;
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(
        csv.contains(&request_id),
        "the request is in the CSV: {csv}"
    );

    // The key holder's portal: sign in with the key, see its balance, caps and request.
    c.goto(&format!("{site}/portal/")).await.unwrap();
    assert_eq!(path(&c).await, "/portal/login");
    shot(&c, "portal-login-en-1400").await;
    fill(&c, "key", &secret).await;
    c.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Id("balance")).await.unwrap();
    let portal = text(&c).await;
    assert!(
        portal.contains("5.00/day") && portal.contains("gpt-5.1-codex"),
        "{portal}"
    );
    assert!(!portal.contains("pool-a"), "nothing of the operator's");
    shot(&c, "portal-en-1400").await;

    c.goto(&format!("{site}{user_path}")).await.unwrap();
    let user_page = text(&c).await;
    assert!(
        user_page.contains("laptop") && user_page.contains("5.00/day"),
        "{user_page}"
    );
    assert!(
        !c.source().await.unwrap().contains(&secret),
        "shown once only"
    );
    shot(&c, "user-en-1400").await;
    c.goto(&format!("{site}/admin/users")).await.unwrap();
    shot(&c, "users-en-1400").await;
    c.goto(&format!("{site}/admin/keys")).await.unwrap();
    shot(&c, "keys-en-1400").await;
    c.goto(&format!("{site}/admin/prices")).await.unwrap();
    assert!(text(&c).await.contains("gpt-5") || text(&c).await.contains("*"));
    shot(&c, "prices-en-1400").await;
    c.goto(&format!("{site}/admin/audit")).await.unwrap();
    let audit = text(&c).await;
    assert!(
        audit.contains("key.create") && audit.contains("console session"),
        "{audit}"
    );
    assert!(!c.source().await.unwrap().contains(&secret));
    shot(&c, "audit-en-1400").await;

    // Two days' and a season's traffic (made up, through the real stream and ledger): the
    // dashboard charts it by hour and by day, and the request made above is in it too.
    let traffic = dashboard_traffic(up.id);
    let made = traffic.len() as u64;
    gateway_tests::put_on_stream(&h, traffic).await;
    h.wait_ingested(1 + made).await;
    c.goto(&format!("{site}/admin/")).await.unwrap();
    c.wait()
        .for_element(Locator::Id("total-requests"))
        .await
        .unwrap();
    let total = c
        .find(Locator::Id("total-requests"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_ne!(total, "0", "the last 48 hours had traffic");
    assert!(fits(&c).await);
    shot(&c, "dashboard-en-1400").await;
    c.find(Locator::LinkText("90 days"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Id("by-upstream"))
        .await
        .unwrap();
    assert!(text(&c).await.contains("none reached"));
    shot(&c, "dashboard-90d-en-1400").await;
    c.goto(&format!("{site}/admin/?window=90d#by-model"))
        .await
        .unwrap();
    shot(&c, "dashboard-tables-en-1400").await;
    c.goto(&format!("{site}/admin/?window=90d")).await.unwrap();
    c.find(Locator::LinkText("gpt-5-mini"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Css(".notice")).await.unwrap();
    assert!(text(&c).await.contains("Only Model: gpt-5-mini"));
    shot(&c, "dashboard-model-en-1400").await;

    // The switch: Chinese, and it sticks.
    c.goto(&format!("{site}/admin/upstreams")).await.unwrap();
    c.find(Locator::Css("a.lang"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The same address in the other language: wait for its heading.
    c.wait()
        .for_element(Locator::XPath("//h1[contains(., '上游账号池')]"))
        .await
        .unwrap();
    c.goto(&format!("{site}/admin/upstreams/new"))
        .await
        .unwrap();
    assert!(text(&c).await.contains("添加上游"));
    shot(&c, "upstream-new-zh-1400").await;
    c.goto(&format!("{site}/admin/upstreams")).await.unwrap();
    shot(&c, "upstreams-zh-1400").await;
    assert!(fits(&c).await);
    c.goto(&format!("{site}{user_path}")).await.unwrap();
    shot(&c, "user-zh-1400").await;
    c.goto(&format!("{site}/admin/keys")).await.unwrap();
    shot(&c, "keys-zh-1400").await;
    assert!(fits(&c).await);
    c.goto(&format!("{site}/admin/audit")).await.unwrap();
    shot(&c, "audit-zh-1400").await;
    c.goto(&format!("{site}/admin/usage")).await.unwrap();
    shot(&c, "usage-zh-1400").await;
    c.goto(&format!("{site}/admin/")).await.unwrap();
    assert!(text(&c).await.contains("缓存命中率"));
    assert!(fits(&c).await);
    shot(&c, "dashboard-zh-1400").await;
    c.close().await.unwrap();

    // A 390-px phone whose language is Chinese: every page fits its width.
    let phone = driver.browser(390, 844, "zh-CN").await;
    phone.goto(&format!("{site}/admin/login")).await.unwrap();
    assert!(text(&phone).await.contains("管理令牌"));
    shot(&phone, "login-zh-390").await;
    sign_in(&phone, &site, &token).await;
    for (page, name) in [
        ("/admin/".to_owned(), "dashboard-zh-390"),
        ("/admin/?window=90d".to_owned(), "dashboard-90d-zh-390"),
        ("/admin/#by-upstream".to_owned(), "dashboard-tables-zh-390"),
        ("/admin/upstreams".to_owned(), "upstreams-zh-390"),
        ("/admin/upstreams/new".to_owned(), "upstream-new-zh-390"),
        (
            format!("/admin/upstreams/{}/edit", up.id),
            "upstream-edit-zh-390",
        ),
        (
            format!("/admin/upstreams/{}/delete", up.id),
            "upstream-delete-zh-390",
        ),
        ("/admin/users".to_owned(), "users-zh-390"),
        (user_path.clone(), "user-zh-390"),
        ("/admin/keys".to_owned(), "keys-zh-390"),
        ("/admin/keys/new".to_owned(), "key-new-zh-390"),
        ("/admin/prices".to_owned(), "prices-zh-390"),
        ("/admin/usage".to_owned(), "usage-zh-390"),
        ("/admin/audit".to_owned(), "audit-zh-390"),
    ] {
        phone.goto(&format!("{site}{page}")).await.unwrap();
        assert!(fits(&phone).await, "{page} scrolls sideways on a phone");
        shot(&phone, name).await;
    }
    phone.goto(&format!("{site}/portal/login")).await.unwrap();
    fill(&phone, "key", &secret).await;
    phone
        .find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    phone
        .wait()
        .for_element(Locator::Id("balance"))
        .await
        .unwrap();
    assert!(text(&phone).await.contains("最近的请求"));
    assert!(fits(&phone).await, "the portal scrolls sideways on a phone");
    shot(&phone, "portal-zh-390").await;
    phone.close().await.unwrap();
}
