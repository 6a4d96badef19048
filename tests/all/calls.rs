//! Call records (docs/protocol.md, "Call records") through the real path: real `wasmq run`
//! hosts, a real Redis, a real PostgreSQL, real loopback HTTP servers and real guests. Each
//! attempt's outbound requests and SQL statements are in its history entry, in order, with
//! nothing secret (no URL path or query, header, statement text or parameter), and the
//! timeline API draws them as `call` segments.

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands;
use serde_json::{Value, json};
use wasmq::queue::{Attempt, CallEntry, Client, Job, JobState, MAX_ATTEMPT_CALLS, NewJob};

use crate::support::cli::{ok, wasmq};
use crate::support::email_api::EmailApi;
use crate::support::eventually;
use crate::support::guests;
use crate::support::host::HostProcess;
use crate::support::http_server::TestServer;
use crate::support::jobs::keep_everything;
use crate::support::postgres::PgServer;
use crate::support::redis::RedisServer;

const Q: &str = "calls";
const API_KEY: &str = "ek-live-77c0ffee";
/// A token a team might put in a URL's query: it must never reach Redis.
const URL_TOKEN: &str = "tok-3b9e2f-secret";

async fn ended(client: &Client, id: &str) -> Job {
    eventually(&format!("{id} to end"), Duration::from_secs(90), || async {
        let job = client.get(Q, id).await.ok()??;
        matches!(job.state, JobState::Completed | JobState::Dead).then_some(job)
    })
    .await
}

/// Every field of job `id`'s hash, as text.
async fn raw_hash(redis: &RedisServer, id: &str) -> String {
    let mut conn = redis.connection().await;
    let hash: HashMap<String, Vec<u8>> = conn
        .hgetall(format!("wasmq:{{{Q}}}:job:{id}"))
        .await
        .unwrap();
    hash.iter()
        .map(|(k, v)| format!("{k}={}\n", String::from_utf8_lossy(v)))
        .collect()
}

/// Whether `text` holds `needle` as is or as cjson writes it (`/` escaped as `\/`).
fn holds(text: &str, needle: &str) -> bool {
    text.contains(needle) || text.contains(&needle.replace('/', "\\/"))
}

/// Job `id`'s `history` field, as Redis holds it.
async fn raw_history(redis: &RedisServer, id: &str) -> String {
    let mut conn = redis.connection().await;
    conn.hget(format!("wasmq:{{{Q}}}:job:{id}"), "history")
        .await
        .unwrap()
}

/// An attempt's calls as `(kind, what, end)`: `("http", "POST http://...", "500")`,
/// `("sql", "SELECT main", "ok")`.
fn shown(a: &Attempt) -> Vec<(String, String, String)> {
    a.calls
        .iter()
        .flatten()
        .map(|c: &CallEntry| {
            let what = match c.kind.as_str() {
                "http" => format!(
                    "{} {}",
                    c.method.as_deref().unwrap_or("-"),
                    c.target.as_deref().unwrap_or("-")
                ),
                _ => format!(
                    "{} {}",
                    c.op.as_deref().unwrap_or("-"),
                    c.db.as_deref().unwrap_or("-")
                ),
            };
            let end = match (c.status, &c.outcome) {
                (Some(s), _) => s.to_string(),
                (None, Some(o)) => o.clone(),
                (None, None) => "ok".to_string(),
            };
            (c.kind.clone(), what, end)
        })
        .collect()
}

fn row(kind: &str, what: &str, end: &str) -> (String, String, String) {
    (kind.to_string(), what.to_string(), end.to_string())
}

/// The calls of an attempt start in order, within it (by the host's clock: the attempt's own
/// length, which its history entry bounds from outside, plus a little for the two clocks).
fn assert_sane_times(a: &Attempt) {
    let calls = a.calls.as_deref().unwrap_or_default();
    let length = a.finished_at.saturating_sub(a.started_at);
    let mut last = 0;
    for c in calls {
        assert!(c.at_ms >= last, "calls in order of start: {calls:?}");
        assert!(
            c.at_ms + c.duration_ms <= length + 50,
            "{c:?} within its attempt of {length} ms"
        );
        last = c.at_ms;
    }
}

/// The welcome-email job (SQL, then a POST to the provider, then SQL in a transaction)
/// against a provider that answers 500 once: the failed attempt keeps its calls, the retry
/// has its own, nothing secret is in the job, and the timeline API draws every call within
/// its attempt.
#[tokio::test]
async fn each_attempt_records_its_requests_and_queries_in_order_and_nothing_secret() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, Q).await;
    let pg = PgServer::start();
    let db = pg.client().await;
    let schema =
        std::fs::read_to_string(guests::repo_root().join("examples/welcome-email/schema.sql"))
            .unwrap();
    db.batch_execute(&schema).await.unwrap();
    db.batch_execute("INSERT INTO users (id, email, name) VALUES (1, 'ada@example.com', 'Ada')")
        .await
        .unwrap();
    let api = EmailApi::start(API_KEY).await;
    api.script(&[500]);
    let component = guests::rust("welcome-email");
    let url = format!("email_api_url={}?token={URL_TOKEN}", api.url());
    ok(&wasmq(
        &redis,
        &[
            "handler",
            "deploy",
            "welcome",
            component.to_str().unwrap(),
            "--database",
            "main=secret:APP_DB_URL",
            "--allow-outbound",
            &api.origin(),
            "--allow-outbound",
            &format!("postgres://127.0.0.1:{}", pg.port()),
            "--config",
            &url,
            "--secret",
            "EMAIL_API_KEY",
            "--max-attempts",
            "3",
            "--backoff",
            "fixed:100ms",
        ],
    ));
    let db_url = pg.url();
    let http = crate::support::free_loopback_addr();
    let _host = HostProcess::builder(&redis.url())
        .envs(&[
            ("WASMQ_SECRET_APP_DB_URL", db_url.as_str()),
            ("WASMQ_SECRET_EMAIL_API_KEY", API_KEY),
        ])
        .args(["--queues", Q, "--http", &http])
        .start();
    client
        .enqueue(
            Q,
            &NewJob::new("welcome", br#"{"userId":1}"#.to_vec()).with_id("w-1"),
        )
        .await
        .unwrap();
    let job = ended(&client, "w-1").await;
    assert_eq!(job.state, JobState::Completed, "{:?}", job.history);
    // A first attempt deferred while the handler compiled ran nothing and made no call.
    let ran: Vec<&Attempt> = job
        .history
        .iter()
        .filter(|a| a.outcome != "suspended")
        .collect();
    let outcomes: Vec<&str> = ran.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["retry", "ok"]);
    let provider = format!("POST {}", api.origin());
    assert_eq!(
        shown(ran[0]),
        [
            row("sql", "SELECT main", "ok"),
            row("sql", "SELECT main", "ok"),
            row("http", &provider, "500"),
        ]
    );
    assert_eq!(
        shown(ran[1]),
        [
            row("sql", "SELECT main", "ok"),
            row("sql", "SELECT main", "ok"),
            row("http", &provider, "200"),
            row("sql", "BEGIN main", "ok"),
            row("sql", "INSERT main", "ok"),
            row("sql", "COMMIT main", "ok"),
        ]
    );
    for a in &ran {
        assert_sane_times(a);
        assert_eq!(a.calls_dropped, None);
    }

    // Nothing secret anywhere in the job: not the URL's path or query, not the provider's
    // key, not a statement's text or value, not the database's URL or password.
    // (The guest's own log line names the user's address: that is the guest's to write.)
    let hash = raw_hash(&redis, "w-1").await;
    assert!(holds(&hash, &api.origin()), "{hash}");
    for secret in [
        URL_TOKEN,
        "/v1/emails",
        "?token",
        API_KEY,
        "FROM users",
        "email_log",
        pg.password(),
        db_url.as_str(),
    ] {
        assert!(!holds(&hash, secret), "{secret:?} in the job: {hash}");
    }

    // The timeline draws each call within its attempt.
    let web = reqwest::Client::new();
    let timeline: Value = eventually("the timeline", Duration::from_secs(30), || async {
        let response = web
            .get(format!("http://{http}/api/queues/{Q}/jobs/w-1/timeline"))
            .send()
            .await
            .ok()?;
        response.status().is_success().then_some(())?;
        response.json().await.ok()
    })
    .await;
    assert_eq!(timeline["calls_recorded"], true, "{timeline}");
    let segments = timeline["segments"].as_array().unwrap();
    let calls: Vec<&Value> = segments.iter().filter(|s| s["kind"] == "call").collect();
    assert_eq!(calls.len(), 9, "{timeline}");
    let retry_attempt = ran[0].attempt;
    let drawn: Vec<(u64, &str, &str, &str)> = calls
        .iter()
        .map(|s| {
            (
                s["attempt"].as_u64().unwrap(),
                s["call_kind"].as_str().unwrap(),
                s["name"].as_str().unwrap(),
                s["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    let target = format!("POST {}", api.origin());
    let first = u64::from(retry_attempt);
    assert_eq!(
        drawn[..3],
        [
            (first, "sql", "sql SELECT (main)", "ok"),
            (first, "sql", "sql SELECT (main)", "ok"),
            (first, "http", target.as_str(), "500"),
        ]
    );
    assert_eq!(drawn[5], (first + 1, "http", target.as_str(), "200"));
    for (segment, call) in calls.iter().zip(ran.iter().flat_map(|a| {
        a.calls
            .iter()
            .flatten()
            .map(move |c| (a.started_at + c.at_ms, c.duration_ms))
    })) {
        assert_eq!(segment["start_ms"], call.0, "{segment}");
        assert_eq!(
            segment["end_ms"].as_u64().unwrap() - segment["start_ms"].as_u64().unwrap(),
            call.1
        );
    }

    // `wasmq job` lists each attempt's calls under it.
    let shown = ok(&wasmq(&redis, &["job", Q, "w-1"]));
    let provider_line = format!("POST {} -> 500", api.origin());
    assert!(shown.contains(&provider_line), "{shown}");
    assert!(shown.contains("sql INSERT (main) -> ok"), "{shown}");
    assert!(!shown.contains(URL_TOKEN), "{shown}");

    // The job view of the API shows them too.
    let view: Value = web
        .get(format!("http://{http}/api/queues/{Q}/jobs/w-1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let history = view["history"].as_array().unwrap();
    let last = history.last().unwrap();
    assert_eq!(last["calls"][2]["kind"], "http");
    assert_eq!(last["calls"][2]["target"], json!(api.origin()));
    assert_eq!(last["calls"][2]["status"], 200);
    assert_eq!(last["calls"][4]["operation"], "INSERT");
    assert_eq!(last["calls"][4]["database"], "main");
    assert_eq!(last["calls_dropped"], 0);
}

/// A job making more statements than the record keeps: the first 50 are kept, in order, the
/// rest counted; a failed statement says so. An outbound request the handler may not make is
/// recorded as denied.
#[tokio::test]
async fn past_fifty_calls_are_counted_and_failed_or_denied_calls_say_so() {
    const SECRET: &str = "WASMQ_TEST_CALLS_DB_URL";
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, Q).await;
    let pg = PgServer::start();
    let server = TestServer::start().await;
    let probe = guests::rust("sql-probe");
    ok(&wasmq(
        &redis,
        &[
            "handler",
            "deploy",
            "probe",
            probe.to_str().unwrap(),
            "--database",
            &format!("main=secret:{SECRET}"),
            "--allow-outbound",
            &format!("postgres://127.0.0.1:{}", pg.port()),
        ],
    ));
    // No allow_outbound grant: every request is denied before it leaves the host.
    let fetch = guests::rust("http-fetch");
    ok(&wasmq(
        &redis,
        &["handler", "deploy", "fetcher", fetch.to_str().unwrap()],
    ));
    let url = pg.url();
    let secret_var = format!("WASMQ_SECRET_{SECRET}");
    let _host = HostProcess::builder(&redis.url())
        .envs(&[(secret_var.as_str(), url.as_str())])
        .args(["--queues", Q])
        .start();
    let extra = 7;
    let mut ops = vec![json!({"query": "SELEC oops"})];
    ops.extend((0..MAX_ATTEMPT_CALLS + extra - 1).map(|i| json!({"query": format!("SELECT {i}")})));
    let payload = json!({"database": "main", "ops": ops}).to_string();
    client
        .enqueue(
            Q,
            &NewJob::new("probe", payload.into_bytes()).with_id("many"),
        )
        .await
        .unwrap();
    let denied_url = format!("{}?token={URL_TOKEN}", server.url("/ok/private"));
    client
        .enqueue(
            Q,
            &NewJob::new(
                "fetcher",
                json!({"url": denied_url}).to_string().into_bytes(),
            )
            .with_id("denied")
            .with_max_attempts(1),
        )
        .await
        .unwrap();

    let job = ended(&client, "many").await;
    assert_eq!(job.state, JobState::Completed, "{:?}", job.history);
    let last = job.history.last().unwrap();
    let calls = last.calls.as_deref().unwrap();
    assert_eq!(calls.len(), MAX_ATTEMPT_CALLS);
    assert_eq!(last.calls_dropped, Some(extra as u64));
    // The statement that failed (a syntax error: no known keyword) is recorded as an error.
    assert_eq!(
        (calls[0].op.as_deref(), calls[0].outcome.as_deref()),
        (None, Some("error"))
    );
    for c in &calls[1..] {
        assert_eq!(
            (
                c.kind.as_str(),
                c.op.as_deref(),
                c.db.as_deref(),
                c.outcome.as_deref()
            ),
            ("sql", Some("SELECT"), Some("main"), None)
        );
    }
    assert_sane_times(last);
    // The statements are in the job's payload (the producer wrote them), never in its
    // history.
    let history = raw_history(&redis, "many").await;
    for secret in ["SELEC oops", "SELECT 1", url.as_str(), pg.password()] {
        assert!(!holds(&history, secret), "{secret:?} in {history}");
    }

    let job = ended(&client, "denied").await;
    assert_eq!(job.state, JobState::Dead);
    let last = job.history.last().unwrap();
    assert_eq!(
        shown(last),
        [row("http", &format!("GET {}", server.origin()), "denied")]
    );
    assert!(
        server.seen().is_empty(),
        "a denied request never leaves the host"
    );
    // The URL's token is in the job's own payload (the producer put it there), never in
    // the attempt's history entry.
    let history = raw_history(&redis, "denied").await;
    assert!(holds(&history, &server.origin()), "{history}");
    for secret in [URL_TOKEN, "/ok/private"] {
        assert!(!holds(&history, secret), "{secret:?} in {history}");
    }
}
