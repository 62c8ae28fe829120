//! The web console over HTTP: sign-in and sessions, CSRF and origin checks, escaping, and the
//! upstreams page end to end — what a form does is what the admin API then holds.

use gateway_proto::v1;
use gateway_tests::{
    Harness,
    console::{ConsoleClient, Page},
};

/// The text of HTML as a reader sees it (the entities askama writes, decoded).
fn unescape(html: &str) -> String {
    html.replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&#60;", "<")
        .replace("&gt;", ">")
        .replace("&#62;", ">")
        .replace("&amp;", "&")
        .replace("&#38;", "&")
}

/// POSTs `fields` to `path`, from the console's origin or `origin`.
async fn submit(
    c: &mut ConsoleClient,
    path: &str,
    fields: Vec<(&'static str, String)>,
    origin: Option<&str>,
) -> Page {
    let refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    match origin {
        Some(o) => c.post_from(path, &refs, o).await,
        None => c.post(path, &refs).await,
    }
}

/// A client signed in with the admin token; and the CSRF token its pages carry.
async fn signed_in(h: &Harness) -> (ConsoleClient, String) {
    let mut c = ConsoleClient::new(h.console_addr());
    let token = h.admin_token.expose().to_owned();
    let signed = c.post("/admin/login", &[("token", &token)]).await;
    assert_eq!(signed.status, 303, "{}", signed.body);
    assert_eq!(signed.location(), Some("/admin/"));
    let page = c.get("/admin/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = page.csrf().expect("a signed-in page carries a CSRF token");
    (c, csrf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_needs_a_session_and_signing_out_ends_it_everywhere() {
    let h = Harness::start(0).await;
    let mut c = ConsoleClient::new(h.console_addr());
    for path in ["/admin/", "/admin/upstreams", "/admin/upstreams/new"] {
        let page = c.get(path).await;
        assert_eq!(page.status, 303, "{path}");
        assert_eq!(page.location(), Some("/admin/login"), "{path}");
    }
    let login = c.get("/admin/login").await;
    assert_eq!(login.status, 200);
    assert!(login.body.contains("name=\"token\""), "{}", login.body);
    let csp = login.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(!login.body.contains("<script"), "no script at all");

    let wrong = c.post("/admin/login", &[("token", "not-the-token")]).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("Wrong token."), "{}", wrong.body);
    assert!(c.cookies().is_empty(), "no session for a wrong token");

    let (mut c, csrf) = signed_in(&h).await;
    let cookie = c.cookie_header();
    assert!(cookie.starts_with("cgw_session="), "{cookie}");
    // The session cookie is HttpOnly and SameSite=Strict.
    let mut fresh = ConsoleClient::new(h.console_addr());
    let token = h.admin_token.expose().to_owned();
    let answer = fresh.post("/admin/login", &[("token", &token)]).await;
    let set = answer.headers["set-cookie"].to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "plain HTTP: no Secure flag");

    // Signing out needs the form's token; then the same cookie opens nothing.
    let kept = c.cookies();
    let refused = c.post("/admin/logout", &[("csrf", "forged")]).await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        c.get("/admin/upstreams").await.status,
        200,
        "still signed in"
    );
    // Behind a proxy the browser's origin is the proxy's host, which it forwards.
    c.extra = vec![("x-forwarded-host".into(), "gateway.example.com".into())];
    let foreign = c
        .post_from("/admin/logout", &[("csrf", &csrf)], "https://evil.example")
        .await;
    assert_eq!(foreign.status, 403, "another origin is refused");
    let out = c
        .post_from(
            "/admin/logout",
            &[("csrf", &csrf)],
            "https://gateway.example.com",
        )
        .await;
    assert_eq!(out.status, 303);
    assert_eq!(out.location(), Some("/admin/login"));
    c.set_cookies(kept);
    let after = c.get("/admin/upstreams").await;
    assert_eq!(after.status, 303, "the old cookie is dead server-side");
    // The other session is untouched.
    assert_eq!(fresh.get("/admin/upstreams").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_attempts_are_limited_per_address() {
    let h = Harness::start(0).await;
    let mut c = ConsoleClient::new(h.console_addr());
    let mut statuses = Vec::new();
    for _ in 0..11 {
        statuses.push(
            c.post("/admin/login", &[("token", "guess")])
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(statuses[..10], [401; 10]);
    assert_eq!(statuses[10], 429);
    let token = h.admin_token.expose().to_owned();
    let right = c.post("/admin/login", &[("token", &token)]).await;
    assert_eq!(
        right.status, 429,
        "even the right token waits out the minute"
    );
    assert!(
        right.body.contains("Too many sign-in attempts"),
        "{}",
        right.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_added_in_the_console_has_every_field_and_its_key_is_never_shown() {
    let h = Harness::start(0).await;
    let (mut c, csrf) = signed_in(&h).await;
    let empty = c.get("/admin/upstreams").await;
    assert!(empty.body.contains("No upstreams yet"), "{}", empty.body);
    let new = c.get("/admin/upstreams/new").await;
    assert_eq!(new.status, 200);
    for field in [
        "name",
        "base_url",
        "api_key",
        "priority",
        "weight",
        "max_retries",
        "timeout",
        "probe_path",
        "models",
        "enabled",
    ] {
        assert!(
            new.body.contains(&format!("name=\"{field}\"")),
            "form lacks {field}"
        );
    }

    let base = h.mock.base_url("pool-a");
    let secret = "sk-console-secret-4242";
    let name = "<script>alert(1)</script>";
    let fields = |csrf: &str| {
        vec![
            ("csrf", csrf.to_owned()),
            ("name", name.to_owned()),
            ("base_url", base.clone()),
            ("api_key", secret.to_owned()),
            ("priority", "1".to_owned()),
            ("weight", "3".to_owned()),
            ("max_retries", "2".to_owned()),
            ("timeout", "45".to_owned()),
            ("probe_path", "/v1/models".to_owned()),
            ("models", "gpt-5, gpt-5-mini".to_owned()),
            ("enabled", "on".to_owned()),
        ]
    };
    // A form without the session's token, or from another origin, changes nothing.
    let forged = submit(&mut c, "/admin/upstreams", fields("forged"), None).await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    let cross = submit(
        &mut c,
        "/admin/upstreams",
        fields(&csrf),
        Some("http://evil.example"),
    )
    .await;
    assert_eq!(cross.status, 403, "{}", cross.body);
    let mut admin = h.admin().await;
    let listed = admin
        .list_upstreams(v1::ListUpstreamsRequest {})
        .await
        .unwrap()
        .into_inner()
        .upstreams;
    assert!(listed.is_empty(), "refused forms created nothing");

    // The API's own validation and message: a base URL ending in /v1.
    let mut bad = fields(&csrf);
    bad[2].1 = format!("{base}/v1");
    let refused = submit(&mut c, "/admin/upstreams", bad, None).await;
    assert_eq!(refused.status, 422);
    let api_error = admin
        .create_upstream(v1::CreateUpstreamRequest {
            name: "x".into(),
            base_url: format!("{base}/v1"),
            api_key: "sk-x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        unescape(&refused.body).contains(api_error.message()),
        "the API's message {:?} in {}",
        api_error.message(),
        refused.body
    );
    assert!(
        !refused.body.contains(secret),
        "the key is not sent back into the form"
    );

    let created = submit(&mut c, "/admin/upstreams", fields(&csrf), None).await;
    assert_eq!(created.status, 303, "{}", created.body);
    assert_eq!(created.location(), Some("/admin/upstreams?done=saved"));
    let up = admin
        .list_upstreams(v1::ListUpstreamsRequest {})
        .await
        .unwrap()
        .into_inner()
        .upstreams
        .remove(0);
    assert_eq!(
        (
            up.name.as_str(),
            up.priority,
            up.weight,
            up.max_retries,
            up.timeout_ms,
            up.enabled
        ),
        (name, 1, 3, 2, 45_000, true),
        "no field is dropped on the way"
    );
    assert_eq!(up.models, ["gpt-5", "gpt-5-mini"]);

    let list = c.get("/admin/upstreams?done=saved").await;
    assert!(list.body.contains("Saved."), "{}", list.body);
    assert!(unescape(&list.body).contains(name), "{}", list.body);
    assert!(!list.body.contains(name), "the name renders as text");
    assert!(list.body.contains(&up.api_key_hint), "the hint is shown");
    assert!(!list.body.contains(secret), "the key never is");
    assert!(list.body.contains("Tier (0 = preferred)"), "{}", list.body);

    // Test health: status, latency and the probed URL.
    let probe = c
        .post(
            &format!("/admin/upstreams/{}/test", up.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(probe.status, 200, "{}", probe.body);
    assert!(
        probe.body.contains("healthy") && probe.body.contains(" ms"),
        "{}",
        probe.body
    );
    assert!(probe.body.contains("/v1/models"), "{}", probe.body);
    assert!(!probe.body.contains(secret));

    // Edit with the key left empty: the fields change, the key stays.
    let edit = c.get(&format!("/admin/upstreams/{}/edit", up.id)).await;
    assert_eq!(edit.status, 200);
    assert!(
        edit.body.contains("value=\"45\""),
        "timeout in seconds: {}",
        edit.body
    );
    assert!(!edit.body.contains(secret));
    let mut changed = fields(&csrf);
    changed[1].1 = "pool-a".into();
    changed[3].1 = String::new();
    changed[5].1 = "7".into();
    let path = format!("/admin/upstreams/{}", up.id);
    let saved = submit(&mut c, &path, changed, None).await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let got = admin
        .get_upstream(v1::GetUpstreamRequest { id: up.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((got.name.as_str(), got.weight), ("pool-a", 7));
    assert_eq!(
        got.api_key_hint, up.api_key_hint,
        "an empty key field keeps the key"
    );

    // Disable, then delete after the confirmation page.
    let toggled = c
        .post(
            &format!("/admin/upstreams/{}/enabled", up.id),
            &[("csrf", &csrf), ("enabled", "false")],
        )
        .await;
    assert_eq!(toggled.status, 303);
    let got = admin
        .get_upstream(v1::GetUpstreamRequest { id: up.id })
        .await
        .unwrap()
        .into_inner();
    assert!(!got.enabled);
    let confirm = c.get(&format!("/admin/upstreams/{}/delete", up.id)).await;
    assert!(
        confirm.body.contains("Delete this upstream?"),
        "{}",
        confirm.body
    );
    let deleted = c
        .post(
            &format!("/admin/upstreams/{}/delete", up.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(deleted.location(), Some("/admin/upstreams?done=deleted"));
    assert!(
        admin
            .list_upstreams(v1::ListUpstreamsRequest {})
            .await
            .unwrap()
            .into_inner()
            .upstreams
            .is_empty()
    );

    // The audit log names the console session for every change it made.
    let audit = admin
        .list_audit(v1::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "upstream.delete",
            "upstream.update",
            "upstream.update",
            "upstream.create"
        ]
    );
    for e in &audit {
        assert_eq!(e.principal, "console session", "{e:?}");
        assert!(e.source.starts_with("127.0.0.1:"), "{e:?}");
        assert!(!e.detail.contains(secret));
    }
    assert_eq!(c.get("/admin/upstreams/999999/edit").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_speaks_chinese_by_accept_language_and_the_switch_sticks() {
    let h = Harness::start(0).await;
    let mut c = ConsoleClient::new(h.console_addr());
    c.extra = vec![("accept-language".into(), "zh-CN,zh;q=0.9,en;q=0.5".into())];
    let login = c.get("/admin/login").await;
    assert!(login.body.contains("lang=\"zh\""), "{}", login.body);
    assert!(
        login.body.contains("管理令牌") && login.body.contains("登录"),
        "{}",
        login.body
    );
    let switched = c.get("/admin/lang?to=en&back=/admin/login").await;
    assert_eq!(switched.status, 303);
    assert_eq!(switched.location(), Some("/admin/login"));
    let english = c.get("/admin/login").await;
    assert!(
        english.body.contains("Admin token"),
        "the switch beats Accept-Language"
    );
    // The switch only returns to our own pages.
    let away = c.get("/admin/lang?to=zh&back=https://evil.example/").await;
    assert_eq!(away.location(), Some("/admin/"));
    let away = c.get("/admin/lang?to=zh&back=//evil.example/admin").await;
    assert_eq!(away.location(), Some("/admin/"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_keys_are_run_from_the_console() {
    let h = Harness::start(0).await;
    let (mut c, csrf) = signed_in(&h).await;
    let mut admin = h.admin().await;

    let name = "<img src=x onerror=alert(1)> ada";
    let created = c
        .post(
            "/admin/users",
            &[
                ("csrf", &csrf),
                ("name", name),
                ("balance", "10.00"),
                ("multiplier", "1.5"),
            ],
        )
        .await;
    assert_eq!(created.status, 303, "{}", created.body);
    let location = created.location().unwrap().to_owned();
    let id: i64 = location
        .trim_start_matches("/admin/users/")
        .trim_end_matches("?done=saved")
        .parse()
        .unwrap();
    let user = admin
        .get_user(v1::GetUserRequest { id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (user.balance_micros, user.multiplier_ppm),
        (10_000_000, 1_500_000)
    );
    let page = c.get(&location).await;
    assert!(
        page.body.contains("Saved.") && page.body.contains("10.00"),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("<img src=x"),
        "the name renders as text"
    );
    assert!(unescape(&page.body).contains(name));

    // A top-up's amount is checked here, its rules are the API's.
    let bad = c
        .post(
            &format!("/admin/users/{id}/balance"),
            &[("csrf", &csrf), ("amount", "ten"), ("reason", "x")],
        )
        .await;
    assert_eq!(bad.status, 422);
    let zero = c
        .post(
            &format!("/admin/users/{id}/balance"),
            &[("csrf", &csrf), ("amount", "0"), ("reason", "x")],
        )
        .await;
    assert_eq!(zero.status, 422);
    assert!(
        zero.body.contains("amount must not be zero"),
        "{}",
        zero.body
    );
    let refund = c
        .post(
            &format!("/admin/users/{id}/balance"),
            &[("csrf", &csrf), ("amount", "-2.50"), ("reason", "refund")],
        )
        .await;
    assert_eq!(refund.status, 303);
    let user = admin
        .get_user(v1::GetUserRequest { id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(user.balance_micros, 7_500_000);

    // Found by name, in any case.
    let found = c.get("/admin/users?search=ADA").await;
    assert!(
        found.body.contains(&format!("id=\"user-{id}\"")),
        "{}",
        found.body
    );
    let none = c.get("/admin/users?search=nobody").await;
    assert!(!none.body.contains(&format!("id=\"user-{id}\"")));

    // A key: its secret once, its limits and caps as typed.
    let form = c.get(&format!("/admin/keys/new?user={id}")).await;
    assert!(
        form.body.contains(&format!("value=\"{id}\"")),
        "the user is filled in"
    );
    let bad_cap = c
        .post(
            "/admin/keys",
            &[
                ("csrf", &csrf),
                ("user", &id.to_string()),
                ("spend_limit", "5.00/year"),
            ],
        )
        .await;
    assert_eq!(bad_cap.status, 422);
    assert!(
        unescape(&bad_cap.body).contains("5.00/year"),
        "{}",
        bad_cap.body
    );
    let made = c
        .post(
            "/admin/keys",
            &[
                ("csrf", &csrf),
                ("user", &id.to_string()),
                ("name", "laptop"),
                ("rpm", "60"),
                ("models", "gpt-5.1-codex"),
                ("spend_limit", "50.00, 5.00/day"),
            ],
        )
        .await;
    assert_eq!(made.status, 200, "{}", made.body);
    let at = made.body.find("value=\"cgw-").expect("the secret is shown") + "value=\"".len();
    let secret = made.body[at..made.body[at..].find('"').unwrap() + at].to_owned();
    assert!(made.body.contains("it is not shown again"));
    let keys = admin
        .list_keys(v1::ListKeysRequest {
            user_id: Some(id),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!((key.name.as_str(), key.rpm), ("laptop", Some(60)));
    assert_eq!(key.models, ["gpt-5.1-codex"]);
    assert_eq!(key.spend_limits.len(), 2);
    assert!(secret.starts_with(&key.prefix), "{secret} / {}", key.prefix);
    let user_page = c.get(&format!("/admin/users/{id}")).await;
    assert!(user_page.body.contains(&format!("id=\"key-{}\"", key.id)));
    assert!(
        !user_page.body.contains(&secret),
        "the secret is never shown again"
    );
    let listed = c.get("/admin/keys").await;
    assert!(
        listed.body.contains("5.00/day: 0.00 spent, 5.00 left"),
        "{}",
        listed.body
    );
    assert!(!listed.body.contains(&secret));

    // Revoke after confirming.
    let confirm = c.get(&format!("/admin/keys/{}/revoke", key.id)).await;
    assert!(confirm.body.contains("Revoke this key?"));
    let revoked = c
        .post(
            &format!("/admin/keys/{}/revoke", key.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(
        revoked.location(),
        Some(format!("/admin/users/{id}?done=saved").as_str())
    );
    let key = admin
        .get_key(v1::GetKeyRequest { id: key.id })
        .await
        .unwrap()
        .into_inner();
    assert!(key.revoked);

    // Fifty users a page, and the next page continues after the last one shown.
    for i in 0..55 {
        admin
            .create_user(v1::CreateUserRequest {
                name: format!("bulk-{i:02}"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let first = c.get("/admin/users").await;
    assert_eq!(first.body.matches("id=\"user-").count(), 50);
    let body = unescape(&first.body);
    let at = body
        .find("href=\"/admin/users?search=&cursor=")
        .expect("a next page")
        + "href=\"".len();
    let next = body[at..body[at..].find('"').unwrap() + at].to_owned();
    let second = c.get(&next).await;
    assert_eq!(second.body.matches("id=\"user-").count(), 6);
    assert!(second.body.contains("bulk-54") && !second.body.contains("bulk-00"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prices_are_set_and_every_change_is_in_the_audit_page() {
    let h = Harness::start(0).await;
    let (mut c, csrf) = signed_in(&h).await;
    let mut admin = h.admin().await;
    let page = c.get("/admin/prices").await;
    assert!(page.body.contains("No prices yet.") && page.body.contains("value=\"*\""));
    let bad = c
        .post(
            "/admin/prices",
            &[
                ("csrf", &csrf),
                ("model", "*"),
                ("input", "cheap"),
                ("cached_input", "0"),
                ("output", "1"),
            ],
        )
        .await;
    assert_eq!(bad.status, 422);
    assert!(
        unescape(&bad.body).contains("input \"cheap\""),
        "{}",
        bad.body
    );
    let set = c
        .post(
            "/admin/prices",
            &[
                ("csrf", &csrf),
                ("model", "gpt-5.1-codex"),
                ("input", "1.25"),
                ("cached_input", "0.125"),
                ("output", "10"),
            ],
        )
        .await;
    assert_eq!(set.location(), Some("/admin/prices?done=saved"));
    let prices = admin
        .list_prices(v1::ListPricesRequest {})
        .await
        .unwrap()
        .into_inner()
        .prices;
    assert_eq!(prices.len(), 1);
    assert_eq!(
        (
            prices[0].input_micros,
            prices[0].cached_input_micros,
            prices[0].output_micros
        ),
        (1_250_000, 125_000, 10_000_000)
    );
    let listed = c.get("/admin/prices?done=saved").await;
    assert!(listed.body.contains("id=\"price-gpt-5.1-codex\"") && listed.body.contains("10.00"));

    // A change over gRPC and one from the console, both on the audit page, newest first.
    admin
        .create_user(v1::CreateUserRequest {
            name: "grpc-user".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let audit = unescape(&c.get("/admin/audit").await.body);
    let user_at = audit.find("user.create").expect("the gRPC change");
    let price_at = audit.find("price.set").expect("the console's change");
    assert!(user_at < price_at, "newest first");
    assert!(audit.contains("admin token") && audit.contains("console session"));
    assert!(audit.contains("\"output_micros\":10000000"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_page_filters_and_pages_and_its_csv_is_the_ledger() {
    let mut h = Harness::start(0).await;
    // 25,000 events through the real stream and ledger: users 1-5, every 50th one failed.
    let events: Vec<v1::UsageEvent> = (0..25_000i64)
        .map(|i| {
            let mut e = gateway_tests::bench_usage_event(1 + i % 5, 100 + i % 5);
            e.started_at_ms -= i * 1000;
            if i % 50 == 0 {
                e.status = v1::UsageStatus::UpstreamError as i32;
            }
            if i == 7 {
                e.model = "<b>odd,\"model\"</b>".into();
            }
            e
        })
        .collect();
    gateway_tests::put_on_stream(&h, events).await;
    h.wait_ingested(25_000).await;
    let (mut c, _) = signed_in(&h).await;

    let first = c.get("/admin/usage").await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.body.matches("<tr>").count() - 1,
        50,
        "50 events a page"
    );
    let body = unescape(&first.body);
    let at = body
        .find("href=\"/admin/usage?&cursor=")
        .or_else(|| body.find("href=\"/admin/usage?cursor="));
    let at = at.expect("a next page") + "href=\"".len();
    let next = body[at..body[at..].find('"').unwrap() + at].to_owned();
    let second = c.get(&next).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.body.matches("<tr>").count() - 1, 50);

    let failed = c.get("/admin/usage?status=upstream_error&user=1").await;
    assert_eq!(failed.status, 200, "{}", failed.body);
    assert!(
        failed
            .body
            .contains("health-unhealthy\">upstream_error</span>")
    );
    assert!(
        !failed.body.contains("pill on\">completed</span>"),
        "only the status asked for"
    );
    let odd = c.get("/admin/usage?user=3").await;
    assert!(!odd.body.contains("<b>odd"), "a model name renders as text");
    let bad = c.get("/admin/usage?user=alice").await;
    assert_eq!(bad.status, 422);
    assert!(unescape(&bad.body).contains("user must be an id, got \"alice\""));

    // The CSV of no filter is the whole ledger, each event once; of a filter, its events.
    let csv = c.get("/admin/usage.csv").await;
    assert_eq!(csv.status, 200);
    assert_eq!(csv.headers["content-type"], "text/csv; charset=utf-8");
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(lines[0], gateway_proto::csv::usage_columns().join(","));
    let id_column = gateway_proto::csv::usage_columns()
        .iter()
        .position(|c| c == "id")
        .unwrap();
    let mut exported: Vec<String> = lines[1..]
        .iter()
        .map(|l| l.split(',').nth(id_column).unwrap().to_owned())
        .collect();
    exported.sort();
    let pool = h.db.pool().await;
    let mut ledger: Vec<String> = sqlx::query_scalar("SELECT CAST(id AS TEXT) FROM usage_events")
        .fetch_all(&pool)
        .await
        .unwrap();
    ledger.sort();
    assert_eq!(exported.len(), 25_000);
    assert_eq!(exported, ledger, "the CSV is the ledger, each event once");
    assert!(
        csv.body.contains("\"<b>odd,\"\"model\"\"</b>\""),
        "CSV quoting"
    );

    let one = c.get("/admin/usage.csv?user=1&status=upstream_error").await;
    let rows = one.body.lines().count() - 1;
    let expected: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM usage_events WHERE user_id = 1 AND status = 'upstream_error'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(rows as i64, expected);
    assert!(expected > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_holder_sees_their_key_in_the_portal_and_nothing_else() {
    let mut h = Harness::start(0).await;
    let mut admin = h.admin().await;
    let mine = admin
        .create_user(v1::CreateUserRequest {
            name: "holder".into(),
            balance_micros: 5_000_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let other = admin
        .create_user(v1::CreateUserRequest {
            name: "someone-else".into(),
            balance_micros: 9_000_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (key, secret, _) = h.add_key(mine.id).await;
    let (other_key, _, _) = h.add_key(other.id).await;
    let mut own_event = gateway_tests::bench_usage_event(mine.id, key.id);
    own_event.model = "model-of-mine".into();
    let mut other_event = gateway_tests::bench_usage_event(other.id, other_key.id);
    other_event.model = "model-of-theirs".into();
    gateway_tests::put_on_stream(&h, [own_event, other_event]).await;
    h.wait_ingested(2).await;

    let mut c = ConsoleClient::new(h.console_addr());
    let first = c.get("/portal/").await;
    assert_eq!(first.location(), Some("/portal/login"));
    let wrong = c.post("/portal/login", &[("key", "cgw-not-a-key")]).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("Unknown, revoked or expired key."));
    let signed = c.post("/portal/login", &[("key", &secret)]).await;
    assert_eq!(signed.location(), Some("/portal/"), "{}", signed.body);
    let page = c.get("/portal/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("model-of-mine"), "{}", page.body);
    assert!(
        !page.body.contains("model-of-theirs"),
        "nothing of anyone else"
    );
    assert!(!page.body.contains("someone-else") && !page.body.contains("9.00"));
    assert!(
        !page.body.contains(&secret),
        "the key itself is not shown back"
    );
    assert!(page.body.contains(&key.prefix));

    // A portal session never opens the admin console, under either cookie name.
    let portal_token = c.cookies()["cgw_portal"].clone();
    for name in ["cgw_portal", "cgw_session"] {
        let mut intruder = ConsoleClient::new(h.console_addr());
        intruder.set_cookies(
            [(name.to_owned(), portal_token.clone())]
                .into_iter()
                .collect(),
        );
        let admin_page = intruder.get("/admin/upstreams").await;
        assert_eq!(admin_page.location(), Some("/admin/login"), "{name}");
    }
    // Nor does the admin token open the portal.
    let token = h.admin_token.expose().to_owned();
    let mut c2 = ConsoleClient::new(h.console_addr());
    let by_token = c2.post("/portal/login", &[("key", &token)]).await;
    assert_eq!(by_token.status, 401);

    // A revoked key's session ends with it.
    admin
        .revoke_key(v1::RevokeKeyRequest { id: key.id })
        .await
        .unwrap();
    assert_eq!(c.get("/portal/").await.location(), Some("/portal/login"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_charts_the_rollups_by_hour_and_day_by_model_and_upstream() {
    let mut h = Harness::start(0).await;
    let (pool, _) = h.add_upstream("pool-east", 0, 1).await;
    let hour = 3_600_000;
    let at = |ago_ms: i64, model: &str, upstream: Option<i64>, failed: bool| {
        let mut e = gateway_tests::bench_usage_event(1, 1);
        e.started_at_ms -= ago_ms;
        e.model = model.into();
        e.upstream_id = upstream;
        if failed {
            e.status = v1::UsageStatus::UpstreamError as i32;
        }
        e
    };
    let mut events = Vec::new();
    // In the last 48 hours: 6 through the pool, 2 of them failed.
    for i in 0..6 {
        events.push(at(2 * hour, "gpt-5.1-codex", Some(pool.id), i < 2));
    }
    // Three days ago: 4 that reached no upstream, under a name that must stay text.
    for _ in 0..4 {
        events.push(at(72 * hour, "<script>x</script>", None, false));
    }
    // Long before either window: never shown.
    for _ in 0..5 {
        events.push(at(100 * 24 * hour, "gpt-5", Some(pool.id), false));
    }
    gateway_tests::put_on_stream(&h, events).await;
    h.wait_ingested(15).await;
    let (mut c, _) = signed_in(&h).await;
    let value = |page: &Page, id: &str| {
        let marker = format!("id=\"{id}\">");
        let at = page.body.find(&marker).unwrap_or_else(|| panic!("{id}")) + marker.len();
        page.body[at..at + page.body[at..].find('<').unwrap()].to_owned()
    };

    let hours = c.get("/admin/").await;
    assert_eq!(hours.status, 200, "{}", hours.body);
    assert_eq!(value(&hours, "total-requests"), "6");
    assert_eq!(value(&hours, "total-error-rate"), "33.3 %");
    // Every event had 20,000 of its 24,000 input tokens cached.
    assert_eq!(value(&hours, "total-cache-hit"), "83.3 %");
    assert_eq!(
        hours.body.matches("class=\"bucket\"").count(),
        4 * 48,
        "four charts of 48 hours"
    );
    assert!(hours.body.contains("gpt-5.1-codex") && !hours.body.contains("script&#62;x"));
    assert!(hours.body.contains("pool-east"), "the upstream by name");

    let days = c.get("/admin/?window=90d").await;
    assert_eq!(days.status, 200, "{}", days.body);
    assert_eq!(value(&days, "total-requests"), "10");
    assert_eq!(days.body.matches("class=\"bucket\"").count(), 4 * 90);
    assert!(
        days.body.contains("&#60;script&#62;x&#60;/script&#62;")
            && !days.body.contains("<script>x"),
        "a model name renders as text"
    );
    assert!(
        days.body.contains("none reached"),
        "events that reached no upstream"
    );
    // A hover text names the bucket and its figures.
    assert!(days.body.contains("Errors: 2"), "{}", days.body);

    // A model or an upstream picked from the tables narrows everything to it.
    let one_model = c
        .get("/admin/?window=90d&model=%3Cscript%3Ex%3C%2Fscript%3E")
        .await;
    assert_eq!(value(&one_model, "total-requests"), "4");
    assert_eq!(value(&one_model, "total-error-rate"), "0.0 %");
    let one_upstream = c
        .get(&format!("/admin/?window=90d&upstream={}", pool.id))
        .await;
    assert_eq!(value(&one_upstream, "total-requests"), "6");
    assert!(one_upstream.body.contains("Only"), "says what it shows");
    // Nothing in the window: the figures are zero and the ratios have nothing to divide.
    let unused = c.get("/admin/?upstream=999").await;
    assert_eq!(value(&unused, "total-requests"), "0");
    assert_eq!(value(&unused, "total-cache-hit"), "—");
    assert!(unused.body.contains("No requests in this window yet."));
}
