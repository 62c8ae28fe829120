//! The billing conformance matrix: {responses, chat/completions, completions} × {stream, JSON}
//! × {usage reported, usage missing, client leaves before the first byte, client leaves
//! mid-stream, client leaves right after the terminal event} → exactly one ledger event each,
//! with the expected token split, cost, status and flags. Each case runs as its own user.

use std::{sync::Arc, time::Duration};

use gateway_proto::v1;
use gateway_tests::{Behaviour, Fault, Harness, MockUsage, read_until};
use http_body_util::BodyExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Responses,
    Chat,
    Completions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Reported,
    Missing,
    LeaveBeforeFirstByte,
    LeaveMidStream,
    LeaveAfterTerminal,
}

const USAGE: MockUsage = MockUsage {
    input: 1200,
    cached: 1000,
    output: 300,
    reasoning: 120,
};
/// Prices (µ per 1M): input 1.00, cached 0.10, output 2.00 currency units.
const PRICE: (i64, i64, i64) = (1_000_000, 100_000, 2_000_000);

fn cost(input: i64, cached: i64, output: i64) -> i64 {
    let per_million = (input - cached) * PRICE.0 + cached * PRICE.1 + output * PRICE.2;
    (per_million + 500_000) / 1_000_000
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    status: String,
    input_tokens: i64,
    cached_tokens: i64,
    output_tokens: i64,
    reasoning_tokens: i64,
    cost_micros: i64,
    estimated: bool,
    stream: bool,
    endpoint: String,
}

fn request(api: Api, stream: bool) -> (&'static str, String) {
    match api {
        Api::Responses => (
            "/v1/responses",
            format!(r#"{{"model":"gpt-5","stream":{stream},"input":"hi"}}"#),
        ),
        Api::Chat => (
            "/v1/chat/completions",
            format!(
                r#"{{"model":"gpt-5","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
            ),
        ),
        Api::Completions => (
            "/v1/completions",
            format!(r#"{{"model":"gpt-5","stream":{stream},"prompt":"hi"}}"#),
        ),
    }
}

async fn matrix(api: Api, stream: bool) {
    let mut h = Harness::start(1).await;
    h.add_upstream("pool", 0, 1).await;
    h.set_price("gpt-5", PRICE.0, PRICE.1, PRICE.2).await;
    let cases = [
        Case::Reported,
        Case::Missing,
        Case::LeaveBeforeFirstByte,
        Case::LeaveMidStream,
        Case::LeaveAfterTerminal,
    ];
    let pool = h.db.pool().await;
    for (n, case) in cases.into_iter().enumerate() {
        let (user, _) = h.add_user(&format!("{case:?}"), 1_000_000_000).await;
        let (_, secret, version) = h.add_key(user.id).await;
        h.wait_applied(version).await;
        let auth = format!("Bearer {secret}");
        let (path, body) = request(api, stream);
        let gate = Arc::new(tokio::sync::Notify::new());
        let behaviour = match case {
            Case::Reported | Case::LeaveAfterTerminal => Behaviour {
                usage: USAGE,
                deltas: 4,
                ..Behaviour::default()
            },
            Case::Missing => Behaviour {
                deltas: 4,
                fault: Fault::OmitUsage,
                ..Behaviour::default()
            },
            Case::LeaveBeforeFirstByte => Behaviour::fault(Fault::HangBeforeHead),
            // A long stream the client abandons after its first output: the gateway keeps
            // reading the upstream for the real usage.
            Case::LeaveMidStream if stream => Behaviour {
                usage: USAGE,
                deltas: 100,
                gap: Some(Duration::from_millis(5)),
                ..Behaviour::default()
            },
            Case::LeaveMidStream => Behaviour {
                usage: USAGE,
                gate: Some(gate.clone()),
                ..Behaviour::default()
            },
        };
        h.mock.queue_for("pool", behaviour);
        match case {
            Case::LeaveBeforeFirstByte => {
                let sent = tokio::time::timeout(
                    Duration::from_millis(300),
                    h.post(0, path, &[("authorization", &auth)], body.clone()),
                )
                .await;
                assert!(sent.is_err(), "the upstream hangs: nothing arrives");
            }
            Case::LeaveMidStream => {
                let response = h
                    .post(0, path, &[("authorization", &auth)], body.clone())
                    .await;
                assert_eq!(response.status(), 200);
                let marker = if stream { "word0" } else { "" };
                let seen = read_until(&mut response.into_body(), marker).await;
                assert!(!seen.contains("response.completed"));
                gate.notify_one();
            }
            Case::LeaveAfterTerminal if stream => {
                let response = h
                    .post(0, path, &[("authorization", &auth)], body.clone())
                    .await;
                let marker = if api == Api::Responses {
                    "response.completed"
                } else {
                    "[DONE]"
                };
                let seen = read_until(&mut response.into_body(), marker).await;
                assert!(seen.contains(marker), "{seen}");
            }
            _ => {
                let response = h
                    .post(0, path, &[("authorization", &auth)], body.clone())
                    .await;
                assert_eq!(response.status(), 200);
                response.into_body().collect().await.unwrap();
            }
        }
        h.wait_ingested(n as u64 + 1).await;
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT status, input_tokens, cached_tokens, output_tokens, reasoning_tokens, cost_micros, \
             estimated, stream, endpoint FROM usage_events WHERE user_id = $1",
        )
        .bind(user.id)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(
            rows.len(),
            1,
            "{api:?} stream={stream} {case:?}: exactly one event"
        );
        let row = &rows[0];
        let ctx = format!("{api:?} stream={stream} {case:?}: {row:?}");
        assert_eq!(row.stream, stream, "{ctx}");
        assert_eq!(
            row.endpoint,
            match api {
                Api::Responses => "responses",
                Api::Chat => "chat_completions",
                Api::Completions => "completions",
            },
            "{ctx}"
        );
        let forwarded = h
            .mock
            .recorded()
            .last()
            .map(|r| r.body.len() as i64)
            .unwrap_or(0);
        match case {
            Case::Reported | Case::LeaveAfterTerminal => {
                assert_eq!(row.status, "completed", "{ctx}");
                assert_eq!(
                    (
                        row.input_tokens,
                        row.cached_tokens,
                        row.output_tokens,
                        row.reasoning_tokens
                    ),
                    (1200, 1000, 300, 120),
                    "{ctx}"
                );
                assert_eq!(row.cost_micros, cost(1200, 1000, 300), "{ctx}");
                assert!(!row.estimated, "{ctx}");
            }
            Case::Missing => {
                assert_eq!(row.status, "completed", "{ctx}");
                assert!(row.estimated, "{ctx}");
                let chunks = if stream { 4 } else { 1 };
                let (input, output) = (forwarded / 4, chunks * 25);
                assert_eq!(
                    (row.input_tokens, row.cached_tokens, row.output_tokens),
                    (input, 0, output),
                    "{ctx}"
                );
                assert_eq!(row.cost_micros, cost(input, 0, output), "{ctx}");
            }
            Case::LeaveBeforeFirstByte => {
                assert_eq!(row.status, "client_cancelled", "{ctx}");
                assert_eq!(
                    (row.input_tokens, row.output_tokens, row.cost_micros),
                    (0, 0, 0),
                    "nothing produced, nothing billed: {ctx}"
                );
                assert!(!row.estimated, "{ctx}");
            }
            Case::LeaveMidStream => {
                // The gateway read on after the client left and billed the upstream's own
                // numbers, not an estimate. (A JSON body's second half may already be written
                // into the closed socket before the gateway notices; then it is complete.)
                if stream {
                    assert_eq!(row.status, "client_cancelled", "{ctx}");
                } else {
                    assert!(
                        ["client_cancelled", "completed"].contains(&row.status.as_str()),
                        "{ctx}"
                    );
                }
                assert_eq!(
                    (row.input_tokens, row.cached_tokens, row.output_tokens),
                    (1200, 1000, 300),
                    "{ctx}"
                );
                assert_eq!(row.cost_micros, cost(1200, 1000, 300), "{ctx}");
                assert!(!row.estimated, "{ctx}");
            }
        }
    }
    // Every balance dropped by exactly its events' cost.
    let mismatched: Vec<(i64,)> = sqlx::query_as(
        "SELECT u.id FROM users u LEFT JOIN (SELECT user_id, SUM(cost_micros) AS spent FROM usage_events GROUP BY user_id) e \
         ON e.user_id = u.id WHERE u.balance_micros <> 1000000000 - COALESCE(e.spent, 0)",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(mismatched.is_empty(), "balances off for {mismatched:?}");
    pool.close().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_responses_stream() {
    matrix(Api::Responses, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_responses_json() {
    matrix(Api::Responses, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_chat_stream() {
    matrix(Api::Chat, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_chat_json() {
    matrix(Api::Chat, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_completions_stream() {
    matrix(Api::Completions, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_completions_json() {
    matrix(Api::Completions, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_balance_is_refused_by_every_data_plane_within_a_second() {
    let mut h = Harness::start(2).await;
    h.add_upstream("pool", 0, 1).await;
    h.set_price("gpt-5", PRICE.0, PRICE.1, PRICE.2).await;
    // 500 µ left; one request costs 900 µ.
    let (user, _) = h.add_user("last-coin", 500).await;
    let (_, secret, version) = h.add_key(user.id).await;
    h.wait_applied(version).await;
    h.mock.set_behaviour(Behaviour {
        usage: USAGE,
        ..Behaviour::default()
    });
    let auth = format!("Bearer {secret}");
    let (path, body) = request(Api::Responses, false);
    let response = h
        .post(0, path, &[("authorization", &auth)], body.clone())
        .await;
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    let finished = std::time::Instant::now();

    // The ledger takes the balance below zero and bumps the version; both data planes apply
    // it and refuse the user.
    // (The baseline is the version both applied before the request: one read after the
    // ingest could already be the bump, and then nothing would come to wait for.)
    h.wait_ingested(1).await;
    h.wait_applied(version + 1).await;
    let elapsed = finished.elapsed();
    for dp in 0..2 {
        let response = h
            .post(dp, path, &[("authorization", &auth)], body.clone())
            .await;
        assert_eq!(response.status(), 429, "data plane {dp}");
        assert!(response.headers().get("retry-after").is_none());
    }
    eprintln!("request end → exhausted user refused by every data plane: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_plane_counts_its_own_unsettled_spend_while_the_ledger_is_away() {
    let mut h = Harness::start(2).await;
    h.add_upstream("pool", 0, 1).await;
    h.set_price("gpt-5", PRICE.0, PRICE.1, PRICE.2).await;
    // 1000 µ; one request costs 900 µ. Without the control plane nothing is settled and no new
    // snapshot arrives: each data plane has only its own count to go by.
    let each = cost(1200, 1000, 300);
    assert_eq!(each, 900);
    let (user, _) = h.add_user("far-from-home", 1_000).await;
    let (_, secret, version) = h.add_key(user.id).await;
    h.wait_applied(version).await;
    h.mock.set_behaviour(Behaviour {
        usage: USAGE,
        ..Behaviour::default()
    });
    let addr = h.control_plane_addr();
    h.stop_control_plane().await;

    let auth = format!("Bearer {secret}");
    let (path, body) = request(Api::Responses, true);
    async fn status_of(h: &Harness, dp: usize, path: &str, auth: &str, body: String) -> u16 {
        let response = h.post(dp, path, &[("authorization", auth)], body).await;
        let status = response.status().as_u16();
        response.into_body().collect().await.unwrap();
        status
    }
    // 1000 left → served; 100 left → served (one request's overspend at most); then refused.
    assert_eq!(status_of(&h, 0, path, &auth, body.clone()).await, 200);
    assert_eq!(status_of(&h, 0, path, &auth, body.clone()).await, 200);
    let refused = h
        .post(0, path, &[("authorization", &auth)], body.clone())
        .await;
    assert_eq!(refused.status(), 429);
    let json = gateway_tests::body_json(refused).await;
    assert_eq!(json["error"]["code"], "insufficient_quota");
    // The other data plane has spent nothing of the snapshot balance yet.
    assert_eq!(status_of(&h, 1, path, &auth, body.clone()).await, 200);
    assert_eq!(status_of(&h, 1, path, &auth, body.clone()).await, 200);
    assert_eq!(status_of(&h, 1, path, &auth, body.clone()).await, 429);

    // The ledger comes back: four events settle, the balance crosses zero, and the new
    // snapshot keeps refusing the user everywhere (its balance now says so by itself).
    h.start_control_plane_at(addr).await;
    // Nothing changed while it was away, so the bump is the first version after `version`
    // (read before the ingest: a read after it could already be the bump).
    h.wait_ingested(4).await;
    h.wait_applied(version + 1).await;
    assert_eq!(status_of(&h, 0, path, &auth, body.clone()).await, 429);
    assert_eq!(status_of(&h, 1, path, &auth, body.clone()).await, 429);
    let admin = h.admin().await;
    let balance = admin
        .clone()
        .get_user(gateway_proto::v1::GetUserRequest { id: user.id })
        .await
        .unwrap()
        .into_inner()
        .balance_micros;
    assert_eq!(balance, 1_000 - 4 * each);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_sees_its_own_usage_and_balance() {
    let mut h = Harness::start(1).await;
    h.add_upstream("pool", 0, 1).await;
    h.set_price("gpt-5", PRICE.0, PRICE.1, PRICE.2).await;
    let (user, _) = h.add_user("curious", 10_000).await;
    let (_, mine, _) = h.add_key(user.id).await;
    let (_, other, version) = h.add_key(user.id).await;
    h.wait_applied(version).await;
    h.mock.set_behaviour(Behaviour {
        usage: USAGE,
        ..Behaviour::default()
    });
    let (path, body) = request(Api::Responses, false);
    for key in [&mine, &mine, &other] {
        let response = h
            .post(
                0,
                path,
                &[("authorization", &format!("Bearer {key}"))],
                body.clone(),
            )
            .await;
        response.into_body().collect().await.unwrap();
    }
    h.wait_ingested(3).await;
    let response = h
        .get_with(
            0,
            "/v1/usage?limit=10",
            &[("authorization", &format!("Bearer {mine}"))],
        )
        .await;
    assert_eq!(response.status(), 200);
    let json = gateway_tests::body_json(response).await;
    assert_eq!(json["balance_micros"], 10_000 - 3 * cost(1200, 1000, 300));
    let events = json["data"].as_array().unwrap();
    assert_eq!(events.len(), 2, "only this key's events");
    assert_eq!(events[0]["cost_micros"], cost(1200, 1000, 300));
    assert_eq!(events[0]["model"], "gpt-5");
    assert_eq!(h.get(0, "/v1/usage").await.status(), 401);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_ledger_keeps_refusing_is_dead_lettered_and_the_rest_is_billed() {
    let mut h = Harness::start(1).await;
    h.add_upstream("pool", 0, 1).await;
    h.set_price("gpt-5", PRICE.0, PRICE.1, PRICE.2).await;
    let (refused, _) = h.add_user("refused", 1_000_000).await;
    let (fine, _) = h.add_user("fine", 1_000_000).await;
    let (_, refused_key, _) = h.add_key(refused.id).await;
    let (_, fine_key, version) = h.add_key(fine.id).await;
    h.wait_applied(version).await;
    // The database itself refuses one user's rows, as it would a row it cannot store.
    let pool = h.db.pool().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF NEW.user_id = {} THEN RAISE EXCEPTION 'refused by policy'; END IF; RETURN NEW; END $$",
        refused.id
    )))
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("CREATE TRIGGER refuse BEFORE INSERT ON usage_events FOR EACH ROW EXECUTE FUNCTION refuse()")
        .execute(&pool)
        .await
        .unwrap();
    h.mock.set_behaviour(Behaviour {
        usage: USAGE,
        ..Behaviour::default()
    });
    let (path, body) = request(Api::Responses, false);
    for key in [&refused_key, &fine_key] {
        let response = h
            .post(
                0,
                path,
                &[("authorization", &format!("Bearer {key}"))],
                body.clone(),
            )
            .await;
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();
    }
    h.wait_ingested(1).await;
    // The refused event lands in the dead-letter table with its error, after repeated tries.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let (error,): (String,) = loop {
        if let Some(row) = sqlx::query_as("SELECT error FROM usage_dead_letters")
            .fetch_optional(&pool)
            .await
            .unwrap()
        {
            break row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refused event was never dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(error.contains("refused by policy"), "{error}");
    let billed: Vec<(i64,)> = sqlx::query_as("SELECT user_id FROM usage_events")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(billed, [(fine.id,)], "the other event was billed");
    let balance: i64 = sqlx::query_scalar("SELECT balance_micros FROM users WHERE id = $1")
        .bind(refused.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(balance, 1_000_000, "a dead-lettered event debits nothing");
    // Nothing is left pending: the consumer does not loop on it.
    let client = redis::Client::open(h.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let pending: redis::streams::StreamPendingReply =
        redis::AsyncCommands::xpending(&mut conn, &h.usage_stream, "ledger")
            .await
            .unwrap();
    assert_eq!(pending.count(), 0);

    // The operator sees it with its event decoded, without SQL.
    let mut admin = h.admin().await;
    let letters = admin
        .list_dead_letters(v1::ListDeadLettersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert!(letter.error.contains("refused by policy"));
    assert!(letter.payload_bytes > 0);
    let event = letter.event.as_ref().unwrap();
    assert_eq!(
        (event.user_id, event.cost_micros),
        (refused.id, cost(1200, 1000, 300))
    );
    // While the cause stands, a redrive is refused and the entry kept.
    let request = || v1::DeadLetterRequest {
        id: letter.id.clone(),
    };
    let still = admin.redrive_dead_letter(request()).await.unwrap_err();
    assert_eq!(still.code(), tonic::Code::FailedPrecondition);
    assert!(still.message().contains("refused by policy"), "{still:?}");
    // Fixed: the redrive bills it once and removes the entry.
    sqlx::query("DROP TRIGGER refuse ON usage_events")
        .execute(&pool)
        .await
        .unwrap();
    let payload: Vec<u8> = sqlx::query_scalar("SELECT payload FROM usage_dead_letters")
        .fetch_one(&pool)
        .await
        .unwrap();
    let redriven = admin
        .redrive_dead_letter(request())
        .await
        .unwrap()
        .into_inner();
    assert!(redriven.inserted);
    assert_eq!(redriven.event_id, event.id);
    let balance = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT balance_micros FROM users WHERE id = $1")
            .bind(refused.id)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(
        balance(pool.clone()).await,
        1_000_000 - cost(1200, 1000, 300)
    );
    let gone = admin.redrive_dead_letter(request()).await.unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
    // The same event set aside twice is still billed once.
    sqlx::query(
        "INSERT INTO usage_dead_letters (stream_id, payload, error) VALUES ('again', $1, 'x')",
    )
    .bind(&payload)
    .execute(&pool)
    .await
    .unwrap();
    let again = admin
        .redrive_dead_letter(v1::DeadLetterRequest { id: "again".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.inserted, "already in the ledger");
    assert_eq!(
        balance(pool.clone()).await,
        1_000_000 - cost(1200, 1000, 300)
    );
    // What never decodes cannot be redriven; it is dropped.
    sqlx::query("INSERT INTO usage_dead_letters (stream_id, payload, error) VALUES ('junk', $1, 'not a usage event')")
        .bind(b"\xff\xff".as_slice())
        .execute(&pool)
        .await
        .unwrap();
    let junk = || v1::DeadLetterRequest { id: "junk".into() };
    let listed = admin
        .list_dead_letters(v1::ListDeadLettersRequest { limit: Some(10) })
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].event.is_none());
    let refused_junk = admin.redrive_dead_letter(junk()).await.unwrap_err();
    assert_eq!(refused_junk.code(), tonic::Code::FailedPrecondition);
    assert!(refused_junk.message().contains("still cannot be billed"));
    let dropped = admin.drop_dead_letter(junk()).await.unwrap().into_inner();
    assert_eq!(dropped.id, "junk");
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_dead_letters")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    let zero = admin
        .list_dead_letters(v1::ListDeadLettersRequest { limit: Some(0) })
        .await
        .unwrap_err();
    assert_eq!(zero.code(), tonic::Code::InvalidArgument);
    pool.close().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_is_trimmed_only_below_what_every_group_acknowledged() {
    let mut h = Harness::start(1).await;
    h.add_upstream("pool", 0, 1).await;
    let (user, _) = h.add_user("trim", 1_000_000).await;
    let (_, key, version) = h.add_key(user.id).await;
    h.wait_applied(version).await;
    // A second group (an audit reader, say) that has read nothing yet holds the stream.
    let client = redis::Client::open(h.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let (path, body) = request(Api::Responses, false);
    for _ in 0..5 {
        let response = h
            .post(
                0,
                path,
                &[("authorization", &format!("Bearer {key}"))],
                body.clone(),
            )
            .await;
        response.into_body().collect().await.unwrap();
    }
    h.wait_ingested(5).await;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&h.usage_stream)
        .arg("audit")
        .arg("0")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: redis::streams::StreamReadReply = redis::AsyncCommands::xread_options(
        &mut conn,
        &[&h.usage_stream],
        &[">"],
        &redis::streams::StreamReadOptions::default()
            .group("audit", "reader")
            .count(2),
    )
    .await
    .unwrap();
    // Housekeeping runs every second in tests; give it two rounds.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let len: usize = redis::cmd("XLEN")
        .arg(&h.usage_stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        len, 5,
        "the audit group's two pending entries pin the stream from its first one"
    );
    // Once the audit group acknowledges everything, the ledger's housekeeping trims.
    let ids: redis::streams::StreamRangeReply =
        redis::AsyncCommands::xrange_all(&mut conn, &h.usage_stream)
            .await
            .unwrap();
    let all: Vec<&str> = ids.ids.iter().map(|i| i.id.as_str()).collect();
    let _: redis::streams::StreamReadReply = redis::AsyncCommands::xread_options(
        &mut conn,
        &[&h.usage_stream],
        &[">"],
        &redis::streams::StreamReadOptions::default()
            .group("audit", "reader")
            .count(10),
    )
    .await
    .unwrap();
    let _: usize = redis::AsyncCommands::xack(&mut conn, &h.usage_stream, "audit", &all)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let len: usize = redis::cmd("XLEN")
            .arg(&h.usage_stream)
            .query_async(&mut conn)
            .await
            .unwrap();
        if len <= 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never trimmed: {len} entries"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn housekeeping_deletes_consumers_left_idle_with_nothing_pending() {
    // Replicas named after pods leave a consumer behind at every rollout.
    let h = Harness::start(0).await;
    h.add_upstream("pool", 0, 1).await;
    let client = redis::Client::open(h.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let consumers = |conn: &mut redis::aio::MultiplexedConnection| {
        let stream = h.usage_stream.clone();
        let mut conn = conn.clone();
        async move {
            // Until the ledger has created its group (and the stream), there is no key.
            let reply: redis::RedisResult<redis::streams::StreamInfoConsumersReply> =
                redis::AsyncCommands::xinfo_consumers(&mut conn, &stream, "ledger").await;
            match reply {
                Ok(reply) => reply.consumers.into_iter().map(|c| c.name).collect(),
                Err(e) if e.to_string().contains("no such key") => Vec::new(),
                Err(e) => panic!("XINFO CONSUMERS: {e}"),
            }
        }
    };
    // The ledger's group exists once its consumer has connected.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !consumers(&mut conn)
        .await
        .contains(&"test-consumer".to_owned())
    {
        assert!(tokio::time::Instant::now() < deadline, "ledger never read");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let created: bool = redis::AsyncCommands::xgroup_createconsumer(
        &mut conn,
        &h.usage_stream,
        "ledger",
        "control-plane-old-pod",
    )
    .await
    .unwrap();
    assert!(created);
    // Idle beyond USAGE_STALE_CONSUMER_SECS (3 s here) plus a housekeeping round (1 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let names = consumers(&mut conn).await;
        assert!(
            names.contains(&"test-consumer".to_owned()),
            "the live consumer must stay: {names:?}"
        );
        if !names.contains(&"control-plane-old-pod".to_owned()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle consumer was never deleted: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.shutdown().await;
}
