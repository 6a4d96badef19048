//! Trace context (docs/observability.md): the W3C `traceparent`/`tracestate` a job carries,
//! from every producer (the Rust client, the CLI, the HTTP API's body or its request headers)
//! to the job's record, the attempt, and the child jobs it enqueues. Real Redis, real `wasmq`
//! processes, the `parent` and `echo` guests.

use std::time::Duration;

use serde_json::{Value, json};
use wasmq::queue::{Client, JobState, NewJob, QueueError};

use crate::support::cli::{ok, wasmq};
use crate::support::eventually;
use crate::support::guests::handler;
use crate::support::host::HostProcess;
use crate::support::jobs::keep_everything;
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
    let _host = HostProcess::start(
        &redis.url(),
        &[
            "--queues",
            "elsewhere",
            "--handler",
            &handler("echo", "echo"),
            "--http",
            &http,
        ],
    );
    let web = reqwest::Client::new();
    let jobs = format!("http://{http}/api/queues/{Q}/jobs");
    eventually("the API is up", Duration::from_secs(30), || async {
        let answer = web
            .get(format!("http://{http}/healthz"))
            .send()
            .await
            .ok()?;
        answer.status().is_success().then_some(())
    })
    .await;
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
    let _host = HostProcess::start(
        &redis.url(),
        &[
            "--queues",
            &queues,
            "--handler",
            &handler("parent", "parent"),
            "--handler",
            &handler("echo", "echo"),
        ],
    );
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
