//! The HTTP API over real HTTP: a real `wasmq serve` (or `wasmq run --http`) process on a free
//! loopback port, a real Redis, real components. Every endpoint, auth refused and accepted,
//! bad and oversize bodies refused with nothing written, startup refusals, and the OpenAPI
//! document checked against the routes.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wasmq::queue::{Client, JobState, NewJob, QueueConfig, RecordsAttempt as _};
use wasmq::registry::Registry;

use crate::support::api::{ApiServer, Http};
use crate::support::eventually;
use crate::support::guests;
use crate::support::host::HostProcess;
use crate::support::redis::RedisServer;

const Q: &str = "api-q";
const TOKEN: &str = "test-token-0123456789";

/// Every route of the API, as (method, OpenAPI path): what the document must list, exactly,
/// and what the parts of `every_endpoint_answers_over_http` call.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/queues"),
    ("get", "/api/queues/{queue}"),
    ("post", "/api/queues/{queue}/pause"),
    ("post", "/api/queues/{queue}/resume"),
    ("get", "/api/queues/{queue}/check"),
    ("post", "/api/queues/{queue}/check"),
    ("post", "/api/queues/{queue}/cancel"),
    ("post", "/api/queues/{queue}/jobs"),
    ("get", "/api/queues/{queue}/jobs"),
    ("get", "/api/queues/{queue}/jobs/{id}"),
    ("get", "/api/queues/{queue}/jobs/{id}/timeline"),
    ("get", "/api/queues/{queue}/search"),
    ("delete", "/api/queues/{queue}/jobs/{id}"),
    ("get", "/api/queues/{queue}/dlq"),
    ("post", "/api/queues/{queue}/dlq/replay"),
    ("post", "/api/queues/{queue}/dlq/purge"),
    ("get", "/api/queues/{queue}/events"),
    ("get", "/api/queues/{queue}/durations"),
    ("get", "/api/handlers"),
    ("post", "/api/handlers/{name}"),
    ("delete", "/api/handlers/{name}"),
    ("get", "/api/handlers/{name}/versions"),
    ("post", "/api/handlers/{name}/rollback"),
    ("get", "/api/schedules"),
    ("post", "/api/schedules/{name}"),
    ("delete", "/api/schedules/{name}"),
    ("post", "/api/schedules/{name}/pause"),
    ("post", "/api/schedules/{name}/resume"),
    ("post", "/api/events"),
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

/// Leases every waiting job of `queue` and dead-letters it.
async fn kill_all(client: &Client, queue: &str) -> Vec<String> {
    let jobs = client
        .fetch(queue, 100, Duration::from_secs(30), "test-host")
        .await
        .unwrap();
    let failures: Vec<_> = jobs
        .iter()
        .map(|job| wasmq::queue::Failure::new(job, "fail", "boom"))
        .collect();
    client.dead_letter(queue, &failures).await.unwrap();
    jobs.into_iter().map(|job| job.id).collect()
}

/// One `wasmq serve` with a token, and what the parts of `every_endpoint_answers_over_http`
/// share: its Redis, a queue client, an HTTP client of it, and the routes (as in [`ROUTES`])
/// called so far.
struct Tour {
    api: Http,
    _server: ApiServer,
    client: Client,
    redis: RedisServer,
    called: BTreeSet<(&'static str, &'static str)>,
}

impl Tour {
    async fn start() -> Tour {
        let redis = RedisServer::start();
        let client = redis.client().await;
        let server = ApiServer::start(&redis, &["--token", TOKEN, "--queues", "known-only"]);
        Tour {
            api: Http::new(&server, Some(TOKEN)),
            _server: server,
            client,
            redis,
            called: BTreeSet::new(),
        }
    }

    /// Records that the part calls `method path` (an OpenAPI path).
    fn call(&mut self, method: &'static str, path: &'static str) {
        self.called.insert((method, path));
    }
}

/// The jobs the queue parts of the tour follow from one part to the next.
struct Enqueued {
    /// A job with a binary payload, sent base64-encoded.
    bin_id: String,
    /// A job delayed by ten minutes.
    later_id: String,
}

#[tokio::test]
async fn every_endpoint_answers_over_http() {
    let mut t = Tour::start().await;
    health_and_metrics(&mut t).await;
    let enqueued = jobs(&mut t).await;
    queues(&mut t).await;
    cancel_and_dead_letters(&mut t, &enqueued).await;
    queue_events(&mut t).await;
    timeline_and_durations(&mut t).await;
    handlers(&mut t).await;
    events(&mut t).await;
    schedules(&mut t).await;
    openapi(&mut t).await;

    let expected: BTreeSet<(&str, &str)> = ROUTES.iter().copied().collect();
    assert_eq!(
        t.called, expected,
        "every route is called by the parts above"
    );
}

/// The enqueue body's dedupe, debounce and expiry fields: the reply names the job that stands
/// for a deduplicated or debounced one (200, `outcome`), the job hash records them, and
/// fields that do not go together are a 400 with nothing written.
#[tokio::test]
async fn enqueue_takes_dedupe_debounce_and_expiry() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let server = ApiServer::start(&redis, &["--token", TOKEN]);
    let api = Http::new(&server, Some(TOKEN));
    let path = "/api/queues/flow/jobs";
    let first = api
        .post(
            path,
            json!({"handler": "h", "payload": "1", "dedupe_key": "order-7",
                   "dedupe_ttl_ms": 60000, "expires_in_ms": 60000}),
        )
        .await
        .expect(201);
    assert_eq!(first["outcome"], "created");
    let again = api
        .post(
            path,
            json!({"handler": "h", "payload": "2", "dedupe_key": "order-7",
                   "dedupe_ttl_ms": 60000}),
        )
        .await
        .expect(200);
    assert_eq!(
        again,
        json!({"id": first["id"], "created": false, "state": "waiting",
               "outcome": "deduplicated"})
    );
    let pending = api
        .post(
            path,
            json!({"handler": "h", "payload": "a", "debounce_key": "u1", "debounce_ms": 60000,
                   "debounce_max_wait_ms": 120000}),
        )
        .await
        .expect(201);
    assert_eq!(pending["state"], "delayed");
    let debounced = api
        .post(
            path,
            json!({"handler": "h", "payload": "b", "debounce_key": "u1", "debounce_ms": 60000}),
        )
        .await
        .expect(200);
    assert_eq!(
        (&debounced["id"], &debounced["outcome"]),
        (&pending["id"], &json!("debounced"))
    );
    let id = pending["id"].as_str().unwrap();
    assert_eq!(client.get("flow", id).await.unwrap().unwrap().payload, b"b");
    let first_id = first["id"].as_str().unwrap();
    let mut conn = redis.connection().await;
    let expires: Option<u64> = redis::cmd("HGET")
        .arg(format!("wasmq:{{flow}}:job:{first_id}"))
        .arg("expires_at")
        .query_async(&mut conn)
        .await
        .unwrap();
    let created = client.get("flow", first_id).await.unwrap().unwrap();
    assert_eq!(expires, Some(created.created_at_ms + 60000));

    let before = redis.snapshot().await;
    for (body, reason) in [
        (
            json!({"handler": "h", "dedupe_key": "k"}),
            "dedupe_key and dedupe_ttl_ms go together",
        ),
        (
            json!({"handler": "h", "expires_in_ms": 5, "expires_at_ms": 5}),
            "give expires_in_ms or expires_at_ms, not both",
        ),
        (
            json!({"handler": "h", "debounce_key": "k", "debounce_ms": 5, "delay_ms": 5}),
            "a debounce key takes no delay, run-at or dedupe key",
        ),
        (
            json!({"handler": "h", "debounce_max_wait_ms": 5}),
            "debounce_key and debounce_ms go together",
        ),
    ] {
        let error = api.post(path, body.clone()).await.error(400);
        assert!(error.contains(reason), "{body}: {error}");
    }
    assert_eq!(
        redis.snapshot().await,
        before,
        "refused bodies write nothing"
    );
}

/// `/healthz`, and `/metrics` of a server without a worker.
async fn health_and_metrics(t: &mut Tour) {
    t.call("get", "/healthz");
    assert_eq!(
        t.api.get("/healthz").await.expect(200),
        json!({"status": "ok"})
    );

    // A server without a worker reports the depth of its queues (tests/all/metrics.rs checks
    // a worker's metrics, with the reference parser).
    t.call("get", "/metrics");
    let metrics = t.api.request(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains(r#"wasmq_queue_jobs{queue="known-only",state="waiting"} 0"#),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
}

/// Enqueue with every option, then read the jobs back one by one and by state.
async fn jobs(t: &mut Tour) -> Enqueued {
    // Enqueue with every option of `wasmq enqueue`.
    t.call("post", "/api/queues/{queue}/jobs");
    let created = t
        .api
        .post(
            "/api/queues/api-q/jobs",
            json!({"handler": "greet", "payload": "hello", "id": "j1", "priority": 5,
                   "max_attempts": 2, "backoff": "fixed:2s", "timeout_ms": 30000,
                   "group": "tenant-1"}),
        )
        .await
        .expect(201);
    assert_eq!(
        created,
        json!({"id": "j1", "created": true, "state": "waiting", "outcome": "created"})
    );
    let again = t
        .api
        .post(
            "/api/queues/api-q/jobs",
            json!({"handler": "greet", "id": "j1"}),
        )
        .await
        .expect(200);
    assert_eq!(
        again,
        json!({"id": "j1", "created": false, "state": "waiting", "outcome": "exists"})
    );
    let binary = [0u8, 159, 146, 150, 255];
    let b64 = base64::engine::general_purpose::STANDARD.encode(binary);
    let bin = t
        .api
        .post(
            "/api/queues/api-q/jobs",
            json!({"handler": "greet", "payload": b64, "payload_encoding": "base64"}),
        )
        .await
        .expect(201);
    let bin_id = bin["id"].as_str().unwrap().to_string();
    assert_eq!(bin_id.len(), 26, "a generated ULID");
    let later = t
        .api
        .post(
            "/api/queues/api-q/jobs",
            json!({"handler": "greet", "delay_ms": 600000}),
        )
        .await
        .expect(201);
    assert_eq!(later["state"], "delayed");
    let later_id = later["id"].as_str().unwrap().to_string();
    let at = t
        .api
        .post(
            "/api/queues/api-q/jobs",
            json!({"handler": "greet", "run_at_ms": 4102444800000u64}),
        )
        .await
        .expect(201);
    assert_eq!(at["state"], "delayed");

    // What was enqueued is what the library reads back.
    let stored = t.client.get(Q, "j1").await.unwrap().unwrap();
    assert_eq!(stored.payload, b"hello");
    assert_eq!(stored.priority, 5);
    assert_eq!(stored.max_attempts, 2);
    assert_eq!(stored.group.as_deref(), Some("tenant-1"));
    assert_eq!(stored.timeout, Some(Duration::from_secs(30)));
    assert_eq!(
        t.client.get(Q, &bin_id).await.unwrap().unwrap().payload,
        binary
    );

    t.call("get", "/api/queues/{queue}/jobs/{id}");
    let job = t.api.get("/api/queues/api-q/jobs/j1").await.expect(200);
    assert_eq!(job["id"], "j1");
    assert_eq!(job["queue"], Q);
    assert_eq!(job["handler"], "greet");
    assert_eq!(job["state"], "waiting");
    assert_eq!(job["payload"], "hello");
    assert_eq!(job["payload_encoding"], "utf8");
    assert_eq!(job["group"], "tenant-1");
    assert_eq!(job["backoff"]["kind"], "fixed");
    assert_eq!(job["backoff"]["delay_ms"], 2000);
    assert_eq!(job["timeout_ms"], 30000);
    let bin_job = t
        .api
        .get(&format!("/api/queues/api-q/jobs/{bin_id}"))
        .await
        .expect(200);
    assert_eq!(bin_job["payload_encoding"], "base64");
    assert_eq!(bin_job["payload"], b64);

    t.call("get", "/api/queues/{queue}/jobs");
    let waiting = t.api.get("/api/queues/api-q/jobs").await.expect(200);
    assert_eq!(waiting["state"], "waiting");
    let ids: BTreeSet<&str> = waiting["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, BTreeSet::from(["j1", bin_id.as_str()]));
    let delayed = t
        .api
        .get("/api/queues/api-q/jobs?state=delayed&offset=0&limit=1")
        .await
        .expect(200);
    assert_eq!(delayed["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(delayed["limit"], 1);

    // Search (tests/all/search.rs has the rest): the group's job, found by its payload.
    t.call("get", "/api/queues/{queue}/search");
    let found = t
        .api
        .get("/api/queues/api-q/search?text=hell&group=tenant-1")
        .await
        .expect(200);
    assert_eq!(found["jobs"][0]["id"], "j1");
    assert_eq!(found["jobs"].as_array().unwrap().len(), 1);

    Enqueued { bin_id, later_id }
}

/// The queues: list, read, pause and resume, check and repair.
async fn queues(t: &mut Tour) {
    t.call("get", "/api/queues");
    let queues = t.api.get("/api/queues").await.expect(200);
    assert_eq!(
        queues,
        json!({"queues": [Q, "known-only"], "complete": true})
    );

    t.call("get", "/api/queues/{queue}");
    let queue = t.api.get("/api/queues/api-q").await.expect(200);
    assert_eq!(queue["name"], Q);
    assert_eq!(queue["paused"], false);
    assert_eq!(
        queue["counts"],
        json!({"waiting": 2, "delayed": 2, "active": 0, "retry": 0, "completed": 0, "dead": 0})
    );
    assert_eq!(queue["config"]["max_payload_bytes"], 524288);
    assert_eq!(queue["config"]["rate"], Value::Null);
    assert_eq!(queue["config"]["group_concurrency"], Value::Null);

    t.call("post", "/api/queues/{queue}/pause");
    let paused = t
        .api
        .post_empty("/api/queues/api-q/pause")
        .await
        .expect(200);
    assert_eq!(paused, json!({"queue": Q, "paused": true, "changed": true}));
    assert!(t.client.counts(Q).await.unwrap().paused);
    t.call("post", "/api/queues/{queue}/resume");
    let resumed = t
        .api
        .post_empty("/api/queues/api-q/resume")
        .await
        .expect(200);
    assert_eq!(
        resumed,
        json!({"queue": Q, "paused": false, "changed": true})
    );
    let resumed = t
        .api
        .post_empty("/api/queues/api-q/resume")
        .await
        .expect(200);
    assert_eq!(resumed["changed"], false);

    // The consistency check: a dangling id is reported by GET and repaired by POST.
    let mut conn = t.redis.connection().await;
    let () = redis::AsyncCommands::zadd(&mut conn, "wasmq:{api-q}:delayed", "ghost", 1)
        .await
        .unwrap();
    t.call("get", "/api/queues/{queue}/check");
    let found = t.api.get("/api/queues/api-q/check").await.expect(200);
    assert_eq!(found["unrepaired"], 1, "{found}");
    assert_eq!(
        found["findings"],
        json!([{"kind": "dangling", "subject": "ghost", "repaired": false,
                "detail": "no job key, but in delayed"}])
    );
    t.call("post", "/api/queues/{queue}/check");
    let repaired = t
        .api
        .post_empty("/api/queues/api-q/check")
        .await
        .expect(200);
    assert_eq!(repaired["findings"][0]["repaired"], true, "{repaired}");
    let clean = t.api.get("/api/queues/api-q/check").await.expect(200);
    assert_eq!(clean["findings"], json!([]));
}

/// Cancel a delayed job (dead-lettered, by `api`, with its reason) and a handler's jobs by
/// page, then the dead-letter queue: list, replay, purge.
async fn cancel_and_dead_letters(t: &mut Tour, enqueued: &Enqueued) {
    let Enqueued { bin_id, later_id } = enqueued;
    t.call("delete", "/api/queues/{queue}/jobs/{id}");
    let cancelled = t
        .api
        .delete(&format!(
            "/api/queues/api-q/jobs/{later_id}?reason=not%20needed"
        ))
        .await
        .expect(200);
    assert_eq!(cancelled, json!({"id": later_id, "cancelled": true}));
    let job = t
        .api
        .get(&format!("/api/queues/api-q/jobs/{later_id}"))
        .await
        .expect(200);
    assert_eq!(
        (
            &job["state"],
            &job["last_outcome"],
            &job["cancelled_by"],
            &job["cancel_reason"]
        ),
        (
            &json!("dead"),
            &json!("cancelled"),
            &json!("api"),
            &json!("not needed")
        ),
        "{job}"
    );
    assert_eq!(job["history"][0]["outcome"], "cancelled", "{job}");
    t.client
        .purge(Q, std::slice::from_ref(later_id))
        .await
        .unwrap();

    // By handler, page by page: no job of that handler here, one page says so.
    t.call("post", "/api/queues/{queue}/cancel");
    let page = t
        .api
        .post(
            "/api/queues/api-q/cancel",
            json!({"handler": "nobody", "reason": "tour", "limit": 10}),
        )
        .await
        .expect(200);
    assert_eq!(page["cancelled"], json!([]), "{page}");
    assert!(page["examined"].as_u64().unwrap() >= 2, "{page}");
    assert_eq!(page["cursor"], json!(null), "{page}");
    let both = t
        .api
        .post(
            "/api/queues/api-q/cancel",
            json!({"handler": "a", "group": "b"}),
        )
        .await
        .error(400);
    assert!(both.contains("handler or a group"), "{both}");

    // The dead-letter queue: kill both waiting jobs, then replay one and purge the other.
    let dead = kill_all(&t.client, Q).await;
    assert_eq!(dead.len(), 2);
    let conflict = t.api.delete("/api/queues/api-q/jobs/j1").await.error(409);
    assert!(conflict.contains("dead"), "{conflict}");
    t.call("get", "/api/queues/{queue}/dlq");
    let dlq = t
        .api
        .get("/api/queues/api-q/dlq?limit=10")
        .await
        .expect(200);
    assert_eq!(dlq["state"], "dead");
    let dlq_jobs = dlq["jobs"].as_array().unwrap();
    assert_eq!(dlq_jobs.len(), 2);
    assert_eq!(dlq_jobs[0]["last_error"], "boom");
    assert_eq!(dlq_jobs[0]["history"][0]["outcome"], "fail");
    t.call("post", "/api/queues/{queue}/dlq/replay");
    let replayed = t
        .api
        .post(
            "/api/queues/api-q/dlq/replay",
            json!({"ids": ["j1", "nope"]}),
        )
        .await
        .expect(200);
    assert_eq!(
        replayed,
        json!({"done": ["j1"], "skipped": [{"id": "nope", "state": "not_found"}]})
    );
    assert_eq!(
        t.client.get(Q, "j1").await.unwrap().unwrap().state,
        JobState::Waiting
    );
    t.call("post", "/api/queues/{queue}/dlq/purge");
    let purged = t
        .api
        .post("/api/queues/api-q/dlq/purge", json!({"oldest": 5}))
        .await
        .expect(200);
    assert_eq!(purged["done"], json!([bin_id]));
    assert_eq!(t.client.counts(Q).await.unwrap().dead, 0);
    kill_all(&t.client, Q).await;
    let replayed = t
        .api
        .post("/api/queues/api-q/dlq/replay", json!({"oldest": 1}))
        .await
        .expect(200);
    assert_eq!(replayed["done"], json!(["j1"]));
}

/// A queue's events stream, as the parts before wrote it, paged.
async fn queue_events(t: &mut Tour) {
    t.call("get", "/api/queues/{queue}/events");
    let events = t
        .api
        .get("/api/queues/api-q/events?limit=1000")
        .await
        .expect(200);
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for kind in [
        "enqueued",
        "paused",
        "resumed",
        "cancelled",
        "active",
        "dead",
        "replayed",
        "purged",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert_eq!(
        events["events"][0]["jobs"][0],
        json!({"id": "j1", "attempt": 0})
    );
    let last = events["last_id"].as_str().unwrap().to_string();
    let none = t
        .api
        .get(&format!("/api/queues/api-q/events?after={last}"))
        .await
        .expect(200);
    assert_eq!(none, json!({"events": [], "last_id": last}));
    let page = t
        .api
        .get("/api/queues/api-q/events?limit=2")
        .await
        .expect(200);
    let second = t
        .api
        .get(&format!(
            "/api/queues/api-q/events?after={}&limit=1",
            page["last_id"].as_str().unwrap()
        ))
        .await
        .expect(200);
    assert_eq!(second["events"][0], events["events"][2]);
}

/// The next job of `queue`, leased for 30 s by `host-a` once it is due.
async fn lease_one(client: &Client, queue: &str) -> wasmq::queue::LeasedJob {
    eventually("a job to be leased", Duration::from_secs(10), || async {
        client
            .fetch(queue, 1, Duration::from_secs(30), "host-a")
            .await
            .ok()?
            .pop()
    })
    .await
}

/// A job through a step, a durable sleep, a failed attempt and a completion (driven with the
/// queue client, as a host would), then its timeline and its queue's duration percentiles.
async fn timeline_and_durations(t: &mut Tour) {
    const TQ: &str = "api-tl";
    t.client
        .enqueue(
            TQ,
            &NewJob::new("greet", b"x".to_vec())
                .with_id("tl1")
                .with_max_attempts(3)
                .with_backoff(wasmq::queue::Backoff::fixed(Duration::ZERO)),
        )
        .await
        .unwrap();
    let first = lease_one(&t.client, TQ).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let saved = t
        .client
        .save_step(TQ, &first.id, &first.token, "run:charge", b"ok")
        .await
        .unwrap();
    assert_eq!(saved, wasmq::queue::StepSave::Saved);
    tokio::time::sleep(Duration::from_millis(20)).await;
    t.client
        .suspend(
            TQ,
            &[wasmq::queue::Suspension::new(
                &first,
                "sleep:nap",
                Duration::from_millis(300),
            )],
        )
        .await
        .unwrap();
    let again = lease_one(&t.client, TQ).await;
    assert_eq!(again.attempt, 1, "a sleep does not count an attempt");
    tokio::time::sleep(Duration::from_millis(30)).await;
    t.client
        .fail(TQ, &[wasmq::queue::Failure::new(&again, "retry", "flaky")])
        .await
        .unwrap();
    let second = lease_one(&t.client, TQ).await;
    assert_eq!(second.attempt, 2);
    t.client
        .complete(
            TQ,
            &[wasmq::queue::Completion::new(&second, b"done".to_vec())],
        )
        .await
        .unwrap();
    let job = t.client.get(TQ, "tl1").await.unwrap().unwrap();
    assert_eq!(job.history.len(), 3);
    // The sleep is in its entry's fields (and, for older readers, its error text).
    assert_eq!(job.history[0].sleep.as_deref(), Some("nap"));
    assert_eq!(job.history[0].sleep_ms, Some(300));
    assert_eq!(job.history[0].error, "sleeping 300 ms (sleep:nap)");
    assert_eq!(
        (job.history[1].sleep.as_deref(), job.history[1].sleep_ms),
        (None, None)
    );

    t.call("get", "/api/queues/{queue}/jobs/{id}/timeline");
    let timeline = t
        .api
        .get("/api/queues/api-tl/jobs/tl1/timeline")
        .await
        .expect(200);
    assert_eq!(timeline["state"], "completed");
    assert_eq!(timeline["steps_complete"], true);
    // Every attempt's end was recorded (none made a call): the calls are all there.
    assert_eq!(timeline["calls_recorded"], true);
    let segments = timeline["segments"].as_array().unwrap();
    let shown: Vec<(String, Value, Value)> = segments
        .iter()
        .filter(|s| s["kind"] != "wait")
        .map(|s| {
            let label = [&s["outcome"], &s["name"]]
                .into_iter()
                .find(|v| !v.is_null())
                .cloned()
                .unwrap_or(Value::Null);
            (
                s["kind"].as_str().unwrap().to_string(),
                s["attempt"].clone(),
                label,
            )
        })
        .collect();
    let row = |kind: &str, attempt: Value, label: Value| (kind.to_string(), attempt, label);
    assert_eq!(
        shown,
        vec![
            row("enqueued", Value::Null, Value::Null),
            row("attempt", json!(1), json!("suspended")),
            row("step", json!(1), json!("charge")),
            row("sleep", json!(1), json!("nap")),
            row("attempt", json!(1), json!("retry")),
            row("attempt", json!(2), json!("ok")),
            row("finished", Value::Null, json!("completed")),
        ],
        "{timeline}"
    );
    // Each attempt's span is its history entry's; the sleep lasts what it asked for; the
    // spans follow each other.
    let attempts: Vec<&Value> = segments.iter().filter(|s| s["kind"] == "attempt").collect();
    for (segment, recorded) in attempts.iter().zip(&job.history) {
        assert_eq!(segment["start_ms"], recorded.started_at);
        assert_eq!(segment["end_ms"], recorded.finished_at);
        assert_eq!(segment["host"], "host-a");
    }
    let sleep = segments.iter().find(|s| s["kind"] == "sleep").unwrap();
    assert_eq!(sleep["start_ms"], job.history[0].finished_at);
    assert_eq!(
        sleep["end_ms"].as_u64().unwrap() - sleep["start_ms"].as_u64().unwrap(),
        300
    );
    let step = segments.iter().find(|s| s["kind"] == "step").unwrap();
    let step_at = step["start_ms"].as_u64().unwrap();
    assert!(
        (job.history[0].started_at..=job.history[0].finished_at).contains(&step_at),
        "the step was saved during the first attempt: {step}"
    );
    let mut end = 0;
    for s in segments.iter().filter(|s| s["kind"] != "step") {
        let start = s["start_ms"].as_u64().unwrap();
        assert!(start >= end, "{s} starts before what came before it ends");
        end = s["end_ms"].as_u64().unwrap();
    }
    let missing = t
        .api
        .get("/api/queues/api-tl/jobs/nope/timeline")
        .await
        .error(404);
    assert!(missing.contains("no job nope"), "{missing}");
    t.api
        .get("/api/queues/bad%20queue/jobs/tl1/timeline")
        .await
        .error(400);

    t.call("get", "/api/queues/{queue}/durations");
    let durations = t.api.get("/api/queues/api-tl/durations").await.expect(200);
    assert_eq!(durations["jobs_read"], 1);
    assert_eq!(durations["jobs_skipped"], 0);
    assert_eq!(durations["truncated"], false);
    assert_eq!(durations["bucket_ms"], 60_000);
    let handlers = durations["handlers"].as_array().unwrap();
    assert_eq!(handlers.len(), 1, "{durations}");
    let greet = &handlers[0];
    assert_eq!(greet["handler"], "greet");
    let mut recorded: Vec<u64> = job
        .history
        .iter()
        .map(|a| a.finished_at - a.started_at)
        .collect();
    recorded.sort_unstable();
    assert_eq!(greet["count"], 3);
    assert_eq!(greet["p50_ms"], recorded[1]);
    assert_eq!(greet["p99_ms"], recorded[2]);
    assert_eq!(greet["max_ms"], recorded[2]);
    let in_buckets: u64 = greet["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(in_buckets, 3);
    // A bad window, bucket width or limit is refused.
    for (query, needle) in [
        ("window_s=0", "window_s"),
        ("window_s=90000", "window_s"),
        ("bucket_s=1", "bucket_s"),
        ("window_s=60&bucket_s=61", "bucket_s"),
        ("bucket_s=9223372036854775808", "bucket_s"),
        ("max_jobs=0", "max_jobs"),
        ("nonsense=1", "nonsense"),
    ] {
        let refused = t
            .api
            .get(&format!("/api/queues/api-tl/durations?{query}"))
            .await
            .error(400);
        assert!(refused.contains(needle), "{query}: {refused}");
    }
    let empty = t
        .api
        .get("/api/queues/api-none/durations")
        .await
        .expect(200);
    assert_eq!(empty["handlers"], json!([]));

    // A job whose history is over 256 KiB (70 attempts, each with 4 KiB of logs) is left out
    // of the durations, and counted as skipped.
    t.client
        .enqueue(
            TQ,
            &NewJob::new("chatty", b"x".to_vec())
                .with_id("tl-big")
                .with_max_attempts(80)
                .with_backoff(wasmq::queue::Backoff::fixed(Duration::ZERO)),
        )
        .await
        .unwrap();
    let log = "l".repeat(wasmq::queue::MAX_ATTEMPT_LOG_LEN);
    for _ in 0..70 {
        let leased = lease_one(&t.client, TQ).await;
        t.client
            .fail(
                TQ,
                &[wasmq::queue::Failure::new(&leased, "retry", "again").with_logs(&log, None)],
            )
            .await
            .unwrap();
    }
    let last = lease_one(&t.client, TQ).await;
    t.client
        .complete(
            TQ,
            &[wasmq::queue::Completion::new(&last, b"done".to_vec())],
        )
        .await
        .unwrap();
    let durations = t.api.get("/api/queues/api-tl/durations").await.expect(200);
    assert_eq!(
        (&durations["jobs_read"], &durations["jobs_skipped"]),
        (&json!(1), &json!(1)),
        "{durations}"
    );
    assert_eq!(durations["handlers"][0]["handler"], "greet");
    assert_eq!(durations["handlers"].as_array().unwrap().len(), 1);
}

/// Handlers: deploy, list, versions, rollback, remove.
async fn handlers(t: &mut Tour) {
    // Handlers: a real component through the same validation as `wasmq handler deploy`.
    let echo = guests::rust_bytes("echo");
    t.call("post", "/api/handlers/{name}");
    let v1 = t
        .api
        .deploy(
            "greet",
            "?memory=32MiB&timeout=5s&max_attempts=4&backoff=fixed:1s&concurrency=2&fuel=1000000\
             &may_enqueue=payments/charge,mail/*&may_enqueue_raw_ids=ledger/post",
            echo.clone(),
        )
        .await
        .expect(201);
    assert_eq!(v1["may_enqueue"], json!(["payments/charge", "mail/*"]));
    assert_eq!(v1["may_enqueue_raw_ids"], json!(["ledger/post"]));
    let refused = t
        .api
        .deploy("greet", "?may_enqueue=no-slash", echo.clone())
        .await
        .error(400);
    assert!(refused.contains("QUEUE/HANDLER"), "{refused}");
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["current"], true);
    assert_eq!(v1["memory"], 32 * 1024 * 1024);
    assert_eq!(v1["timeout_ms"], 5000);
    assert_eq!(v1["max_attempts"], 4);
    assert_eq!(v1["backoff"], "fixed:1s");
    assert_eq!(v1["concurrency"], 2);
    assert_eq!(v1["fuel"], 1000000);
    assert_eq!(v1["size"], echo.len());
    assert_eq!(v1["sha256"], wasmq::registry::sha256_hex(&echo));
    let v2 = t.api.deploy("greet", "", echo.clone()).await.expect(201);
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["memory"], 64 * 1024 * 1024);
    assert_eq!(v2["may_enqueue"], json!([]));
    let registry = Registry::connect(&t.redis.url()).await.unwrap();
    assert_eq!(registry.current().await.unwrap()["greet"].version, 2);

    t.call("get", "/api/handlers");
    let list = t.api.get("/api/handlers").await.expect(200);
    assert_eq!(list["handlers"].as_array().unwrap().len(), 1);
    assert_eq!(list["handlers"][0]["name"], "greet");
    assert_eq!(list["handlers"][0]["version"], 2);

    t.call("get", "/api/handlers/{name}/versions");
    let versions = t.api.get("/api/handlers/greet/versions").await.expect(200);
    assert_eq!(versions["current"], 2);
    assert_eq!(versions["versions"][0]["current"], false);
    assert_eq!(versions["versions"][1]["current"], true);

    t.call("post", "/api/handlers/{name}/rollback");
    let back = t
        .api
        .post_empty("/api/handlers/greet/rollback")
        .await
        .expect(200);
    assert_eq!(back["version"], 1);
    assert_eq!(back["memory"], 32 * 1024 * 1024);
    // A rollback restores the version's grants, child-job targets included.
    assert_eq!(back["may_enqueue"], json!(["payments/charge", "mail/*"]));
    let current = &registry.current().await.unwrap()["greet"];
    assert_eq!(current.settings.grants.may_enqueue_raw_ids, ["ledger/post"]);
    let forward = t
        .api
        .post("/api/handlers/greet/rollback", json!({"version": 2}))
        .await
        .expect(200);
    assert_eq!(forward["version"], 2);
    assert_eq!(registry.current().await.unwrap()["greet"].version, 2);

    t.call("delete", "/api/handlers/{name}");
    let removed = t.api.delete("/api/handlers/greet").await.expect(200);
    assert_eq!(removed, json!({"name": "greet", "removed_versions": 2}));
    assert!(registry.current().await.unwrap().is_empty());
}

/// Events: a handler deployed with `on` gets a job per event, once per event id.
async fn events(t: &mut Tour) {
    let echo = guests::rust_bytes("echo");
    t.call("post", "/api/events");
    t.api
        .deploy(
            "listener",
            "?on=order/created,order/paid&on_queue=api-events",
            echo.clone(),
        )
        .await
        .expect(201);
    let sent = t
        .api
        .post(
            "/api/events",
            json!({"name": "order/created", "data": {"order": 7}, "id": "ev-1"}),
        )
        .await
        .expect(200);
    assert_eq!(
        sent,
        json!({"id": "ev-1", "jobs": [{"handler": "listener", "queue": "api-events",
            "job_id": "evt:ev-1:listener", "created": true, "state": "waiting"}]})
    );
    let job = t
        .client
        .get("api-events", "evt:ev-1:listener")
        .await
        .unwrap()
        .unwrap();
    let payload: Value = serde_json::from_slice(&job.payload).unwrap();
    assert_eq!(
        payload,
        json!({"name": "order/created", "id": "ev-1", "data": {"order": 7}})
    );
    let again = t
        .api
        .post(
            "/api/events",
            json!({"name": "order/created", "id": "ev-1"}),
        )
        .await
        .expect(200);
    assert_eq!(again["jobs"][0]["created"], false);
    let nobody = t
        .api
        .post("/api/events", json!({"name": "user/signup"}))
        .await
        .expect(200);
    assert_eq!(nobody["jobs"], json!([]));
    let bad = t
        .api
        .post("/api/events", json!({"name": "has space"}))
        .await
        .error(400);
    assert!(bad.contains("event name"), "{bad}");
    t.api.delete("/api/handlers/listener").await.expect(200);
}

/// Schedules: add (and refuse a bad one, writing nothing), list, pause, resume, remove.
async fn schedules(t: &mut Tour) {
    t.call("post", "/api/schedules/{name}");
    let added = t
        .api
        .post(
            "/api/schedules/nightly",
            json!({"cron": "0 9 * * *", "tz": "Asia/Seoul", "queue": Q, "handler": "greet",
                   "payload": "hi", "catch_up": 1}),
        )
        .await
        .expect(201);
    assert_eq!(added["created"], true);
    assert_eq!(added["schedule"]["tz"], "Asia/Seoul");
    let next = &added["schedule"]["next_runs"][0];
    assert!(
        next["local"].as_str().unwrap().ends_with("T09:00:00+09:00"),
        "{next}"
    );
    assert!(
        next["utc"].as_str().unwrap().ends_with("T00:00:00+00:00"),
        "{next}"
    );
    let bad = t
        .api
        .post(
            "/api/schedules/other",
            json!({"cron": "0 9 * * *", "tz": "Mars/Olympus", "queue": Q, "handler": "greet"}),
        )
        .await
        .expect(400);
    assert!(
        bad["error"].as_str().unwrap().contains("unknown time zone"),
        "{bad}"
    );
    t.call("get", "/api/schedules");
    let listed = t.api.get("/api/schedules").await.expect(200);
    let names: Vec<&str> = listed["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nightly"]);
    t.call("post", "/api/schedules/{name}/pause");
    let paused = t
        .api
        .post_empty("/api/schedules/nightly/pause")
        .await
        .expect(200);
    assert_eq!(
        paused,
        json!({"name": "nightly", "paused": true, "changed": true})
    );
    t.call("post", "/api/schedules/{name}/resume");
    let resumed = t
        .api
        .post_empty("/api/schedules/nightly/resume")
        .await
        .expect(200);
    assert_eq!(
        resumed,
        json!({"name": "nightly", "paused": false, "changed": true})
    );
    t.api
        .post_empty("/api/schedules/nope/pause")
        .await
        .expect(404);
    t.call("delete", "/api/schedules/{name}");
    let removed = t.api.delete("/api/schedules/nightly").await.expect(200);
    assert_eq!(removed, json!({"name": "nightly", "removed": true}));
    t.api.delete("/api/schedules/nightly").await.expect(404);
}

/// The OpenAPI document itself (`the_openapi_document_validates_and_lists_every_route`
/// checks its paths).
async fn openapi(t: &mut Tour) {
    t.call("get", "/openapi.json");
    let doc = t.api.get("/openapi.json").await.expect(200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
}

#[tokio::test]
async fn writes_need_the_token_and_a_sent_token_is_always_checked() {
    let redis = RedisServer::start();
    let server = ApiServer::start(&redis, &["--token", TOKEN]);
    let anonymous = Http::new(&server, None);
    let wrong = Http::new(&server, Some("test-token-012345678"));
    let right = Http::new(&server, Some(TOKEN));
    let before = redis.snapshot().await;

    // Refused: every mutating endpoint, without a token, with a wrong one, or another scheme.
    let enqueue = json!({"handler": "greet", "payload": "x"});
    for api in [&anonymous, &wrong] {
        let answers = [
            api.post("/api/queues/api-q/jobs", enqueue.clone()).await,
            api.delete("/api/queues/api-q/jobs/j1").await,
            api.post_empty("/api/queues/api-q/pause").await,
            api.post_empty("/api/queues/api-q/resume").await,
            api.post_empty("/api/queues/api-q/check").await,
            api.post("/api/queues/api-q/dlq/replay", json!({"oldest": 1}))
                .await,
            api.post("/api/queues/api-q/dlq/purge", json!({"oldest": 1}))
                .await,
            api.deploy("greet", "", guests::rust_bytes("echo")).await,
            api.post_empty("/api/handlers/greet/rollback").await,
            api.delete("/api/handlers/greet").await,
        ];
        for answer in answers {
            assert_eq!(
                answer.headers.get("www-authenticate").unwrap(),
                "Bearer",
                "{}",
                answer.body
            );
            let message = answer.error(401);
            assert!(message.contains("token"), "{message}");
        }
    }
    let basic = anonymous
        .send(
            anonymous
                .request(Method::POST, "/api/queues/api-q/pause")
                .basic_auth("user", Some(TOKEN)),
        )
        .await
        .error(401);
    assert!(basic.contains("Bearer"), "{basic}");
    assert_eq!(
        redis.snapshot().await,
        before,
        "refused requests wrote nothing"
    );

    // On loopback, reads need no token.
    anonymous.get("/api/queues/api-q").await.expect(200);
    anonymous.get("/api/handlers").await.expect(200);
    anonymous.get("/openapi.json").await.expect(200);
    // ...but a token that is sent is checked, and a read without one must not come through
    // DNS rebinding (a page of evil.example whose name resolves to 127.0.0.1).
    wrong.get("/api/queues/api-q").await.error(401);
    let rebound = anonymous
        .send(
            anonymous
                .request(Method::GET, "/api/queues/api-q/jobs")
                .header("host", "evil.example:7070"),
        )
        .await
        .error(403);
    assert!(rebound.contains("loopback"), "{rebound}");
    right
        .send(
            right
                .request(Method::GET, "/api/queues/api-q/jobs")
                .header("host", "wasmq.internal:7070"),
        )
        .await
        .expect(200);

    // Accepted with the token.
    right
        .post("/api/queues/api-q/jobs", enqueue.clone())
        .await
        .expect(201);
    right
        .post_empty("/api/queues/api-q/pause")
        .await
        .expect(200);
    // The scheme is case-insensitive.
    let lower = anonymous
        .send(
            anonymous
                .request(Method::POST, "/api/queues/api-q/resume")
                .header("authorization", format!("bearer {TOKEN}")),
        )
        .await
        .expect(200);
    assert_eq!(lower["changed"], true);

    // No CORS: no Access-Control headers, and a preflight is not granted.
    let response = reqwest::Client::new()
        .get(server.url("/api/queues"))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    assert!(
        response
            .headers()
            .keys()
            .all(|name| !name.as_str().starts_with("access-control-")),
        "{:?}",
        response.headers()
    );
    let preflight = reqwest::Client::new()
        .request(Method::OPTIONS, server.url("/api/queues/api-q/jobs"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(!preflight.status().is_success(), "{}", preflight.status());
    assert!(
        preflight
            .headers()
            .keys()
            .all(|name| !name.as_str().starts_with("access-control-"))
    );
}

#[tokio::test]
async fn without_a_token_only_loopback_names_and_origins_are_served() {
    let redis = RedisServer::start();
    let server = ApiServer::start(&redis, &[]);
    let api = Http::new(&server, None);
    api.post_empty("/api/queues/api-q/pause").await.expect(200);
    let before = redis.snapshot().await;
    // DNS rebinding: a page of evil.example whose name resolves to 127.0.0.1.
    let rebound = api
        .send(
            api.request(Method::POST, "/api/queues/api-q/resume")
                .header("host", "evil.example:7070"),
        )
        .await
        .error(403);
    assert!(rebound.contains("loopback"), "{rebound}");
    // A cross-site form post from a page the operator has open.
    let cross = api
        .send(
            api.request(Method::POST, "/api/queues/api-q/resume")
                .header("origin", "https://evil.example"),
        )
        .await
        .error(403);
    assert!(cross.contains("origin"), "{cross}");
    assert_eq!(redis.snapshot().await, before);
    let same = api
        .send(
            api.request(Method::POST, "/api/queues/api-q/resume")
                .header(
                    "origin",
                    format!("http://localhost:{}", server.addr().port()),
                ),
        )
        .await
        .expect(200);
    assert_eq!(same["paused"], false);
}

#[tokio::test]
async fn bad_input_is_a_4xx_with_a_message_and_writes_nothing() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    // A small payload limit, so an oversize payload and an oversize body are cheap to send.
    let config = QueueConfig {
        max_payload_bytes: 1000,
        ..QueueConfig::default()
    };
    client.set_config(Q, &config).await.unwrap();
    client
        .enqueue(Q, &NewJob::new("greet", "x").with_id("done-job"))
        .await
        .unwrap();
    let leased = client
        .fetch(Q, 1, Duration::from_secs(60), "test-host")
        .await
        .unwrap();
    client
        .complete(
            Q,
            &[wasmq::queue::Completion::new(&leased[0], b"".to_vec())],
        )
        .await
        .unwrap();
    let registry = Registry::connect(&redis.url()).await.unwrap();
    let server = ApiServer::start(&redis, &["--token", TOKEN]);
    let api = Http::new(&server, Some(TOKEN));
    let echo = guests::rust_bytes("echo");
    let runtime = wasmq::Runtime::new(wasmq::RuntimeConfig {
        pooling: false,
        ..wasmq::worker::host_runtime()
    })
    .unwrap();
    registry
        .deploy(
            &runtime,
            "greet",
            echo.clone(),
            &Default::default(),
            |_: u64, _: u64| {},
        )
        .await
        .unwrap();
    let before = redis.snapshot().await;

    let jobs = "/api/queues/api-q/jobs";
    let json_post = |path: &str, body: &str| {
        api.request(Method::POST, path)
            .header("content-type", "application/json")
            .body(body.to_string())
    };
    let big_payload = "x".repeat(1001);
    let big_body = format!(
        r#"{{"handler":"greet","payload":"{}"}}"#,
        "y".repeat(2 << 20)
    );
    // (request, status, a word the message must contain)
    let table: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (json_post(jobs, r#"{"handler":"#), 400, "invalid JSON"),
        (json_post(jobs, "[1,2]"), 400, "invalid JSON"),
        (
            json_post(jobs, r#"{"handler":"greet","priority":"high"}"#),
            400,
            "priority",
        ),
        (
            json_post(jobs, r#"{"handler":"greet","atempts":3}"#),
            400,
            "unknown field",
        ),
        (json_post(jobs, r#"{"payload":"x"}"#), 400, "handler"),
        (
            json_post(jobs, r#"{"handler":"greet","priority":5000}"#),
            400,
            "priority",
        ),
        (
            json_post(jobs, r#"{"handler":"greet","max_attempts":0}"#),
            400,
            "attempts",
        ),
        (
            json_post(jobs, r#"{"handler":"greet","timeout_ms":0}"#),
            400,
            "timeout",
        ),
        (json_post(jobs, r#"{"handler":"gr eet"}"#), 400, "handler"),
        (json_post(jobs, r#"{"handler":"greet","id":""}"#), 400, "id"),
        (
            json_post(jobs, r#"{"handler":"greet","delay_ms":1,"run_at_ms":1}"#),
            400,
            "not both",
        ),
        (
            json_post(jobs, r#"{"handler":"greet","backoff":"linear:1s"}"#),
            400,
            "backoff",
        ),
        (
            json_post(
                jobs,
                r#"{"handler":"greet","payload":"%%","payload_encoding":"base64"}"#,
            ),
            400,
            "base64",
        ),
        (
            json_post(jobs, r#"{"handler":"greet","payload_encoding":"hex"}"#),
            400,
            "payload_encoding",
        ),
        (
            json_post(
                jobs,
                r#"{"handler":"greet","delay_ms":1000000000000000000}"#,
            ),
            400,
            // Refused by the client's check (NewJob::validate), before enqueue.lua sees it.
            "delay must be at most",
        ),
        (
            api.request(Method::POST, jobs)
                .body(r#"{"handler":"greet"}"#),
            415,
            "application/json",
        ),
        (
            json_post(
                jobs,
                &format!(r#"{{"handler":"greet","payload":"{big_payload}"}}"#),
            ),
            413,
            "1000",
        ),
        (json_post(jobs, &big_body), 413, "limit"),
        (
            json_post("/api/queues/a%7Bb/jobs", r#"{"handler":"greet"}"#),
            400,
            "queue name",
        ),
        (
            api.request(Method::GET, "/api/queues/api-q/jobs?state=sleeping"),
            400,
            "sleeping",
        ),
        (
            api.request(Method::GET, "/api/queues/api-q/jobs?limit=0"),
            400,
            "limit",
        ),
        (
            api.request(Method::GET, "/api/queues/api-q/jobs?limit=many"),
            400,
            "limit",
        ),
        (
            api.request(Method::GET, "/api/queues/api-q/jobs?colour=red"),
            400,
            "colour",
        ),
        (
            api.request(Method::GET, "/api/queues/api-q/dlq?limit=1001"),
            400,
            "limit",
        ),
        (
            api.request(Method::GET, "/api/queues/api-q/events?after=nope"),
            400,
            "stream id",
        ),
        (
            api.request(Method::GET, "/api/queues/api-q/jobs/missing"),
            404,
            "missing",
        ),
        (
            api.request(Method::DELETE, "/api/queues/api-q/jobs/missing"),
            404,
            "missing",
        ),
        (
            api.request(Method::DELETE, "/api/queues/api-q/jobs/done-job"),
            409,
            "completed",
        ),
        (
            json_post("/api/queues/api-q/cancel", "{}"),
            400,
            "handler or a group",
        ),
        (
            json_post(
                "/api/queues/api-q/cancel",
                r#"{"handler":"greet","limit":0}"#,
            ),
            400,
            "limit",
        ),
        (json_post("/api/queues/api-q/dlq/replay", "{}"), 400, "ids"),
        (
            json_post("/api/queues/api-q/dlq/replay", r#"{"ids":[],"oldest":1}"#),
            400,
            "ids",
        ),
        (
            json_post("/api/queues/api-q/dlq/purge", r#"{"oldest":0}"#),
            400,
            "oldest",
        ),
        (
            json_post("/api/queues/api-q/dlq/purge", r#"{"ids":"j1"}"#),
            400,
            "ids",
        ),
        (
            json_post("/api/queues/api-q/dlq/purge", &big_body),
            413,
            "limit",
        ),
        (
            api.request(Method::GET, "/api/handlers/nobody/versions"),
            404,
            "nobody",
        ),
        (
            json_post("/api/handlers/nobody/rollback", ""),
            404,
            "nobody",
        ),
        (
            json_post("/api/handlers/greet/rollback", r#"{"version":"one"}"#),
            400,
            "version",
        ),
        (
            json_post("/api/handlers/greet/rollback", r#"{"version":7}"#),
            404,
            "no version 7",
        ),
        (
            api.request(Method::POST, "/api/handlers/greet/rollback"),
            404,
            "no version before",
        ),
        (
            api.request(Method::DELETE, "/api/handlers/nobody"),
            404,
            "nobody",
        ),
        (
            api.request(Method::GET, "/api/nothing-here"),
            404,
            "/api/nothing-here",
        ),
        (
            api.request(Method::PUT, "/api/queues"),
            405,
            "method not allowed",
        ),
    ];
    for (request, status, word) in table {
        let built = request.try_clone().unwrap().build().unwrap();
        let what = format!("{} {}", built.method(), built.url());
        let answer = api.send(request).await;
        assert_eq!(answer.status.as_u16(), status, "{what}: {}", answer.body);
        let message = answer.error(status);
        assert!(
            message.to_lowercase().contains(&word.to_lowercase()),
            "{what}: {message:?} should mention {word:?}"
        );
    }

    // Deploys: refused components, settings and sizes, through the real validation.
    let wasm = |name: &str, query: &str, bytes: Vec<u8>| {
        api.request(Method::POST, &format!("/api/handlers/{name}{query}"))
            .header("content-type", "application/wasm")
            .body(bytes)
    };
    let core_module = wat::parse_str("(module)").unwrap();
    let deploys: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            wasm("greet", "", b"not a component at all".to_vec()),
            422,
            "refused",
        ),
        (wasm("greet", "", core_module), 422, "component"),
        (
            wasm("greet", "", echo[..echo.len() / 2].to_vec()),
            422,
            "refused",
        ),
        (wasm("greet", "?memory=lots", echo.clone()), 400, "memory"),
        (wasm("greet", "?timeout=0s", echo.clone()), 400, "timeout"),
        (wasm("greet", "?colour=red", echo.clone()), 400, "colour"),
        (
            wasm("greet", "?concurrency=0", echo.clone()),
            400,
            "concurrency",
        ),
        (wasm("gr%20eet", "", echo.clone()), 400, "handler name"),
        (
            wasm(
                "greet",
                "?databases=main%3Dpostgres%3A%2F%2Fu%3Apw%40db%2Fx",
                echo.clone(),
            ),
            400,
            "secret:name",
        ),
        (
            wasm("greet", "?databases=bad%20name%3Dsecret%3AX", echo.clone()),
            400,
            "database name",
        ),
        (
            api.request(Method::POST, "/api/handlers/greet")
                .header("content-type", "text/plain")
                .body(echo.clone()),
            415,
            "application/wasm",
        ),
    ];
    for (request, status, word) in deploys {
        let message = api.send(request).await.error(status);
        assert!(
            message.to_lowercase().contains(word),
            "{status}: {message:?} should mention {word:?}"
        );
    }
    assert_eq!(
        redis.snapshot().await,
        before,
        "refused requests wrote nothing"
    );

    // Databases are granted by name and the secret holding the URL; the version shows both.
    let orders = api
        .deploy(
            "orders",
            "?databases=main%3Dsecret%3AAPP_DB_URL,ro%3Dsecret%3ARO_URL",
            echo.clone(),
        )
        .await
        .expect(201);
    assert_eq!(
        orders["databases"],
        json!({"main": "secret:APP_DB_URL", "ro": "secret:RO_URL"})
    );

    // Over the registry's upload limit: 413 before any compile (the limit is a write, so it
    // is part of the new "before").
    registry.set_max_upload(1000).await.unwrap();
    let before = redis.snapshot().await;
    let message = api.send(wasm("greet", "", echo.clone())).await.error(413);
    assert!(message.contains("1000"), "{message}");
    assert_eq!(
        redis.snapshot().await,
        before,
        "an oversize upload wrote nothing"
    );
}

/// A compile bomb sent to the API is compiled in a child process under the server's compile
/// limits, refused with a 422 naming the limit, and written nowhere; the server stays small.
#[tokio::test]
async fn a_compile_bomb_is_refused_naming_the_limit_and_writes_nothing() {
    let redis = RedisServer::start();
    let server = ApiServer::start(&redis, &["--compile-memory", "256MiB"]);
    let api = Http::new(&server, None);
    let before = redis.snapshot().await;
    let bomb = crate::corpus::table::loop_bomb(crate::corpus::table::LOOP_BOMB_DEPTH);
    let message = api.deploy("bomb", "", bomb).await.error(422);
    assert!(
        message.contains("compile memory limit (256.0 MiB"),
        "{message}"
    );
    assert_eq!(
        redis.snapshot().await,
        before,
        "a refused deploy wrote nothing"
    );
    // The server did not compile it itself.
    let (_, peak) = crate::support::resident(server.pid());
    assert!(
        peak < 200 * 1024 * 1024,
        "wasmq serve peaked at {} KiB",
        peak / 1024
    );

    let answer = api.deploy("greet", "", guests::rust_bytes("echo")).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
}

#[tokio::test]
async fn redis_unreachable_is_503_and_recovers() {
    let mut redis = RedisServer::start();
    let server = ApiServer::start(&redis, &["--token", TOKEN]);
    let api = Http::new(&server, Some(TOKEN));
    api.get("/healthz").await.expect(200);
    redis.stop();
    let message = api.get("/healthz").await.error(503);
    assert!(message.contains("Redis"), "{message}");
    api.get("/api/queues/api-q").await.error(503);
    api.get("/api/queues").await.error(503);
    api.get("/api/handlers").await.error(503);
    api.post("/api/queues/api-q/jobs", json!({"handler": "greet"}))
        .await
        .error(503);
    redis.restart();
    eventually("healthz answers again", Duration::from_secs(20), || async {
        (api.get("/healthz").await.status == StatusCode::OK).then_some(())
    })
    .await;
    api.post("/api/queues/api-q/jobs", json!({"handler": "greet"}))
        .await
        .expect(201);
}

/// Runs `wasmq serve <args>` expecting it to refuse to start; returns its stderr.
fn refused_start(redis_url: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wasmq"))
        .arg("serve")
        .args(args)
        .args(["--redis", redis_url])
        .env_remove("WASMQ_API_TOKEN")
        .env_remove("WASMQ_HTTP")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn unsafe_or_impossible_binds_are_refused_at_startup() {
    let redis = RedisServer::start();
    let url = redis.url();
    for addr in ["0.0.0.0:0", "[::]:0", "192.0.2.1:7070"] {
        let stderr = refused_start(&url, &["--http", addr]);
        assert!(stderr.contains("without a token"), "{addr}: {stderr}");
        assert!(stderr.contains("WASMQ_API_TOKEN"), "{addr}: {stderr}");
    }
    let stderr = refused_start(&url, &["--http", "127.0.0.1:0", "--token", " "]);
    assert!(stderr.contains("empty"), "{stderr}");
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let stderr = refused_start(&url, &["--http", &format!("127.0.0.1:{port}")]);
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    assert!(stderr.contains("another process"), "{stderr}");
    // `wasmq run --http` refuses the same way, before starting the worker.
    let out = Command::new(env!("CARGO_BIN_EXE_wasmq"))
        .args([
            "run",
            "--queues",
            Q,
            "--http",
            "0.0.0.0:7070",
            "--redis",
            &url,
        ])
        .env_remove("WASMQ_API_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("without a token"));
}

/// Every `$ref` in `value`.
fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                match (key.as_str(), item) {
                    ("$ref", Value::String(target)) => out.push(target),
                    _ => refs(item, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| refs(item, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_openapi_document_validates_and_lists_every_route() {
    let redis = RedisServer::start();
    let server = ApiServer::start(&redis, &[]);
    let api = Http::new(&server, None);
    let doc = api.get("/openapi.json").await.expect(200);
    assert_eq!(doc, serde_json::to_value(wasmq::api::openapi()).unwrap());

    // Structurally valid OpenAPI 3.1: it parses into the oas3 model...
    let text = doc.to_string();
    let spec = oas3::from_json(&text).unwrap_or_else(|err| panic!("invalid OpenAPI: {err}"));
    assert!(spec.openapi.starts_with("3.1"), "{}", spec.openapi);
    // ...and every reference resolves.
    let mut targets = Vec::new();
    refs(&doc, &mut targets);
    assert!(!targets.is_empty());
    for target in targets {
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{target}"));
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {target}");
    }

    // Exactly the router's routes, with their path parameters declared, the bearer scheme on
    // every mutating one, and the error shape on every error answer.
    let mut listed = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            listed.insert((method.clone(), path.clone()));
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .map(|p| p["name"].as_str().unwrap())
                        .collect()
                })
                .unwrap_or_default();
            let in_path: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            assert_eq!(declared, in_path, "{method} {path}");
            let secured = op["security"] == json!([{"bearer": []}]);
            assert_eq!(secured, method != "get", "{method} {path} security");
            for (status, response) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(listed, routes);
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer"})
    );
    assert_eq!(
        doc["components"]["schemas"]["JobState"]["enum"],
        json!(JobState::ALL.map(|s| s.as_str()))
    );
}

#[tokio::test]
async fn run_serves_the_api_beside_the_worker_and_stops_with_it() {
    let redis = RedisServer::start();
    let addr = crate::support::free_loopback_addr();
    let echo = guests::rust("echo");
    let handler = format!("greet={}", echo.display());
    let mut host = HostProcess::builder(&redis.url())
        .args([
            "--queues",
            Q,
            "--handler",
            &handler,
            "--http",
            &addr,
            "--no-cache",
        ])
        .start();
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    eventually("the API answers", Duration::from_secs(30), || async {
        let response = http.get(format!("{base}/healthz")).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
    let queues: Value = http
        .get(format!("{base}/api/queues"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        queues["queues"],
        json!([Q]),
        "the worker's queues are known"
    );
    let enqueued: Value = http
        .post(format!("{base}/api/queues/{Q}/jobs"))
        .json(&json!({"handler": "greet", "payload": "through the API"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = enqueued["id"].as_str().unwrap().to_string();
    let job: Value = eventually("the job completed", Duration::from_secs(30), || async {
        let job: Value = http
            .get(format!("{base}/api/queues/{Q}/jobs/{id}"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (job["state"] == "completed").then_some(job)
    })
    .await;
    assert_eq!(job["result"], "through the API");
    assert_eq!(job["result_encoding"], "utf8");
    assert_eq!(job["history"][0]["outcome"], "ok");

    host.sigterm();
    assert!(host.wait_exit(Duration::from_secs(30)).success());
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "the API stopped with the worker"
    );
}

/// Schemathesis (tests/tools) generates requests from `/openapi.json` (valid ones, and
/// invalid ones of every shape the document allows) against a server with a real Redis: none
/// may get a 5xx. Bounded: 20 examples per operation, a fixed seed, one worker.
#[tokio::test]
async fn schemathesis_finds_no_server_error() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    // Some data for the generated requests to meet: jobs in several states.
    client
        .enqueue(Q, &NewJob::new("greet", b"hello".to_vec()).with_id("j1"))
        .await
        .unwrap();
    kill_all(&client, Q).await;
    client
        .enqueue(Q, &NewJob::new("greet", b"again".to_vec()).with_id("j2"))
        .await
        .unwrap();
    let server = ApiServer::start(&redis, &["--token", TOKEN, "--queues", Q]);
    let tools = crate::support::tools::script("");
    let out = tokio::task::spawn_blocking({
        let schema = server.url("/openapi.json");
        move || {
            Command::new(crate::support::tools::python())
                .args(["-m", "schemathesis.cli", "run", &schema])
                .args(["--checks", "not_a_server_error"])
                .args(["--max-examples", "20", "--seed", "1", "--workers", "1"])
                .args(["--request-timeout", "10"])
                .args(["--generation-database", "none", "--no-color"])
                .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
                .env("PYTHONPATH", &tools)
                .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
                .current_dir(std::env::temp_dir())
                .output()
                .expect("run schemathesis")
        }
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found a problem ({}):\n{report}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("passed"), "{report}");
    // The server and Redis are still well.
    let api = Http::new(&server, Some(TOKEN));
    api.get("/healthz").await.expect(200);
}

/// `http` and `api_token` in `wasmq run --config`: the API comes up there and wants the token.
#[tokio::test]
async fn run_takes_the_api_address_and_token_from_its_config_file() {
    let redis = RedisServer::start();
    let addr = crate::support::free_loopback_addr();
    let toml = format!("http = \"{addr}\"\napi_token = \"{TOKEN}\"\n");
    let _host = HostProcess::builder(&redis.url())
        .config(&toml)
        .args(["--queues", Q])
        .start();
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    eventually("the API answers", Duration::from_secs(30), || async {
        let response = http.get(format!("{base}/healthz")).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
    let job = json!({"handler": "greet", "payload": "x"});
    let refused = http
        .post(format!("{base}/api/queues/{Q}/jobs"))
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let accepted = http
        .post(format!("{base}/api/queues/{Q}/jobs"))
        .bearer_auth(TOKEN)
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::CREATED);
}

/// Reads `stream` until the server closes it (EOF or reset); how long that took, or `None`
/// when it was still open after `within`.
fn closed_within(stream: &mut std::net::TcpStream, within: Duration) -> Option<Duration> {
    use std::io::Read;
    let start = std::time::Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while start.elapsed() < within {
        match stream.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

#[tokio::test]
async fn half_sent_requests_and_idle_connections_are_closed_after_the_header_timeout() {
    use std::io::Write;
    let redis = RedisServer::start();
    let server = ApiServer::start(&redis, &["--http-header-timeout", "1s"]);
    let mut half_sent = std::net::TcpStream::connect(server.addr()).unwrap();
    half_sent
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    let mut idle = std::net::TcpStream::connect(server.addr()).unwrap();
    let took = closed_within(&mut half_sent, Duration::from_secs(10))
        .expect("a half-sent request still open 10 s later");
    assert!(took >= Duration::from_millis(500), "closed after {took:?}");
    closed_within(&mut idle, Duration::from_secs(5)).expect("an idle connection still open");
    // A kept-alive connection idle after its response goes the same way.
    let mut kept = std::net::TcpStream::connect(server.addr()).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    closed_within(&mut kept, Duration::from_secs(10)).expect("a kept-alive connection idle");
    // The server serves on.
    Http::new(&server, None).get("/healthz").await.expect(200);
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once() {
    let redis = RedisServer::start();
    let server = ApiServer::start(
        &redis,
        &[
            "--http-max-connections",
            "4",
            "--http-header-timeout",
            "60s",
        ],
    );
    let mut held: Vec<_> = (0..4)
        .map(|_| std::net::TcpStream::connect(server.addr()).unwrap())
        .collect();
    // Let the server accept them all.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = std::net::TcpStream::connect(server.addr()).unwrap();
    let took = closed_within(&mut extra, Duration::from_secs(5))
        .expect("a connection over the cap was kept open");
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    for stream in &mut held {
        assert!(
            closed_within(stream, Duration::from_millis(200)).is_none(),
            "a connection within the cap was closed"
        );
    }
    // A connection that closes makes room for another.
    held.pop();
    eventually(
        "room for a new connection",
        Duration::from_secs(10),
        || async {
            let fresh = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            let answer = fresh.get(server.url("/healthz")).send().await.ok()?;
            (answer.status() == StatusCode::OK).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn without_a_token_pages_of_other_local_servers_cannot_write() {
    let redis = RedisServer::start();
    let server = ApiServer::start(&redis, &[]);
    let api = Http::new(&server, None);
    let before = redis.snapshot().await;
    let other_port = if server.addr().port() == 3000 {
        3001
    } else {
        3000
    };
    // A page of another local server (a dev server on another port) is another origin.
    for origin in [
        format!("http://localhost:{other_port}"),
        format!("http://127.0.0.1:{other_port}"),
        "http://127.0.0.1".to_string(),
    ] {
        let message = api
            .send(
                api.request(Method::POST, "/api/queues/api-q/pause")
                    .header("origin", &origin),
            )
            .await
            .error(403);
        assert!(message.contains("origin"), "{origin}: {message}");
    }
    // A browser that sends no Origin still says where the request came from.
    for site in ["same-site", "cross-site"] {
        let message = api
            .send(
                api.request(Method::POST, "/api/queues/api-q/pause")
                    .header("sec-fetch-site", site),
            )
            .await
            .error(403);
        assert!(message.contains("Sec-Fetch-Site"), "{site}: {message}");
    }
    assert_eq!(redis.snapshot().await, before);
    // The server's own pages, and clients that are not browsers, still write.
    let own = format!("http://127.0.0.1:{}", server.addr().port());
    api.send(
        api.request(Method::POST, "/api/queues/api-q/pause")
            .header("origin", &own)
            .header("sec-fetch-site", "same-origin"),
    )
    .await
    .expect(200);
    api.post_empty("/api/queues/api-q/resume").await.expect(200);
    // Reads from a page of another origin are not writes; CORS keeps their answers from it.
    api.send(
        api.request(Method::GET, "/api/queues/api-q")
            .header("sec-fetch-site", "cross-site"),
    )
    .await
    .expect(200);
}

#[tokio::test]
async fn data_after_a_json_body_is_refused() {
    let redis = RedisServer::start();
    let server = ApiServer::start(&redis, &["--token", TOKEN]);
    let api = Http::new(&server, Some(TOKEN));
    let before = redis.snapshot().await;
    for body in [
        r#"{"handler":"greet"}{"handler":"evil"}"#,
        r#"{"handler":"greet"} x"#,
        r#"{"handler":"greet"}]"#,
    ] {
        let message = api
            .send(
                api.request(Method::POST, "/api/queues/api-q/jobs")
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await
            .error(400);
        assert!(
            message.contains("after the JSON value"),
            "{body}: {message}"
        );
    }
    assert_eq!(redis.snapshot().await, before);
    // Trailing whitespace is not data.
    api.send(
        api.request(Method::POST, "/api/queues/api-q/jobs")
            .header("content-type", "application/json")
            .body("{\"handler\":\"greet\"}\n"),
    )
    .await
    .expect(201);
}

#[tokio::test]
async fn serve_reports_whether_redis_is_up_in_its_metrics() {
    let mut redis = RedisServer::start();
    let server = ApiServer::start(&redis, &[]);
    let scrape = || async {
        reqwest::get(server.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let text = scrape().await;
    assert!(text.contains("\nwasmq_redis_up 1\n"), "{text}");
    redis.stop();
    let text = scrape().await;
    assert!(text.contains("\nwasmq_redis_up 0\n"), "{text}");
}

/// A token file names its tokens: a cancel made with one records its name as `cancelled_by`
/// (`--token`'s is `api`); a wrong token is refused, and a malformed file or a token given
/// under two names stops the server at startup without echoing a token.
#[tokio::test]
async fn a_cancel_records_the_name_of_the_token_that_made_it() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(
        &file,
        "# who may call the API\nops   ops-token-0123456789\n\ndeploy-bot bot-token-0123456789\n",
    )
    .unwrap();
    let file_arg = file.to_str().unwrap();
    let server = ApiServer::start(&redis, &["--token", TOKEN, "--token-file", file_arg]);
    let ops = Http::new(&server, Some("ops-token-0123456789"));
    let bot = Http::new(&server, Some("bot-token-0123456789"));
    let unnamed = Http::new(&server, Some(TOKEN));
    let wrong = Http::new(&server, Some("nobody-token-01234567"));
    let later = json!({"handler": "greet", "payload": "x", "delay_ms": 3_600_000});
    let mut ids = Vec::new();
    for _ in 0..3 {
        let created = unnamed
            .post("/api/queues/api-q/jobs", later.clone())
            .await
            .expect(201);
        ids.push(created["id"].as_str().unwrap().to_string());
    }
    wrong
        .delete(&format!("/api/queues/api-q/jobs/{}", ids[0]))
        .await
        .error(401);
    ops.delete(&format!("/api/queues/api-q/jobs/{}", ids[0]))
        .await
        .expect(200);
    unnamed
        .delete(&format!("/api/queues/api-q/jobs/{}", ids[1]))
        .await
        .expect(200);
    let page = bot
        .post("/api/queues/api-q/cancel", json!({"handler": "greet"}))
        .await
        .expect(200);
    assert_eq!(page["cancelled"], json!([ids[2]]), "{page}");
    for (id, by) in [(&ids[0], "ops"), (&ids[1], "api"), (&ids[2], "deploy-bot")] {
        let job = ops
            .get(&format!("/api/queues/api-q/jobs/{id}"))
            .await
            .expect(200);
        assert_eq!(
            (&job["state"], &job["cancelled_by"]),
            (&json!("dead"), &json!(by)),
            "{job}"
        );
    }

    let url = redis.url();
    for (text, expected) in [
        ("ops ops-token-0123456789 extra\n", "line 1"),
        ("ops\n", "line 1"),
        ("# nothing\n", "names no token"),
        (
            "a same-token-0123456789\nb same-token-0123456789\n",
            "under two names",
        ),
        ("api other-token-0123456789\n", "given twice"),
        ("b@d x-token-0123456789\n", "is not 1 to 64"),
        // Written token first: the error does not show the token it took for a name.
        ("x-token+0123456789/ ops\n", "is not 1 to 64"),
    ] {
        std::fs::write(&file, text).unwrap();
        let stderr = refused_start(&url, &["--token", TOKEN, "--token-file", file_arg]);
        assert!(stderr.contains(expected), "{text:?}: {stderr}");
        for secret in ["ops-token", "same-token", "other-token", "x-token"] {
            assert!(!stderr.contains(secret), "{text:?} leaked: {stderr}");
        }
    }
}
