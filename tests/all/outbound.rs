//! Outbound HTTP and config/secrets, through real components and a real HTTP server on
//! loopback: what a grant allows, what the address rules refuse although it looks allowed,
//! and the limits (deadline, body size, connections) on requests that are allowed.
//!
//! The guest is `http-fetch`, written without wasmq's SDK (plain wit-bindgen bindings and the
//! `wstd` crate's HTTP client), as a component a team would bring.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use wasmq::capability::{Capabilities, Grants, HostResources, HttpLimitOverrides, SecretSource};
use wasmq::{
    Handler, JobInput, JobLimits, Outcome, OutcomeClass, RunReport, Runtime, RuntimeConfig,
};

use wasmq::queue::{Backoff, Client, Job, JobState, NewJob};

use crate::support::cli::{ok, wasmq};
use crate::support::eventually;
use crate::support::guests;
use crate::support::host::HostProcess;
use crate::support::http_server::TestServer;
use crate::support::jobs::keep_everything;
use crate::support::redis::RedisServer;

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Runtime::new(RuntimeConfig {
            max_instances: 300,
            ..RuntimeConfig::default()
        })
        .unwrap()
    })
}

fn fetch_handler() -> Handler {
    static H: OnceLock<Handler> = OnceLock::new();
    H.get_or_init(|| runtime().load(&guests::rust_bytes("http-fetch")).unwrap())
        .clone()
}

fn granted(grants: Grants, secrets: &SecretSource) -> Handler {
    let caps = Capabilities::resolve(
        "http-fetch",
        &grants,
        &HostResources::with_secrets(secrets.clone()),
    )
    .unwrap();
    assert!(caps.missing_secrets().is_empty(), "{caps:?}");
    fetch_handler().with_capabilities(Arc::new(caps))
}

fn allow(patterns: &[String]) -> Handler {
    granted(
        Grants {
            allow_outbound: patterns.to_vec(),
            ..Grants::default()
        },
        &SecretSource::default(),
    )
}

async fn fetch(handler: &Handler, url: &str, timeout: Duration) -> RunReport {
    let payload = serde_json::json!({ "url": url }).to_string().into_bytes();
    let job = JobInput {
        id: "job-1".into(),
        queue: "default".into(),
        handler: "http-fetch".into(),
        payload,
        attempt: 1,
        max_attempts: 3,
    };
    let limits = JobLimits {
        timeout,
        memory: 64 * 1024 * 1024,
        fuel: None,
    };
    runtime().run(handler, job, &limits).await
}

fn result_json(report: &RunReport) -> serde_json::Value {
    match &report.outcome {
        Outcome::Ok(bytes) => serde_json::from_slice(bytes).unwrap(),
        other => panic!("expected ok, got {other:?} (logs {:?})", report.logs),
    }
}

fn failed_with(report: &RunReport, code: &str) {
    match &report.outcome {
        Outcome::Fail(message) => assert!(
            message.contains(code),
            "expected {code} in the guest's error, got {message:?}"
        ),
        other => panic!("expected the guest to fail with {code}, got {other:?}"),
    }
}

#[tokio::test]
async fn an_allowed_request_goes_out_with_the_secret_and_config_while_an_ungranted_one_is_denied() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "tok-8f3a9c\n").unwrap();
    let secrets = SecretSource {
        dir: Some(dir.path().to_path_buf()),
    };
    let handler = granted(
        Grants {
            allow_outbound: vec![server.origin()],
            config: [("url".to_string(), server.url("/ok"))].into(),
            secrets: vec!["token".into()],
            ..Grants::default()
        },
        &secrets,
    );
    // The url comes from config when the payload has none.
    let job = JobInput {
        payload: b"{}".to_vec(),
        handler: "http-fetch".into(),
        max_attempts: 1,
        attempt: 1,
        ..JobInput::default()
    };
    let report = runtime()
        .run(
            &handler,
            job,
            &JobLimits {
                timeout: Duration::from_secs(10),
                ..JobLimits::default()
            },
        )
        .await;
    let result = result_json(&report);
    assert_eq!(result["status"], 200);
    assert_eq!(result["body"], "hello");
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["authorization"], "Bearer tok-8f3a9c");
    assert_eq!(seen[0].headers["host"], server.addr.to_string());

    // The same component, not granted: denied in the guest, and nothing reached the server.
    let bare = fetch_handler();
    failed_with(
        &fetch(&bare, &server.url("/ok"), Duration::from_secs(10)).await,
        "HttpRequestDenied",
    );
    // Granted another port of the same address: denied too.
    let other_port = allow(&[format!("http://127.0.0.1:{}", server.addr.port() + 1)]);
    failed_with(
        &fetch(&other_port, &server.url("/ok"), Duration::from_secs(10)).await,
        "HttpRequestDenied",
    );
    assert_eq!(
        server.seen().len(),
        1,
        "denied requests must not reach the server"
    );
}

#[tokio::test]
async fn requests_that_look_allowed_but_reach_a_forbidden_address_are_denied() {
    let server = TestServer::start().await;
    let port = server.addr.port();
    // The name is allowed, but it resolves to 127.0.0.1, which no pattern names.
    let by_name = allow(&[
        format!("http://localhost:{port}"),
        "http://*.example.com".into(),
    ]);
    failed_with(
        &fetch(
            &by_name,
            &format!("http://localhost:{port}/ok"),
            Duration::from_secs(10),
        )
        .await,
        "DestinationIpProhibited",
    );
    // Userinfo naming an allowed host in front of another one.
    failed_with(
        &fetch(
            &by_name,
            &format!("http://localhost:{port}@127.0.0.1:{port}/ok"),
            Duration::from_secs(10),
        )
        .await,
        "HttpRequestDenied",
    );
    // The metadata address and an IPv4-mapped loopback address, allowed by no pattern.
    for url in [
        "http://169.254.169.254/latest/meta-data/".to_string(),
        format!("http://[::ffff:127.0.0.1]:{port}/ok"),
    ] {
        failed_with(
            &fetch(&by_name, &url, Duration::from_secs(10)).await,
            "HttpRequestDenied",
        );
    }
    assert!(server.seen().is_empty(), "{:?}", server.seen());

    // Redirects are not followed: the guest sees the 302, and the server one request.
    let direct = allow(&[server.origin()]);
    let report = fetch(
        &direct,
        &server.url("/redirect?to=http://169.254.169.254/"),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(result_json(&report)["status"], 302);
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn a_server_that_never_answers_is_cut_by_the_job_deadline() {
    let server = TestServer::start().await;
    let handler = allow(&[server.origin()]);
    let timeout = Duration::from_millis(500);
    let started = Instant::now();
    let report = fetch(&handler, &server.url("/slow"), timeout).await;
    let took = started.elapsed();
    // The request's own timeout is clamped to the deadline: the guest sees a timeout error
    // just before it, or the attempt ends at it.
    assert!(
        matches!(report.outcome.class(), OutcomeClass::Timeout)
            || matches!(&report.outcome, Outcome::Fail(m) if m.contains("Timeout")),
        "{:?}",
        report.outcome
    );
    assert!(
        took < timeout * 2,
        "took {took:?} for a {timeout:?} deadline"
    );
}

#[tokio::test]
async fn a_huge_response_is_cut_at_the_body_cap() {
    let server = TestServer::start().await;
    let handler = allow(&[server.origin()]);
    let report = fetch(&handler, &server.url("/huge/50"), Duration::from_secs(20)).await;
    // wstd prints `HttpResponseBodySize` by its meaning.
    failed_with(&report, "body size exceeds limit");
    assert!(report.peak_memory < 64 * 1024 * 1024);
}

#[tokio::test]
async fn a_handlers_own_limits_replace_the_defaults() {
    let server = TestServer::start().await;
    let handler = granted(
        Grants {
            allow_outbound: vec![server.origin()],
            http_limits: HttpLimitOverrides::parse_all(&["response_body=1KiB"]).unwrap(),
            ..Grants::default()
        },
        &SecretSource::default(),
    );
    // 5 bytes pass, 1 MiB does not.
    assert_eq!(
        result_json(&fetch(&handler, &server.url("/ok"), Duration::from_secs(10)).await)["body"],
        "hello"
    );
    failed_with(
        &fetch(&handler, &server.url("/huge/1"), Duration::from_secs(10)).await,
        "body size exceeds limit",
    );
}

#[tokio::test]
async fn two_hundred_concurrent_jobs_share_the_pools_few_connections() {
    let server = TestServer::start().await;
    let handler = allow(&[server.origin()]);
    let url = server.url("/ok");
    let jobs: Vec<_> = (0..200)
        .map(|_| {
            let handler = handler.clone();
            let url = url.clone();
            tokio::spawn(async move { fetch(&handler, &url, Duration::from_secs(30)).await })
        })
        .collect();
    for job in jobs {
        let report = job.await.unwrap();
        assert_eq!(result_json(&report)["status"], 200);
    }
    assert_eq!(server.seen().len(), 200);
    let cap = wasmq::capability::HttpLimits::default().max_connections_per_authority;
    assert!(
        server.connections() <= cap,
        "{} connections accepted for 200 requests; the pool's cap is {cap}",
        server.connections()
    );
}

// Through real hosts: grants deployed with a version, rolled back with it; secrets resolved
// on the host and never found anywhere else.

const Q: &str = "outbound";

fn deploy_fetcher(redis: &RedisServer, extra: &[&str]) -> String {
    let component = guests::rust("http-fetch");
    let mut args = vec![
        "handler",
        "deploy",
        "fetcher",
        component.to_str().unwrap(),
        "--max-attempts",
        "1",
    ];
    args.extend_from_slice(extra);
    ok(&wasmq(redis, &args))
}

/// Enqueues one job for `fetcher` and waits for it to end: its state and result or error.
async fn run_fetcher(client: &Client, max_attempts: u32) -> Job {
    let id = client
        .enqueue(
            Q,
            &NewJob::new("fetcher", b"{}".to_vec())
                .with_max_attempts(max_attempts)
                .with_backoff(Backoff::fixed(Duration::from_millis(50))),
        )
        .await
        .unwrap()
        .id;
    eventually("the job ended", Duration::from_secs(30), || async {
        let job = client.get(Q, &id).await.ok()??;
        matches!(job.state, JobState::Completed | JobState::Dead).then_some(job)
    })
    .await
}

#[tokio::test]
async fn grants_travel_with_the_handler_version_and_the_secret_stays_on_the_host() {
    const SECRET: &str = "sk-live-3b9f0c2e77d1";
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, Q).await;
    let server = TestServer::start().await;
    let origin = server.origin();
    let url = format!("url={}", server.url("/ok"));
    let granted = [
        "--allow-outbound",
        origin.as_str(),
        "--config",
        url.as_str(),
        "--secret",
        "token",
        "--http-limit",
        "requests=5",
    ];
    deploy_fetcher(&redis, &granted);
    let http = crate::support::free_loopback_addr();
    let host = HostProcess::builder(&redis.url())
        .envs(&[("WASMQ_SECRET_token", SECRET), ("RUST_LOG", "trace")])
        .args(["--queues", Q, "--http", &http])
        .start();

    let job = run_fetcher(&client, 1).await;
    assert_eq!(job.state, JobState::Completed, "{:?}", job.last_error);
    let result: serde_json::Value = serde_json::from_slice(&job.result.unwrap()).unwrap();
    assert_eq!(result["status"], 200);
    assert_eq!(
        server.seen()[0].headers["authorization"],
        format!("Bearer {SECRET}")
    );

    // Version 2 drops the allow-list: jobs started after it are denied.
    deploy_fetcher(&redis, &granted[2..]);
    let denied = eventually("a job denied under v2", Duration::from_secs(20), || async {
        let job = run_fetcher(&client, 1).await;
        (job.state == JobState::Dead).then_some(job)
    })
    .await;
    assert!(
        denied
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("HttpRequestDenied")),
        "{:?}",
        denied.last_error
    );
    let versions = ok(&wasmq(
        &redis,
        &["handler", "versions", "fetcher", "--json"],
    ));
    let versions: serde_json::Value = serde_json::from_str(&versions).unwrap();
    assert_eq!(versions[0]["allow_outbound"][0], origin.as_str());
    assert_eq!(versions[0]["http_limits"]["requests"], 5);
    assert_eq!(versions[1]["allow_outbound"], serde_json::json!([]));
    assert_eq!(versions[1]["secrets"][0], "token");

    // A rollback restores version 1's grants.
    ok(&wasmq(&redis, &["handler", "rollback", "fetcher"]));
    eventually(
        "a job allowed again after the rollback",
        Duration::from_secs(20),
        || async { (run_fetcher(&client, 1).await.state == JobState::Completed).then_some(()) },
    )
    .await;

    // The secret's value is nowhere but on the host and in the request it was meant for:
    // not in Redis, the host's trace-level log, /metrics, the API or the dashboard.
    for (key, value) in redis.snapshot().await {
        assert!(
            !String::from_utf8_lossy(&value).contains(SECRET) && !key.contains(SECRET),
            "the secret is in Redis key {key}"
        );
    }
    let metrics = http_get(&http, "/metrics").await;
    assert!(
        metrics.contains("wasmq_outbound_requests_total{handler=\"fetcher\",outcome=\"denied\"}"),
        "{metrics}"
    );
    for path in [
        "/metrics",
        "/api/handlers",
        "/api/handlers/fetcher/versions",
        "/",
        "/app.js",
    ] {
        let body = http_get(&http, path).await;
        assert!(
            !body.contains(SECRET),
            "the secret is in the answer to {path}"
        );
    }
    let log = host.log_text();
    assert!(log.contains("outbound request denied"), "{log}");
    assert!(!log.contains(SECRET), "the secret is in the host's log");
}

#[tokio::test]
async fn a_host_without_a_secret_runs_none_of_the_handlers_jobs_and_says_which_secret() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, Q).await;
    let server = TestServer::start().await;
    let origin = server.origin();
    let url = format!("url={}", server.url("/ok"));
    deploy_fetcher(
        &redis,
        &[
            "--allow-outbound",
            &origin,
            "--config",
            &url,
            "--secret",
            "token",
        ],
    );
    let mut without = HostProcess::builder(&redis.url())
        .args(["--queues", Q])
        .start();
    let job = run_fetcher(&client, 2).await;
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.last_outcome.as_deref(), Some("missing_secret"));
    let error = job.last_error.unwrap_or_default();
    assert!(
        error.contains("needs secret(s) token") && error.contains("WASMQ_SECRET_token"),
        "{error}"
    );
    assert_eq!(
        job.history.len(),
        2,
        "retried, as another host may have the secret"
    );
    assert!(server.seen().is_empty());
    assert!(without.log_text().contains("needs secret(s) token"));
    without.sigterm();
    without.wait_exit(Duration::from_secs(10));

    // A host that has it runs the job once it is replayed.
    let _with = HostProcess::builder(&redis.url())
        .envs(&[("WASMQ_SECRET_token", "tok")])
        .args(["--queues", Q])
        .start();
    ok(&wasmq(&redis, &["dlq", "replay", Q, &job.id]));
    eventually(
        "the replayed job completed",
        Duration::from_secs(20),
        || async {
            let job = client.get(Q, &job.id).await.ok()??;
            (job.state == JobState::Completed).then_some(())
        },
    )
    .await;
    assert_eq!(server.seen().len(), 1);
}

async fn http_get(addr: &str, path: &str) -> String {
    let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    response.text().await.unwrap()
}
