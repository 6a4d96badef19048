//! Trace context (docs/observability.md): the W3C `traceparent`/`tracestate` a job carries,
//! from every producer (the Rust client, the CLI, the HTTP API's body or its request headers)
//! to the job's record, the attempt, and the child jobs it enqueues; and the spans exported
//! over OTLP to a loopback receiver: the API's `send`, each attempt's `process` and its
//! `instantiate` and `run` children, outbound requests, SQL statements (a private
//! PostgreSQL), the guest's log lines as events. Real Redis, real `wasmq` processes, real
//! guests.

use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{Value, json};
use wasmq::queue::{Client, JobState, NewJob, QueueError};

use crate::support::cli::{ok, wasmq};
use crate::support::eventually;
use crate::support::guests::{self, handler};
use crate::support::host::HostProcess;
use crate::support::http_server::TestServer;
use crate::support::jobs::keep_everything;
use crate::support::otlp::OtlpReceiver;
use crate::support::postgres::PgServer;
use crate::support::redis::RedisServer;

const Q: &str = "traced";
const KIDS: &str = "traced-kids";
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const OTHER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

/// Malformed traceparents, each for a different rule.
const MALFORMED: &[&str] = &[
    "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", // upper case
    "00-00000000000000000000000000000000-b7ad6b7169203331-01", // zero trace id
    "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", // zero parent id
    "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", // version ff
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x", // a fifth field
    "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",   // short trace id
    "",
];

async fn state_of(client: &Client, queue: &str, id: &str, state: JobState) {
    eventually(
        &format!("job {id} {state}"),
        Duration::from_secs(30),
        || async {
            let job = client.get(queue, id).await.ok()??;
            (job.state == state).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_job_keeps_the_trace_context_it_was_enqueued_with() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let job = NewJob::new("echo", b"x".to_vec())
        .with_id("t-1")
        .with_traceparent(TRACEPARENT)
        .with_tracestate("vendor=abc,other=1");
    client.enqueue(Q, &job).await.unwrap();
    let plain = NewJob::new("echo", b"x".to_vec()).with_id("t-2");
    client.enqueue(Q, &plain).await.unwrap();

    let stored = client.get(Q, "t-1").await.unwrap().unwrap();
    assert_eq!(stored.traceparent.as_deref(), Some(TRACEPARENT));
    assert_eq!(stored.tracestate.as_deref(), Some("vendor=abc,other=1"));
    let stored = client.get(Q, "t-2").await.unwrap().unwrap();
    assert_eq!((stored.traceparent, stored.tracestate), (None, None));

    // The attempt gets it with its lease.
    let fetched = client
        .fetch(Q, 2, Duration::from_secs(30), "test-host")
        .await
        .unwrap();
    let traced = fetched.iter().find(|j| j.id == "t-1").unwrap();
    assert_eq!(traced.traceparent.as_deref(), Some(TRACEPARENT));
    assert_eq!(traced.tracestate.as_deref(), Some("vendor=abc,other=1"));
    let plain = fetched.iter().find(|j| j.id == "t-2").unwrap();
    assert_eq!((&plain.traceparent, &plain.tracestate), (&None, &None));
}

#[tokio::test]
async fn a_malformed_trace_context_is_refused_and_nothing_is_written() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let mut jobs: Vec<NewJob> = MALFORMED
        .iter()
        .map(|bad| NewJob::new("echo", Vec::new()).with_traceparent(*bad))
        .collect();
    jobs.push(NewJob::new("echo", Vec::new()).with_tracestate("a=1"));
    jobs.push(
        NewJob::new("echo", Vec::new())
            .with_traceparent(TRACEPARENT)
            .with_tracestate("a=\u{7f}"),
    );
    jobs.push(
        NewJob::new("echo", Vec::new())
            .with_traceparent(TRACEPARENT)
            .with_tracestate("a".repeat(513)),
    );
    for job in jobs {
        let err = client.enqueue(Q, &job.with_id("bad")).await.unwrap_err();
        assert!(
            matches!(&err, QueueError::InvalidJob { reason, .. }
                if reason.contains("traceparent") || reason.contains("tracestate")),
            "{err:?}"
        );
    }
    // enqueue.lua refuses them too, for producers that call it directly (the SDKs' tests
    // drive each rule there).
    let mut conn = redis.connection().await;
    let keys: Vec<String> = [
        "job:", "config", "waiting", "delayed", "seq", "events", "wake",
    ]
    .iter()
    .map(|k| format!("wasmq:{{{Q}}}:{k}"))
    .collect();
    for bad in MALFORMED {
        let err = redis::Script::new(wasmq::queue::ENQUEUE_LUA)
            .key(&keys)
            .arg(1)
            .arg("bad")
            .arg(2)
            .arg("handler")
            .arg("echo")
            .arg("traceparent")
            .arg(*bad)
            .invoke_async::<redis::Value>(&mut conn)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("WASMQ_INVALID") && err.to_string().contains("traceparent"),
            "{bad:?}: {err}"
        );
    }
    assert_eq!(client.counts(Q).await.unwrap().waiting, 0);
    assert!(client.get(Q, "bad").await.unwrap().is_none());
}

#[tokio::test]
async fn the_cli_enqueues_with_a_trace_context_and_shows_it() {
    let redis = RedisServer::start();
    let out = ok(&wasmq(
        &redis,
        &[
            "enqueue",
            Q,
            "echo",
            "--id",
            "cli-1",
            "--traceparent",
            TRACEPARENT,
            "--tracestate",
            "v=1",
        ],
    ));
    assert!(out.contains("cli-1"), "{out}");
    let shown = ok(&wasmq(&redis, &["job", Q, "cli-1"]));
    assert!(
        shown.contains(&format!("traceparent:  {TRACEPARENT}")),
        "{shown}"
    );
    assert!(shown.contains("tracestate:   v=1"), "{shown}");
    let refused = wasmq(
        &redis,
        &[
            "enqueue",
            Q,
            "echo",
            "--id",
            "cli-2",
            "--traceparent",
            "00-x",
        ],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("traceparent"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let client = redis.client().await;
    assert!(client.get(Q, "cli-2").await.unwrap().is_none());
}

#[tokio::test]
async fn the_api_takes_the_trace_context_from_the_body_or_else_the_request_headers() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let http = crate::support::free_loopback_addr();
    // A host serving another queue: the jobs here stay waiting for the test to read.
    let _host = HostProcess::builder(&redis.url())
        .args([
            "--queues",
            "elsewhere",
            "--handler",
            &handler("echo", "echo"),
            "--http",
            &http,
        ])
        .start();
    let web = reqwest::Client::new();
    let jobs = format!("http://{http}/api/queues/{Q}/jobs");
    api_is_up(&web, &http).await;
    let post = |body: Value, headers: &[(&str, &str)]| {
        let mut request = web.post(&jobs).json(&body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    let view = |id: &str| {
        let url = format!("{jobs}/{id}");
        let web = web.clone();
        async move {
            let answer = web.get(url).send().await.unwrap();
            assert_eq!(answer.status(), 200);
            answer.json::<Value>().await.unwrap()
        }
    };

    // From the request's headers.
    let headers = [("traceparent", TRACEPARENT), ("tracestate", "v=1")];
    let answer = post(json!({"handler": "echo", "id": "h-1"}), &headers)
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    let job = view("h-1").await;
    assert_eq!(
        (job["traceparent"].clone(), job["tracestate"].clone()),
        (json!(TRACEPARENT), json!("v=1"))
    );

    // The body's own wins, tracestate and all.
    let body = json!({"handler": "echo", "id": "b-1", "traceparent": OTHER});
    assert_eq!(post(body, &headers).await.unwrap().status(), 201);
    let job = view("b-1").await;
    assert_eq!(
        (job["traceparent"].clone(), job["tracestate"].clone()),
        (json!(OTHER), Value::Null)
    );

    // A malformed body field is the caller's error; a malformed header is ignored, as W3C
    // asks of a receiver.
    let body = json!({"handler": "echo", "id": "bad-1", "traceparent": "00-nope"});
    let answer = post(body, &[]).await.unwrap();
    assert_eq!(answer.status(), 400);
    let error = answer.json::<Value>().await.unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("traceparent"),
        "{error}"
    );
    assert!(client.get(Q, "bad-1").await.unwrap().is_none());
    let answer = post(
        json!({"handler": "echo", "id": "h-2"}),
        &[("traceparent", "00-nope"), ("tracestate", "v=1")],
    )
    .await
    .unwrap();
    assert_eq!(answer.status(), 201);
    let job = view("h-2").await;
    assert_eq!(
        (job["traceparent"].clone(), job["tracestate"].clone()),
        (Value::Null, Value::Null)
    );

    // No context anywhere: none.
    assert_eq!(
        post(json!({"handler": "echo", "id": "n-1"}), &[])
            .await
            .unwrap()
            .status(),
        201
    );
    assert_eq!(view("n-1").await["traceparent"], Value::Null);
}

#[tokio::test]
async fn child_jobs_carry_their_parents_trace_context() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, Q).await;
    keep_everything(&client, KIDS).await;
    let traced = NewJob::new(
        "parent",
        br#"{"children":2,"queue":"traced-kids"}"#.to_vec(),
    )
    .with_id("p-1")
    .with_traceparent(TRACEPARENT)
    .with_tracestate("v=1");
    let untraced = NewJob::new(
        "parent",
        br#"{"children":1,"queue":"traced-kids"}"#.to_vec(),
    )
    .with_id("p-2");
    client.enqueue(Q, &traced).await.unwrap();
    client.enqueue(Q, &untraced).await.unwrap();
    let queues = format!("{Q},{KIDS}");
    // Another queue than its own: the handler needs the grant (docs/capabilities.md).
    let toml = format!(
        "[handlers.parent]\npath = {:?}\nmay_enqueue = [\"{KIDS}/echo\"]\n",
        guests::rust("parent")
    );
    let _host = HostProcess::builder(&redis.url())
        .config(&toml)
        .args(["--queues", &queues, "--handler", &handler("echo", "echo")])
        .start();
    for id in ["p-1", "p-2"] {
        state_of(&client, Q, id, JobState::Completed).await;
    }
    for n in 1..=2 {
        let id = format!("{Q}/p-1:c{n}");
        state_of(&client, KIDS, &id, JobState::Completed).await;
        let child = client.get(KIDS, &id).await.unwrap().unwrap();
        assert_eq!(child.traceparent.as_deref(), Some(TRACEPARENT), "{id}");
        assert_eq!(child.tracestate.as_deref(), Some("v=1"), "{id}");
    }
    let id = format!("{Q}/p-2:c1");
    state_of(&client, KIDS, &id, JobState::Completed).await;
    let child = client.get(KIDS, &id).await.unwrap().unwrap();
    assert_eq!((child.traceparent, child.tracestate), (None, None));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .map(|v| match v {
            AnyValue::StringValue(s) => s.clone(),
            AnyValue::IntValue(n) => n.to_string(),
            other => format!("{other:?}"),
        })
}

/// A host running the `flaky` guest (fails attempt 1, succeeds from attempt 2) with its API,
/// exporting traces to `endpoint` when given.
fn flaky_host(redis: &RedisServer, http: &str, endpoint: Option<&str>) -> HostProcess {
    let mut env = vec![("OTEL_BSP_SCHEDULE_DELAY", "100")];
    if let Some(endpoint) = endpoint {
        env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint));
    }
    HostProcess::builder(&redis.url())
        .envs(&env)
        .args([
            "--queues",
            Q,
            "--handler",
            &handler("flaky", "flaky"),
            "--http",
            http,
        ])
        .start()
}

/// Waits until the host at `http` answers `/healthz`.
async fn api_is_up(web: &reqwest::Client, http: &str) {
    eventually("the API is up", Duration::from_secs(30), || async {
        let answer = web
            .get(format!("http://{http}/healthz"))
            .send()
            .await
            .ok()?;
        answer.status().is_success().then_some(())
    })
    .await;
}

async fn enqueue_over_api(http: &str, id: &str) {
    let web = reqwest::Client::new();
    api_is_up(&web, http).await;
    let answer = web
        .post(format!("http://{http}/api/queues/{Q}/jobs"))
        .header("traceparent", TRACEPARENT)
        .json(&json!({"handler": "flaky", "id": id, "backoff": "fixed:50ms", "max_attempts": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
}

#[tokio::test]
async fn a_job_enqueued_through_the_api_is_traced_from_the_request_to_each_attempt() {
    let receiver = OtlpReceiver::start().await;
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, Q).await;
    let http = crate::support::free_loopback_addr();
    let _host = flaky_host(&redis, &http, Some(&receiver.endpoint()));
    enqueue_over_api(&http, "f-1").await;
    state_of(&client, Q, "f-1", JobState::Completed).await;
    // An attempt's span ends after its children, so theirs are exported with it or before.
    let process_name = format!("process {Q}");
    let spans = spans_when(
        &receiver,
        "the send span and both attempts' spans",
        |spans| spans.iter().filter(|s| s.name == process_name).count() >= 2,
    )
    .await;
    let trace_id = &TRACEPARENT[3..35];
    let named = |name: &str| -> Vec<&Span> { spans.iter().filter(|s| s.name == name).collect() };

    // The API's span continues the caller's trace, and the job continues from it.
    let send = named(&format!("send {Q}"));
    assert_eq!(send.len(), 1, "{spans:#?}");
    let send = send[0];
    assert_eq!(hex(&send.trace_id), trace_id);
    assert_eq!(hex(&send.parent_span_id), &TRACEPARENT[36..52]);
    assert_eq!(
        attribute(send, "messaging.system").as_deref(),
        Some("wasmq")
    );
    assert_eq!(
        attribute(send, "messaging.operation.type").as_deref(),
        Some("send")
    );
    let job = client.get(Q, "f-1").await.unwrap().unwrap();
    assert_eq!(
        job.traceparent.as_deref(),
        Some(format!("00-{trace_id}-{}-01", hex(&send.span_id)).as_str())
    );

    let mut process = named(&format!("process {Q}"));
    process.sort_by_key(|s| attribute(s, "wasmq.attempt"));
    assert_eq!(process.len(), 2, "{spans:#?}");
    // Attempt 1: a child of the API's span, in the caller's trace.
    let first = process[0];
    assert_eq!(attribute(first, "wasmq.attempt").as_deref(), Some("1"));
    assert_eq!(hex(&first.trace_id), trace_id);
    assert_eq!(first.parent_span_id, send.span_id);
    for (key, value) in [
        ("messaging.system", "wasmq"),
        ("messaging.destination.name", Q),
        ("messaging.operation.type", "process"),
        ("wasmq.handler", "flaky"),
        ("wasmq.outcome", "retry"),
    ] {
        assert_eq!(attribute(first, key).as_deref(), Some(value), "{key}");
    }
    assert!(attribute(first, "wasmq.version").is_some());
    // Attempt 2: a new root, linked to the job's context.
    let second = process[1];
    assert_eq!(attribute(second, "wasmq.attempt").as_deref(), Some("2"));
    assert_eq!(attribute(second, "wasmq.outcome").as_deref(), Some("ok"));
    assert_ne!(hex(&second.trace_id), trace_id);
    assert!(second.parent_span_id.is_empty());
    assert_eq!(second.links.len(), 1);
    assert_eq!(hex(&second.links[0].trace_id), trace_id);
    assert_eq!(second.links[0].span_id, send.span_id);
}

#[tokio::test]
async fn with_tracing_off_nothing_is_exported() {
    let receiver = OtlpReceiver::start().await;
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, Q).await;
    let http = crate::support::free_loopback_addr();
    let _host = flaky_host(&redis, &http, None);
    enqueue_over_api(&http, "off-1").await;
    state_of(&client, Q, "off-1", JobState::Completed).await;
    // The job keeps the caller's context as given (no span of wasmq's own in between).
    let job = client.get(Q, "off-1").await.unwrap().unwrap();
    assert_eq!(job.traceparent.as_deref(), Some(TRACEPARENT));
    // An exporting host sends within its 100 ms batch delay; wait ten times that.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.requests(), 0);
}

#[tokio::test]
async fn an_outbound_request_is_a_span_of_its_attempt_and_carries_the_trace_to_the_server() {
    let receiver = OtlpReceiver::start().await;
    let server = TestServer::start().await;
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, Q).await;
    let component = crate::support::guests::rust("http-fetch");
    let origin = server.origin();
    ok(&wasmq(
        &redis,
        &[
            "handler",
            "deploy",
            "fetcher",
            component.to_str().unwrap(),
            "--allow-outbound",
            &origin,
        ],
    ));
    let http = crate::support::free_loopback_addr();
    let endpoint = receiver.endpoint();
    let _host = HostProcess::builder(&redis.url())
        .envs(&[
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ])
        .args(["--queues", Q, "--http", &http])
        .start();
    let web = reqwest::Client::new();
    api_is_up(&web, &http).await;
    let payload = json!({"url": server.url("/ok")}).to_string();
    let answer = web
        .post(format!("http://{http}/api/queues/{Q}/jobs"))
        .header("traceparent", TRACEPARENT)
        .json(&json!({"handler": "fetcher", "id": "o-1", "payload": payload}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    state_of(&client, Q, "o-1", JobState::Completed).await;
    // The attempt's span ends after its children, so theirs are exported with it or before.
    // A job that came while its handler was still compiling has a first `process` span of
    // outcome `suspended` (not started, not counted): the attempt is the one that ran.
    let spans = spans_when(&receiver, "the attempt's span", |spans| {
        ran(spans).is_some()
    })
    .await;
    let trace_id = &TRACEPARENT[3..35];
    let one = |name: &str| -> Span {
        let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "{name}: {spans:#?}");
        found[0].clone()
    };
    let send = one(&format!("send {Q}"));
    let run = one("run");
    let process = ran(&spans).unwrap().clone();
    assert_eq!(process.name, format!("process {Q}"));
    let get = one("GET");
    for span in [&send, &process, &run, &get] {
        assert_eq!(hex(&span.trace_id), trace_id, "{}", span.name);
    }
    assert_eq!(process.parent_span_id, send.span_id);
    // The request is made by the handler's run, a child of the attempt.
    assert_eq!(run.parent_span_id, process.span_id);
    assert_eq!(get.parent_span_id, run.span_id);
    assert_eq!(
        attribute(&get, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attribute(&get, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    // The called service saw the client span as its parent.
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let header = seen[0]
        .headers
        .get("traceparent")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(header, format!("00-{trace_id}-{}-01", hex(&get.span_id)));
}

/// Every span `receiver` has got, once `enough` of them are there.
async fn spans_when(
    receiver: &OtlpReceiver,
    what: &str,
    enough: impl Fn(&[Span]) -> bool,
) -> Vec<Span> {
    eventually(what, Duration::from_secs(30), || async {
        let spans: Vec<Span> = receiver.spans().into_iter().map(|(_, s)| s).collect();
        enough(&spans).then_some(spans)
    })
    .await
}

/// The `process` span of the attempt that ran: the parent of the `run` span, once both are in.
fn ran(spans: &[Span]) -> Option<&Span> {
    let run = spans.iter().find(|s| s.name == "run")?;
    spans
        .iter()
        .find(|s| s.span_id == run.parent_span_id && s.name.starts_with("process "))
}

fn the_one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "{name}: {spans:#?}");
    found[0]
}

/// Every string a span carries: its name, attributes, events and their attributes.
fn span_text(span: &Span) -> String {
    format!("{span:?}")
}

#[tokio::test]
async fn an_attempt_has_instantiate_and_run_spans_and_each_sql_statement_a_span_without_values_or_secrets()
 {
    const SQLQ: &str = "traced-sql";
    const SECRET: &str = "WASMQ_TEST_OTEL_DB_URL";
    const VALUE: &str = "a-value-that-must-not-be-traced";
    let receiver = OtlpReceiver::start().await;
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, SQLQ).await;
    let component = guests::rust("sql-probe");
    ok(&wasmq(
        &redis,
        &[
            "handler",
            "deploy",
            "orders",
            component.to_str().unwrap(),
            "--database",
            &format!("main=secret:{SECRET}"),
            "--allow-outbound",
            &format!("postgres://127.0.0.1:{}", pg.port()),
        ],
    ));
    let url = pg.url();
    let secret_var = format!("WASMQ_SECRET_{SECRET}");
    let endpoint = receiver.endpoint();
    let _host = HostProcess::builder(&redis.url())
        .envs(&[
            (secret_var.as_str(), url.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ])
        .args(["--queues", SQLQ])
        .start();
    let ops = json!({"database": "main", "ops": [
        {"execute": "CREATE TABLE o (id int8 PRIMARY KEY, note text)"},
        {"execute": "insert into o VALUES (1, $1)", "params": [{"text": VALUE}]},
        {"execute": "INSERT INTO o VALUES (1, $1)", "params": [{"text": VALUE}]},
        {"query": "SELECT note FROM o WHERE note = $1", "params": [{"text": VALUE}]},
    ]});
    let job = NewJob::new("orders", ops.to_string().into_bytes())
        .with_id("s-1")
        .with_traceparent(TRACEPARENT);
    client.enqueue(SQLQ, &job).await.unwrap();
    state_of(&client, SQLQ, "s-1", JobState::Completed).await;
    // As above: the attempt that ran, not a first one deferred while the handler compiled.
    let spans = spans_when(&receiver, "the attempt's span", |spans| {
        ran(spans).is_some()
    })
    .await;

    let process = ran(&spans).unwrap();
    assert_eq!(process.name, format!("process {SQLQ}"));
    let instantiate = the_one(&spans, "instantiate");
    let run = the_one(&spans, "run");
    assert_eq!(instantiate.parent_span_id, process.span_id);
    assert_eq!(run.parent_span_id, process.span_id);
    for span in [process, instantiate, run] {
        assert_eq!(hex(&span.trace_id), &TRACEPARENT[3..35], "{}", span.name);
    }
    // Instantiation ends before the run starts, and both lie within the attempt.
    assert!(instantiate.end_time_unix_nano <= run.start_time_unix_nano);
    assert!(process.start_time_unix_nano <= instantiate.start_time_unix_nano);
    assert!(run.end_time_unix_nano <= process.end_time_unix_nano);

    // One span per statement, children of the run, in order: the operation (its first
    // keyword, upper-cased), the database's name and label; a failed one its SQLSTATE.
    let mut statements: Vec<&Span> = spans
        .iter()
        .filter(|s| attribute(s, "db.system.name").is_some() && !s.name.starts_with("connect "))
        .collect();
    statements.sort_by_key(|s| s.start_time_unix_nano);
    // Before them, the wait for a pooled connection (`connection.open`), under the run too.
    let connect = the_one(&spans, "connect postgres");
    assert_eq!(connect.parent_span_id, run.span_id);
    assert_eq!(
        attribute(connect, "wasmq.database").as_deref(),
        Some("main")
    );
    assert!(attribute(connect, "db.operation.name").is_none());
    assert!(connect.end_time_unix_nano <= statements[0].start_time_unix_nano);
    let seen: Vec<(String, Option<String>)> = statements
        .iter()
        .map(|s| (s.name.clone(), attribute(s, "db.response.status_code")))
        .collect();
    let expected = [
        ("CREATE postgres", None),
        ("INSERT postgres", None),
        ("INSERT postgres", Some("23505".to_string())),
        ("SELECT postgres", None),
    ];
    let expected: Vec<(String, Option<String>)> = expected
        .into_iter()
        .map(|(name, code)| (name.to_string(), code))
        .collect();
    assert_eq!(seen, expected);
    for span in &statements {
        assert_eq!(span.parent_span_id, run.span_id, "{}", span.name);
        assert_eq!(
            attribute(span, "db.system.name").as_deref(),
            Some("postgresql")
        );
        assert_eq!(attribute(span, "db.namespace").as_deref(), Some("postgres"));
        assert_eq!(attribute(span, "wasmq.database").as_deref(), Some("main"));
        assert!(attribute(span, "db.operation.name").is_some());
    }
    // The statement that failed says so; the others do not.
    let failed = statements[2];
    assert_eq!(attribute(failed, "error.type").as_deref(), Some("failed"));
    assert!(attribute(statements[3], "error.type").is_none());

    // No parameter value, statement text, password or URL in any span.
    for span in &spans {
        let text = span_text(span);
        for secret in [VALUE, pg.password(), url.as_str(), "WHERE note"] {
            assert!(!text.contains(secret), "{secret:?} in {}", span.name);
        }
    }
}

/// The `log` events of a span: (level, message) each.
fn log_events(span: &Span) -> Vec<(String, String)> {
    span.events
        .iter()
        .filter(|e| e.name == "log")
        .map(|e| {
            let get = |key: &str| {
                e.attributes
                    .iter()
                    .find(|a| a.key == key)
                    .and_then(|a| a.value.as_ref())
                    .and_then(|v| match &v.value {
                        Some(AnyValue::StringValue(s)) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default()
            };
            (get("log.level"), get("log.message"))
        })
        .collect()
}

#[tokio::test]
async fn the_guests_log_lines_are_events_of_its_run_span_at_most_a_hundred() {
    const LOGQ: &str = "traced-logs";
    let receiver = OtlpReceiver::start().await;
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, LOGQ).await;
    let endpoint = receiver.endpoint();
    let _host = HostProcess::builder(&redis.url())
        .envs(&[
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ])
        .args([
            "--queues",
            LOGQ,
            "--handler",
            &handler("echo", "echo"),
            "--handler",
            &handler("hostile", "hostile"),
        ])
        .start();
    // One line; 300 lines (all kept in the job's log, 100 as events); 5,000 lines (the
    // job's log keeps 1,024 of them, its 64 KiB cap at 64 bytes a line at least).
    let jobs = [
        ("l-1", "echo", "abc"),
        ("l-2", "hostile", "log-flood:300"),
        ("l-3", "hostile", "log-flood:5000"),
    ];
    for (id, name, payload) in jobs {
        let job = NewJob::new(name, payload.as_bytes().to_vec())
            .with_id(id)
            .with_traceparent(TRACEPARENT);
        client.enqueue(LOGQ, &job).await.unwrap();
    }
    for (id, _, _) in jobs {
        state_of(&client, LOGQ, id, JobState::Completed).await;
    }
    let runs = |spans: &[Span]| -> Vec<Span> {
        spans.iter().filter(|s| s.name == "run").cloned().collect()
    };
    let spans = spans_when(&receiver, "three run spans", |spans| runs(spans).len() >= 3).await;
    let runs = runs(&spans);
    let by_events =
        |n: usize| -> Vec<&Span> { runs.iter().filter(|s| log_events(s).len() == n).collect() };
    let echo = by_events(1);
    assert_eq!(echo.len(), 1, "{runs:#?}");
    assert_eq!(
        log_events(echo[0]),
        [("info".to_string(), "echo 3 bytes".to_string())]
    );
    assert!(attribute(echo[0], "wasmq.log.events_dropped").is_none());
    let mut floods = by_events(100);
    assert_eq!(floods.len(), 2, "{runs:#?}");
    floods.sort_by_key(|s| {
        attribute(s, "wasmq.log.events_dropped").and_then(|n| n.parse::<u64>().ok())
    });
    for flood in &floods {
        let events = log_events(flood);
        let first: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
        let got: Vec<String> = events.into_iter().map(|(_, m)| m).collect();
        assert_eq!(got, first);
        assert_eq!(flood.dropped_events_count, 0);
    }
    assert_eq!(
        attribute(floods[0], "wasmq.log.events_dropped").as_deref(),
        Some("200")
    );
    assert_eq!(
        attribute(floods[1], "wasmq.log.events_dropped").as_deref(),
        Some("924")
    );
}

/// A host running `echo` on `queue` with `toml` as its config file and `env`.
fn echo_host(redis: &RedisServer, queue: &str, toml: &str, env: &[(&str, &str)]) -> HostProcess {
    let mut vars = vec![("OTEL_BSP_SCHEDULE_DELAY", "100")];
    vars.extend_from_slice(env);
    HostProcess::builder(&redis.url())
        .config(toml)
        .envs(&vars)
        .args(["--queues", queue, "--handler", &handler("echo", "echo")])
        .start()
}

/// The `service.name`s of the spans `receiver` got, once it got `process <queue>`.
async fn services_of(receiver: &OtlpReceiver, queue: &str) -> Vec<String> {
    let name = format!("process {queue}");
    eventually("the attempt's span", Duration::from_secs(30), || async {
        let spans = receiver.spans();
        spans
            .iter()
            .any(|(_, s)| s.name == name)
            .then(|| spans.into_iter().map(|(service, _)| service).collect())
    })
    .await
}

#[tokio::test]
async fn the_config_files_tracing_section_turns_tracing_on_and_the_otel_variables_win() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let (by_file, by_env, ignored, sampled_out) = (
        OtlpReceiver::start().await,
        OtlpReceiver::start().await,
        OtlpReceiver::start().await,
        OtlpReceiver::start().await,
    );
    let toml = |endpoint: &str, sampler: &str| {
        format!(
            "[tracing]\nendpoint = {endpoint:?}\nservice_name = \"from-file\"\n\
             sampler = {sampler:?}\n[tracing.headers]\nx-api-key = \"from-file-key\"\n"
        )
    };
    // The file alone: its endpoint, service name and headers.
    let _file_host = echo_host(
        &redis,
        "tf-file",
        &toml(&by_file.endpoint(), "always_on"),
        &[],
    );
    // The variables over the same keys: theirs win, the sampler's too.
    let env_endpoint = by_env.endpoint();
    let _env_host = echo_host(
        &redis,
        "tf-env",
        &toml(&ignored.endpoint(), "always_off"),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &env_endpoint),
            ("OTEL_SERVICE_NAME", "from-env"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=from-env-key"),
            ("OTEL_TRACES_SAMPLER", "always_on"),
        ],
    );
    // The file's sampler, when no variable names one.
    let _off_host = echo_host(
        &redis,
        "tf-off",
        &toml(&sampled_out.endpoint(), "always_off"),
        &[],
    );
    for queue in ["tf-file", "tf-env", "tf-off"] {
        keep_everything(&client, queue).await;
        let job = NewJob::new("echo", b"x".to_vec()).with_id("j-1");
        client.enqueue(queue, &job).await.unwrap();
    }
    for queue in ["tf-file", "tf-env", "tf-off"] {
        state_of(&client, queue, "j-1", JobState::Completed).await;
    }
    let services = services_of(&by_file, "tf-file").await;
    assert!(
        services.iter().all(|s| s.contains("\"from-file\"")),
        "{services:?}"
    );
    assert!(
        by_file
            .header_values("x-api-key")
            .iter()
            .all(|v| v == "from-file-key")
    );
    assert!(!by_file.header_values("x-api-key").is_empty());

    let services = services_of(&by_env, "tf-env").await;
    assert!(
        services.iter().all(|s| s.contains("\"from-env\"")),
        "{services:?}"
    );
    let keys = by_env.header_values("x-api-key");
    assert!(
        !keys.is_empty() && keys.iter().all(|v| v == "from-env-key"),
        "{keys:?}"
    );

    // Ten batch delays later, nothing went where the variables overrode the file, nor from
    // the host whose file samples nothing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(ignored.requests(), 0);
    assert_eq!(sampled_out.requests(), 0);
}

#[tokio::test]
async fn a_bad_tracing_setting_is_refused_at_start_with_an_error_naming_its_key() {
    let redis = RedisServer::start();
    let cases = [
        ("endpoint = \"not a url\"", "[tracing] endpoint"),
        ("endpoint = \"ftp://collector:4318\"", "[tracing] endpoint"),
        (
            "endpoint = \"http://c:4318\"\nservice_name = \" \"",
            "[tracing] service_name",
        ),
        (
            "endpoint = \"http://c:4318\"\nsampler = \"sometimes\"",
            "[tracing] sampler",
        ),
        (
            "endpoint = \"http://c:4318\"\nsampler = \"traceidratio\"\nsampler_arg = 1.5",
            "[tracing] sampler_arg",
        ),
        (
            "endpoint = \"http://c:4318\"\nsampler = \"always_on\"\nsampler_arg = 0.5",
            "[tracing] sampler_arg",
        ),
        (
            "endpoint = \"http://c:4318\"\nsampler_arg = 0.5",
            "[tracing] sampler_arg",
        ),
        (
            "endpoint = \"http://c:4318\"\n[tracing.headers]\n\"a b\" = \"v\"",
            "[tracing] headers",
        ),
        (
            "endpoint = \"http://c:4318\"\n[tracing.headers]\nkey = \"line\\nbreak\"",
            "[tracing] headers.key",
        ),
        ("endpoin = \"http://c:4318\"", "unknown field `endpoin`"),
    ];
    for (table, key) in cases {
        let toml = format!("[tracing]\n{table}\n");
        let mut host = HostProcess::builder(&redis.url())
            .config(&toml)
            .args(["--queues", "never", "--handler", &handler("echo", "echo")])
            .start();
        let status = host.wait_exit(Duration::from_secs(20));
        assert!(!status.success(), "{table}");
        let log = host.log_text();
        assert!(log.contains(key), "{table}: {key} not in {log}");
    }
    // A header value is not shown: it may be a credential.
    let toml =
        "[tracing]\nendpoint = \"http://c:4318\"\n[tracing.headers]\nkey = \"s3cret\\u0001\"\n";
    let mut host = HostProcess::builder(&redis.url())
        .config(toml)
        .args(["--queues", "never"])
        .start();
    assert!(!host.wait_exit(Duration::from_secs(20)).success());
    let log = host.log_text();
    assert!(
        log.contains("[tracing] headers.key") && !log.contains("s3cret"),
        "{log}"
    );
}

#[tokio::test]
async fn a_job_the_rust_client_enqueues_without_a_context_gets_its_send_span_when_tracing_is_on() {
    // The host's scheduler enqueues through `Client::enqueue`, with no trace context: with
    // tracing on, each tick is a `send` span, and the job continues from it.
    const CRONQ: &str = "traced-cron";
    let receiver = OtlpReceiver::start().await;
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, CRONQ).await;
    let store = wasmq::schedule::Schedules::connect(&redis.url())
        .await
        .unwrap();
    let endpoint = receiver.endpoint();
    let _host = HostProcess::builder(&redis.url())
        .envs(&[
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ])
        .args(["--queues", CRONQ, "--handler", &handler("echo", "echo")])
        .start();
    store
        .add(&wasmq::schedule::ScheduleSpec {
            name: "tick".to_string(),
            cron: "*/1 * * * * *".to_string(),
            tz: "UTC".to_string(),
            queue: CRONQ.to_string(),
            handler: "echo".to_string(),
            payload: b"tick".to_vec(),
            catch_up: 0,
        })
        .await
        .unwrap();
    let process_name = format!("process {CRONQ}");
    let spans = spans_when(&receiver, "a tick's attempt", |spans| {
        spans.iter().any(|s| s.name == process_name)
    })
    .await;
    assert!(store.remove("tick").await.unwrap());
    let process = spans.iter().find(|s| s.name == process_name).unwrap();
    let id = attribute(process, "messaging.message.id").unwrap();
    let send: Vec<&Span> = spans
        .iter()
        .filter(|s| attribute(s, "messaging.message.id").as_deref() == Some(id.as_str()))
        .filter(|s| s.name == format!("send {CRONQ}"))
        .collect();
    assert_eq!(send.len(), 1, "{spans:#?}");
    let send = send[0];
    assert!(send.parent_span_id.is_empty(), "a new trace");
    assert_eq!(
        attribute(send, "messaging.operation.type").as_deref(),
        Some("send")
    );
    assert_eq!(process.trace_id, send.trace_id);
    assert_eq!(process.parent_span_id, send.span_id);
    let job = client.get(CRONQ, &id).await.unwrap().unwrap();
    assert_eq!(
        job.traceparent,
        Some(format!(
            "00-{}-{}-01",
            hex(&send.trace_id),
            hex(&send.span_id)
        ))
    );
}

/// A component whose start code (`_initialize`, run while it is instantiated) logs
/// `starting up`; its `handle` returns the payload.
fn start_logger() -> Vec<u8> {
    crate::corpus::table::Wat {
        imports: r#"(import "wasmq:job/context@0.1.0" "log"
                      (func $log (param i32 i32 i32)))"#,
        memory: r#"(memory (export "memory") 1)"#,
        items: r#"(data (i32.const 512) "starting up")
                  (func (export "_initialize")
                    (call $log (i32.const 2) (i32.const 512) (i32.const 11)))"#,
        body: crate::corpus::table::RETURN_PAYLOAD,
    }
    .component()
}

/// The `process` spans of job `id`.
fn processes_of<'a>(spans: &'a [Span], id: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| {
            s.name.starts_with("process ")
                && attribute(s, "messaging.message.id").as_deref() == Some(id)
        })
        .collect()
}

/// The spans whose parent is `parent`.
fn children_of<'a>(spans: &'a [Span], parent: &Span) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id)
        .collect()
}

#[tokio::test]
async fn start_up_lines_a_cpu_slot_wait_and_a_deferred_start_show_in_the_spans_as_they_happened() {
    const STARTQ: &str = "traced-start";
    let receiver = OtlpReceiver::start().await;
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, STARTQ).await;
    let dir = tempfile::tempdir().unwrap();
    let logger = dir.path().join("start-logger.wasm");
    std::fs::write(&logger, start_logger()).unwrap();
    let endpoint = receiver.endpoint();
    // `echo` may start once a minute: its second job is deferred, uncounted.
    let toml = format!(
        "[handlers.echo]\npath = {:?}\nthrottle = \"1/60s\"\n",
        guests::rust("echo")
    );
    let _host = HostProcess::builder(&redis.url())
        .config(&toml)
        .envs(&[
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ])
        .args([
            "--queues",
            STARTQ,
            "--handler",
            &format!("starts={}", logger.display()),
            "--handler",
            &handler("hostile", "hostile"),
        ])
        .start();
    let enqueue = |id: &'static str, job: NewJob| {
        let client = client.clone();
        async move {
            let job = job.with_id(id).with_traceparent(TRACEPARENT);
            client.enqueue(STARTQ, &job).await.unwrap();
        }
    };

    // Lines logged while the component starts are events of the `instantiate` span.
    enqueue("s-1", NewJob::new("starts", b"x".to_vec())).await;
    state_of(&client, STARTQ, "s-1", JobState::Completed).await;

    // A start the throttle defers is not an attempt: no `process` span for it.
    enqueue("t-1", NewJob::new("echo", b"x".to_vec())).await;
    state_of(&client, STARTQ, "t-1", JobState::Completed).await;
    enqueue("t-2", NewJob::new("echo", b"x".to_vec())).await;
    state_of(&client, STARTQ, "t-2", JobState::Delayed).await;

    // Two attempts that run long (a busy loop stopped by its 30 ms timeout) make the
    // handler's next attempt start long: it waits for a CPU slot first, a `wait` span.
    for id in ["h-1", "h-2", "h-3"] {
        let job = NewJob::new("hostile", b"clock-spin".to_vec())
            .with_timeout(Duration::from_millis(30))
            .with_max_attempts(1);
        enqueue(id, job).await;
        state_of(&client, STARTQ, id, JobState::Dead).await;
    }

    // Spans are exported in the order they end: once h-3's are in, t-2's deferral (which
    // ended long before) would be too.
    let spans = spans_when(&receiver, "the spans of h-3", |spans| {
        processes_of(spans, "h-3")
            .first()
            .is_some_and(|p| children_of(spans, p).len() >= 3)
    })
    .await;

    let started = processes_of(&spans, "s-1");
    assert_eq!(started.len(), 1, "{spans:#?}");
    let children = children_of(&spans, started[0]);
    let instantiate = children
        .iter()
        .find(|s| s.name == "instantiate")
        .unwrap_or_else(|| panic!("no instantiate span: {children:#?}"));
    assert_eq!(
        log_events(instantiate),
        [("info".to_string(), "starting up".to_string())]
    );
    let run = children.iter().find(|s| s.name == "run").unwrap();
    assert!(log_events(run).is_empty(), "{run:#?}");

    assert_eq!(processes_of(&spans, "t-1").len(), 1, "{spans:#?}");
    assert_eq!(
        processes_of(&spans, "t-2"),
        Vec::<&Span>::new(),
        "a deferred start has no process span"
    );
    let t2 = client.get(STARTQ, "t-2").await.unwrap().unwrap();
    assert_eq!(t2.attempt, 0, "the deferred start is not counted");

    let long = processes_of(&spans, "h-3");
    assert_eq!(long.len(), 1, "{spans:#?}");
    let names: Vec<&str> = children_of(&spans, long[0])
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert!(names.contains(&"wait"), "h-3: {names:?}");
    assert!(
        names.contains(&"instantiate") && names.contains(&"run"),
        "{names:?}"
    );
    let wait = the_one(&spans, "wait");
    let instantiate = children_of(&spans, long[0])
        .into_iter()
        .find(|s| s.name == "instantiate")
        .unwrap();
    assert!(wait.end_time_unix_nano <= instantiate.start_time_unix_nano);
    // The first attempts did not start long.
    for id in ["h-1", "h-2"] {
        let first = processes_of(&spans, id);
        assert_eq!(first.len(), 1);
        assert!(
            !children_of(&spans, first[0])
                .iter()
                .any(|s| s.name == "wait"),
            "{id}"
        );
    }
}
