//! The README's quick start, followed as written: the run command's arguments go to the real
//! CLI (the gateway runs in-process on free ports, its data directory under a temporary HOME),
//! every line of the quick-start block runs in order — shell expansion by `sh`, `gatewayctl`
//! lines through the real `gatewayctl` parser, `curl` for real — against the mock upstream.
//! Only placeholders are substituted: the pool URL, the printed secret, the ports.

use std::{
    collections::HashMap,
    io::Write,
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use clap::Parser;
use gateway_tests::{EVENT_DEADLINE, MockUpstream};
use gatewayctl::Cli;
use tokio::sync::Notify;

/// Standalone's stdout, readable while it runs.
#[derive(Clone, Default)]
struct Captured {
    bytes: Arc<Mutex<Vec<u8>>>,
    written: Arc<Notify>,
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.lock().unwrap().extend_from_slice(buf);
        self.written.notify_waiters();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.written.notify_waiters();
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }
}

/// The value after `label` on the banner line that has it.
fn banner_value(banner: &str, label: &str) -> String {
    banner
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("banner lacks {label:?}:\n{banner}"))
}

/// What `sh` makes of `words`: one argument per word, after quoting and expansion.
fn shell_words(words: &str, env: &HashMap<String, String>, home: &str) -> Vec<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("printf '%s\\0' {words}"))
        .env("HOME", home)
        .envs(env)
        .output()
        .expect("sh");
    assert!(out.status.success(), "sh could not expand {words:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .split('\0')
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Waits until `GET /v1/models` with `key` answers 200.
async fn key_is_live(http: &str, key: &str) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let request = http::Request::get(format!("{http}/v1/models"))
            .header("authorization", format!("Bearer {key}"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        if client
            .request(request)
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the key was not live within a second"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_quick_start_works_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let quick_start = &readme[readme
        .find("## Quick start")
        .expect("a Quick start section")..];
    let run_line = quick_start
        .lines()
        .find(|l| l.contains("-- standalone"))
        .expect("the run command");
    let block = quick_start
        .split("<!-- quickstart:begin -->")
        .nth(1)
        .and_then(|b| b.split("<!-- quickstart:end -->").next())
        .expect("quickstart markers");
    let lines: Vec<&str> = block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("```") && !l.starts_with('#'))
        .collect();

    let home =
        std::env::temp_dir().join(format!("cgw-quickstart-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&home).unwrap();
    let home_str = home.display().to_string();
    let mock = MockUpstream::start().await;

    // The run command, with the test's own data directory and free ports.
    let run_args = run_line.split(" -- ").nth(1).expect("cargo run -- <args>");
    let mut args = vec!["gatewayctl".to_owned()];
    args.extend(run_args.split_whitespace().map(str::to_owned));
    args.extend([
        "--data-dir".into(),
        home.join(".codex-gateway").display().to_string(),
        "--grpc-addr".into(),
        "127.0.0.1:0".into(),
        "--listen-addr".into(),
        "127.0.0.1:0".into(),
    ]);
    let cli = Cli::try_parse_from(&args).unwrap();
    let started = std::time::Instant::now();
    let out = Captured::default();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut gateway_out = out.clone();
    let gateway = tokio::spawn(async move {
        gatewayctl::run_until(cli, &mut gateway_out, async {
            let _ = stop_rx.await;
        })
        .await
    });
    // Until the token's whole line is out: the banner arrives in several writes, and the label
    // can be there before the token after it.
    let token_line_done = |text: &str| {
        text.split_once("admin token:")
            .is_some_and(|(_, rest)| rest.contains('\n'))
    };
    tokio::time::timeout(EVENT_DEADLINE, async {
        loop {
            // Registered before the look, so a write in between is not missed.
            let written = out.written.notified();
            tokio::pin!(written);
            written.as_mut().enable();
            if token_line_done(&out.text()) {
                break;
            }
            written.await;
        }
    })
    .await
    .expect("standalone prints its banner");
    // What each step takes, for the README's walk-through (run with --nocapture).
    eprintln!(
        "quick start: {:>6} ms  standalone starts (empty data directory)",
        started.elapsed().as_millis()
    );
    let banner = out.text();
    let http = banner_value(&banner, "OpenAI-compatible endpoint:")
        .trim_end_matches("/v1")
        .to_owned();
    let grpc = banner_value(&banner, "admin API (gRPC):");
    // The console is on the data plane's port, signed into with the printed admin token.
    let console = banner_value(&banner, "web console:");
    assert!(
        console.starts_with(&format!("{http}/admin/")),
        "{console} on {http}"
    );
    let console_addr: std::net::SocketAddr = http
        .trim_start_matches("http://")
        .parse()
        .expect("the endpoint's address");
    let mut browser = gateway_tests::console::ConsoleClient::new(console_addr);
    let login = browser.get("/admin/login").await;
    assert_eq!(login.status, 200, "{}", login.body);
    let printed_token = banner_value(&banner, "admin token:");
    let signed = browser
        .post("/admin/login", &[("token", &printed_token)])
        .await;
    assert_eq!(signed.location(), Some("/admin/"), "{}", signed.body);
    assert_eq!(browser.get("/admin/").await.status, 200);

    let mut env: HashMap<String, String> = HashMap::new();
    let mut secret = None;
    let mut streamed = String::new();
    let mut usage_listed = false;
    for typed in lines {
        let step = std::time::Instant::now();
        let line = typed.replace("https://pool.example.com/openai", &mock.base_url("pool"));
        if let Some(assignment) = line.strip_prefix("export ") {
            let (name, value) = assignment.split_once('=').expect("export NAME=VALUE");
            let value = if value == "cgw-..." {
                secret
                    .clone()
                    .expect("key create printed the secret before it is used")
            } else {
                shell_words(value, &env, &home_str).join(" ")
            };
            env.insert(name.to_owned(), value);
        } else if line.starts_with("alias ") {
            // The CLI runs in-process; the alias only names the binary.
        } else if let Some(rest) = line.strip_prefix("gatewayctl ") {
            let mut argv = vec![
                "gatewayctl".to_owned(),
                "--endpoint".to_owned(),
                grpc.clone(),
                "--token".to_owned(),
                env.get("GATEWAY_ADMIN_TOKEN")
                    .cloned()
                    .expect("GATEWAY_ADMIN_TOKEN exported"),
            ];
            argv.extend(shell_words(rest, &env, &home_str));
            let is_usage = rest.starts_with("usage list");
            let run = || {
                let argv = argv.clone();
                async move {
                    let mut buf = Vec::new();
                    gatewayctl::run(Cli::try_parse_from(argv).unwrap(), &mut buf)
                        .await
                        .map(|()| String::from_utf8(buf).unwrap())
                }
            };
            let mut output = run()
                .await
                .unwrap_or_else(|e| panic!("`{line}` failed: {e}"));
            if is_usage {
                // Usage reaches the ledger a moment after the stream ends, over the
                // ReportUsage RPC inside the standalone process: a user re-running the
                // command sees it; so does this loop.
                let deadline = tokio::time::Instant::now() + EVENT_DEADLINE;
                while !output.contains("completed") && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    output = run().await.unwrap();
                }
                assert!(
                    output.contains("gpt-5.1-codex") && output.contains("completed"),
                    "{output}"
                );
                usage_listed = true;
            }
            if rest.starts_with("key create") {
                let json: serde_json::Value =
                    serde_json::from_str(&output).expect("key create -o json");
                secret = json["secret"].as_str().map(str::to_owned);
            }
        } else if line.starts_with("curl ") {
            // A person types slower than this test: first wait until the new key is live on
            // the data plane (it is, within a second of `key create`).
            let key = env
                .get("GATEWAY_API_KEY")
                .cloned()
                .expect("GATEWAY_API_KEY exported");
            key_is_live(&http, &key).await;
            let line = line.replace("http://127.0.0.1:12321", &http);
            let out = Command::new("sh")
                .arg("-c")
                .arg(&line)
                .env("HOME", &home_str)
                .envs(&env)
                .output()
                .expect("curl");
            assert!(
                out.status.success(),
                "`{line}` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            streamed = String::from_utf8_lossy(&out.stdout).into_owned();
        } else {
            panic!("the quick-start test does not know how to follow {line:?}");
        }
        eprintln!("quick start: {:>6} ms  {typed}", step.elapsed().as_millis());
    }
    assert!(
        streamed.contains("event: response.completed"),
        "curl streamed: {streamed}"
    );
    assert!(usage_listed, "the quick start ends by listing usage");

    // Billed exactly as the fleet bills: mock usage 1200 in (1000 cached), 300 out at
    // 1.25 / 0.125 / 10 per 1M → 250 + 125 + 3000 µ.
    let mut buf = Vec::new();
    gatewayctl::run(
        Cli::try_parse_from([
            "gatewayctl",
            "--endpoint",
            &grpc,
            "--token",
            &env["GATEWAY_ADMIN_TOKEN"],
            "usage",
            "list",
            "-o",
            "json",
        ])
        .unwrap(),
        &mut buf,
    )
    .await
    .unwrap();
    let usage: serde_json::Value = serde_json::from_slice(&buf).unwrap();
    assert_eq!(usage[0]["cost_micros"], 3_375);
    assert_eq!(usage[0]["cached_tokens"], 1_000);
    let recorded = mock.recorded();
    assert_eq!(
        recorded
            .iter()
            .filter(|r| r.method == http::Method::POST)
            .count(),
        1
    );
    assert!(
        recorded
            .iter()
            .any(|r| r.authorization() == "Bearer sk-your-pool-key")
    );

    let _ = stop_tx.send(());
    gateway.await.unwrap().unwrap();
    // Data survives a restart: same directory, same token, same ledger.
    let token = std::fs::read_to_string(home.join(".codex-gateway/admin-token")).unwrap();
    assert_eq!(token.trim(), env["GATEWAY_ADMIN_TOKEN"]);
    assert!(home.join(".codex-gateway/gateway.db").exists());
    std::fs::remove_dir_all(&home).unwrap();
}
