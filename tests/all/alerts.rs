//! Alerts as operators run them: real `wasmq run` hosts with `--alert-webhook` and
//! `[alerts.email]`, a real Redis, a webhook receiver in this process (HTTP on loopback) that
//! checks every signature, and an SMTP server in this process (`support::smtp`) that checks
//! the credentials.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use wasmq::queue::{Client, JobState, Monitor, NewJob};

use crate::support::eventually;
use crate::support::guests::handler;
use crate::support::host::HostProcess;
use crate::support::jobs::{enqueue_ids, wait_for_count};
use crate::support::redis::RedisServer;
use crate::support::smtp::SmtpSink;

const Q: &str = "work";
const SECRET: &str = "whsec_test-secret";
/// Quick retries, so a test sees the retry of a failed delivery within a second.
const FAST_RETRIES: &str = "[alerts]\nbackoff = \"100ms\"\n";

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Vec<u8>,
    status: StatusCode,
    at: std::time::Instant,
}

#[derive(Clone)]
struct ReceiverState {
    log: Arc<Mutex<Vec<Received>>>,
    /// Requests still to be refused with a 500 before the receiver accepts.
    refuse: Arc<AtomicUsize>,
}

/// A webhook receiver on 127.0.0.1: answers 500 to the first `refuse` requests, then 200.
struct Receiver {
    url: String,
    state: ReceiverState,
}

impl Receiver {
    async fn start(refuse: usize) -> Receiver {
        let state = ReceiverState {
            log: Arc::default(),
            refuse: Arc::new(AtomicUsize::new(refuse)),
        };
        async fn hook(
            State(state): State<ReceiverState>,
            headers: HeaderMap,
            body: axum::body::Bytes,
        ) -> StatusCode {
            let refused = state
                .refuse
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            let status = if refused {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            };
            state.log.lock().unwrap().push(Received {
                headers,
                body: body.to_vec(),
                status,
                at: std::time::Instant::now(),
            });
            status
        }
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, state }
    }

    fn received(&self) -> Vec<Received> {
        self.state.log.lock().unwrap().clone()
    }

    /// The accepted (2xx) alerts, each checked (headers, signature) and parsed.
    fn accepted(&self) -> Vec<Value> {
        self.received()
            .iter()
            .filter(|r| r.status.is_success())
            .map(verified)
            .collect()
    }
}

/// A webhook that accepts connections and never reads or answers.
struct HungReceiver {
    url: String,
    connections: Arc<AtomicUsize>,
}

async fn hung_receiver() -> HungReceiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    HungReceiver { url, connections }
}

/// Checks a request the way docs/alerts.md tells receivers to, and returns its JSON body.
fn verified(request: &Received) -> Value {
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(header("content-type"), "application/json");
    let timestamp = header("x-wasmq-timestamp");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(&request.body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(header("x-wasmq-signature"), format!("sha256={expected}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sent: u64 = timestamp.parse().unwrap();
    assert!(
        now.abs_diff(sent) < 300,
        "timestamp {sent} is not now ({now})"
    );
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(header("x-wasmq-event"), body["type"].as_str().unwrap());
    body
}

/// How many accepted alerts each `job_id` got.
fn per_job(alerts: &[Value]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for alert in alerts {
        *out.entry(alert["job_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    out
}

/// Entries of the queue's events stream delivered to alerting hosts and not acknowledged.
async fn pending(redis: &RedisServer) -> u64 {
    let monitor = Monitor::connect(&redis.url(), wasmq::alerts::GROUP, "test")
        .await
        .unwrap();
    monitor.pending(Q).await.unwrap()
}

async fn enqueue_failing(client: &Client, n: usize) -> Vec<String> {
    let jobs: Vec<NewJob> = (0..n)
        .map(|_| NewJob::new("fail", Vec::new()).with_max_attempts(1))
        .collect();
    enqueue_ids(client, Q, &jobs).await
}

fn alerting_host(
    redis: &RedisServer,
    webhook: &str,
    toml: &str,
    handlers: &[&str],
    extra: &[&str],
) -> HostProcess {
    let mut args = vec!["--queues", Q, "--alert-webhook", webhook];
    for h in handlers {
        args.extend(["--handler", h]);
    }
    args.extend_from_slice(extra);
    HostProcess::builder(&redis.url())
        .config(toml)
        .envs(&[("WASMQ_ALERT_SECRET", SECRET)])
        .args(&args)
        .start()
}

#[tokio::test]
async fn each_dead_job_gets_one_signed_alert_also_when_the_first_delivery_fails() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let receiver = Receiver::start(1).await;
    let ids = enqueue_failing(&client, 3).await;
    let fail = handler("fail", "fail");
    let http = crate::support::free_loopback_addr();
    let _host = alerting_host(
        &redis,
        &receiver.url,
        FAST_RETRIES,
        &[&fail],
        &["--http", &http],
    );
    wait_for_count(&client, Q, JobState::Dead, 3, Duration::from_secs(30)).await;
    eventually(
        "an accepted alert per dead job, all acknowledged",
        Duration::from_secs(30),
        || async {
            (per_job(&receiver.accepted()).len() == 3 && pending(&redis).await == 0).then_some(())
        },
    )
    .await;

    let received = receiver.received();
    // The refused first request was signed like the rest, and its alert came again.
    assert_eq!(received[0].status, StatusCode::INTERNAL_SERVER_ERROR);
    let refused = verified(&received[0]);
    let accepted = receiver.accepted();
    assert!(accepted.iter().any(|a| a["id"] == refused["id"]));
    // Exactly one accepted alert per job, and no request beyond the one retry.
    let counts = per_job(&accepted);
    assert_eq!(counts.keys().cloned().collect::<Vec<_>>(), {
        let mut ids = ids.clone();
        ids.sort();
        ids
    });
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    assert_eq!(received.len(), 4);
    for alert in &accepted {
        assert_eq!(alert["type"], "job.dead");
        assert_eq!(alert["queue"], Q);
        assert_eq!(alert["attempt"], 1);
        assert_eq!(alert["max_attempts"], 1);
        assert_eq!(alert["handler"], "fail");
        assert_eq!(alert["error"], "permanent failure");
        let id = alert["id"].as_str().unwrap();
        assert!(
            id.starts_with(&format!("{Q}/")) && id.ends_with(alert["job_id"].as_str().unwrap())
        );
        humantime::parse_rfc3339(alert["at"].as_str().unwrap()).unwrap();
    }
    // The host's metrics count the deliveries: three accepted, one retried.
    let metrics = reqwest::get(format!("http://{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"wasmq_alerts_total{result="sent"} 3"#,
        r#"wasmq_alerts_total{result="retried"} 1"#,
        r#"wasmq_alerts_total{result="failed"} 0"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
}

#[tokio::test]
async fn two_hosts_on_one_queue_send_one_alert_per_dead_job() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let receiver = Receiver::start(0).await;
    let fail = handler("fail", "fail");
    let _a = alerting_host(&redis, &receiver.url, FAST_RETRIES, &[&fail], &[]);
    let _b = alerting_host(&redis, &receiver.url, FAST_RETRIES, &[&fail], &[]);
    // Enqueued while both hosts run, so both take part in the work.
    let ids = enqueue_failing(&client, 40).await;
    wait_for_count(&client, Q, JobState::Dead, 40, Duration::from_secs(30)).await;
    eventually(
        "an accepted alert per dead job, all acknowledged",
        Duration::from_secs(30),
        || async {
            (per_job(&receiver.accepted()).len() == 40 && pending(&redis).await == 0).then_some(())
        },
    )
    .await;
    let counts = per_job(&receiver.accepted());
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    assert!(ids.iter().all(|id| counts.contains_key(id)));
    assert_eq!(receiver.received().len(), 40);
}

#[tokio::test]
async fn a_backlog_over_its_thresholds_is_announced_once_and_resolved_once() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let receiver = Receiver::start(0).await;
    client.pause(Q).await.unwrap();
    let toml = "[alerts.backlog]\nwaiting = 5\noldest_age = \"1s\"\ninterval = \"100ms\"\n";
    let echo = handler("echo", "echo");
    // Two hosts look at the queue; each change is still announced once.
    let _a = alerting_host(&redis, &receiver.url, toml, &[&echo], &[]);
    let _b = alerting_host(&redis, &receiver.url, toml, &[&echo], &[]);
    let jobs: Vec<NewJob> = (0..6).map(|_| NewJob::new("echo", b"x".to_vec())).collect();
    client.enqueue_bulk(Q, &jobs).await.unwrap();

    let kinds = |alerts: &[Value]| -> Vec<(String, String)> {
        let mut kinds: Vec<(String, String)> = alerts
            .iter()
            .map(|a| {
                (
                    a["type"].as_str().unwrap().into(),
                    a["condition"].as_str().unwrap().into(),
                )
            })
            .collect();
        kinds.sort();
        kinds
    };
    let raised = eventually("both backlog alerts", Duration::from_secs(20), || async {
        let alerts = receiver.accepted();
        (alerts.len() >= 2).then_some(alerts)
    })
    .await;
    assert_eq!(
        kinds(&raised),
        [
            ("queue.backlog".to_string(), "oldest_age".to_string()),
            ("queue.backlog".to_string(), "waiting".to_string()),
        ]
    );
    let waiting = raised.iter().find(|a| a["condition"] == "waiting").unwrap();
    assert_eq!(waiting["queue"], Q);
    assert_eq!(waiting["value"], 6);
    assert_eq!(waiting["threshold"], 5);
    assert_eq!(waiting["paused"], true);
    let age = raised
        .iter()
        .find(|a| a["condition"] == "oldest_age")
        .unwrap();
    assert_eq!(age["threshold"], 1000);
    assert!(age["value"].as_u64().unwrap() >= 1000);

    client.resume(Q).await.unwrap();
    wait_for_count(&client, Q, JobState::Completed, 6, Duration::from_secs(30)).await;
    let all = eventually("both resolutions", Duration::from_secs(20), || async {
        let alerts = receiver.accepted();
        (alerts.len() >= 4).then_some(alerts)
    })
    .await;
    // A few more checks of both hosts, which must announce nothing more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all_after = receiver.accepted();
    assert_eq!(all_after.len(), all.len());
    assert_eq!(
        kinds(&all_after),
        [
            ("queue.backlog".to_string(), "oldest_age".to_string()),
            ("queue.backlog".to_string(), "waiting".to_string()),
            (
                "queue.backlog_resolved".to_string(),
                "oldest_age".to_string()
            ),
            ("queue.backlog_resolved".to_string(), "waiting".to_string()),
        ]
    );
    let resolved = all_after
        .iter()
        .find(|a| a["type"] == "queue.backlog_resolved" && a["condition"] == "waiting")
        .unwrap();
    assert_eq!(resolved["since"], waiting["since"]);
    // Resolved at 90% of the threshold or below.
    assert!(resolved["value"].as_u64().unwrap() <= 4);
}

#[tokio::test]
async fn the_backlog_finds_the_longest_waiting_job_across_priorities_and_groups() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let monitor = Monitor::connect(&redis.url(), wasmq::alerts::GROUP, "test")
        .await
        .unwrap();
    let empty = monitor.backlog(Q).await.unwrap();
    assert_eq!((empty.waiting, empty.oldest_due_ms), (0, None));
    // Oldest first: a grouped job, then an ordinary one, then one of higher priority, which
    // runs first but has waited least; a delayed job does not wait yet.
    let mut due = Vec::new();
    for job in [
        NewJob::new("h", vec![]).with_group("tenant-1"),
        NewJob::new("h", vec![]),
        NewJob::new("h", vec![]).with_priority(10),
        NewJob::new("h", vec![]).with_delay(Duration::from_secs(60)),
    ] {
        let id = client.enqueue(Q, &job).await.unwrap().id;
        due.push(
            client
                .get(Q, &id)
                .await
                .unwrap()
                .unwrap()
                .run_at_ms
                .unwrap(),
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let backlog = monitor.backlog(Q).await.unwrap();
    assert_eq!(backlog.waiting, 3);
    assert_eq!(backlog.oldest_due_ms, Some(due[0]));
    assert!(backlog.oldest_age() >= Duration::from_millis(10));
    assert!(backlog.alerts.is_empty());
    // The grouped job gone, the ordinary one is the oldest, though the other runs first.
    let grouped = client.list(Q, JobState::Waiting, 0, 10).await.unwrap();
    let grouped_id = grouped
        .iter()
        .find(|j| j.group.is_some())
        .unwrap()
        .id
        .clone();
    client.cancel(Q, &[grouped_id]).await.unwrap();
    assert_eq!(
        monitor.backlog(Q).await.unwrap().oldest_due_ms,
        Some(due[1])
    );
}

#[tokio::test]
async fn a_receiver_that_never_answers_does_not_slow_job_processing() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let hung = hung_receiver().await;
    let (url, connections) = (hung.url.clone(), hung.connections.clone());
    // Every delivery attempt would hang for a minute: a job that waited on one could not
    // finish within the bounds below.
    let toml = "[alerts]\ntimeout = \"60s\"\n";
    let (echo, fail) = (handler("echo", "echo"), handler("fail", "fail"));
    let _host = alerting_host(&redis, &url, toml, &[&echo, &fail], &[]);
    // More dead jobs than a host holds alerts for at once: its reader waits, deliveries hang.
    enqueue_failing(&client, 100).await;
    wait_for_count(&client, Q, JobState::Dead, 100, Duration::from_secs(30)).await;
    eventually("deliveries hanging", Duration::from_secs(10), || async {
        (connections.load(Ordering::SeqCst) >= wasmq::alerts::MAX_CONCURRENT_REQUESTS).then_some(())
    })
    .await;
    // Jobs go on as before, dead-lettered ones included.
    let mut jobs = Vec::new();
    for i in 0..300 {
        jobs.push(if i % 6 == 0 {
            NewJob::new("fail", Vec::new()).with_max_attempts(1)
        } else {
            NewJob::new("echo", b"x".to_vec())
        });
    }
    client.enqueue_bulk(Q, &jobs).await.unwrap();
    wait_for_count(
        &client,
        Q,
        JobState::Completed,
        250,
        Duration::from_secs(20),
    )
    .await;
    wait_for_count(&client, Q, JobState::Dead, 150, Duration::from_secs(5)).await;
    // The alerts wait, unacknowledged, for the receiver.
    assert!(pending(&redis).await > 0);
}

#[tokio::test]
async fn alerts_a_killed_host_held_are_sent_by_another_host() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let hung = hung_receiver().await;
    let receiver = Receiver::start(0).await;
    let fail = handler("fail", "fail");
    let toml = "[alerts]\ntimeout = \"60s\"\nclaim_after = \"2s\"\n";
    let mut first = alerting_host(&redis, &hung.url, toml, &[&fail], &[]);
    let ids = enqueue_failing(&client, 5).await;
    wait_for_count(&client, Q, JobState::Dead, 5, Duration::from_secs(30)).await;
    eventually("deliveries hanging", Duration::from_secs(10), || async {
        (hung.connections.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    // The host dies holding its alerts: they stay pending in Redis...
    first.sigkill();
    assert!(pending(&redis).await > 0);
    // ... until another host, seeing them untouched for claim_after, takes them over.
    let _second = alerting_host(&redis, &receiver.url, toml, &[&fail], &[]);
    eventually(
        "an accepted alert per dead job, all acknowledged",
        Duration::from_secs(30),
        || async {
            (per_job(&receiver.accepted()).len() == 5 && pending(&redis).await == 0).then_some(())
        },
    )
    .await;
    let counts = per_job(&receiver.accepted());
    assert!(
        ids.iter().all(|id| counts.get(id) == Some(&1)),
        "{counts:?}"
    );
}

#[tokio::test]
async fn bad_alert_settings_stop_the_host_at_start_with_a_clear_message() {
    let redis = RedisServer::start();
    let hook = "http://127.0.0.1:9/hook";
    let secret = [("WASMQ_ALERT_SECRET", SECRET)];
    // (flags, environment, config file, what the error says)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case] = &[
        (
            &["--alert-webhook", hook],
            &[],
            "",
            "no secret to sign alerts with",
        ),
        (
            &["--alert-webhook", hook],
            &secret,
            "[alerts]\nbackoff = \"soon\"\n",
            "alerts.backoff: \"soon\" is not a duration",
        ),
        (
            &["--alert-webhook", "ftp://example.com/h"],
            &secret,
            "",
            "must start with http:// or https://",
        ),
        (
            &[],
            &secret,
            "[alerts]\nwebhook = \"http://x/h\"\n",
            "unknown field `webhook`",
        ),
        (
            &[],
            &[],
            "[alerts]\nwebhook_url = \"http://x/h\"\nsecret_env = \"WASMQ_TEST_UNSET\"\n",
            "WASMQ_TEST_UNSET, which is not set",
        ),
        (
            &[],
            &[],
            "log_format = \"xml\"\n",
            "log_format: \"xml\" is not text or json",
        ),
        (
            &["--alert-webhook", hook, "--alert-format", "teams"],
            &[],
            "",
            "alerts.format: \"teams\" is not json or slack",
        ),
        (
            &[],
            &[],
            "[alerts.email]\nhost = \"smtp.example.com\"\nfrom = \"a@example.com\"\n\
             to = [\"b@example.com\"]\nusername = \"u\"\npassword = \"pw-in-the-file-93\"\n",
            "the SMTP password is never read from the file",
        ),
        (
            &[],
            &[],
            "[alerts.email]\nhost = \"smtp.example.com\"\nfrom = \"a@example.com\"\n\
             to = [\"b@example.com\"]\nusername = \"u\"\npassword_secret = \"SMTP_PW\"\n",
            "names SMTP_PW, which this host does not have: set WASMQ_SECRET_SMTP_PW",
        ),
    ];
    for (args, env, toml, expected) in cases {
        let mut host = HostProcess::builder(&redis.url())
            .config(toml)
            .envs(env)
            .args(*args)
            .start();
        let status = host.wait_exit(Duration::from_secs(20));
        assert_eq!(status.code(), Some(1), "{args:?} {toml:?}");
        let log = host.log_text();
        assert!(
            log.contains(expected),
            "{args:?} {toml:?}: expected {expected:?} in:\n{log}"
        );
        assert!(!log.contains("pw-in-the-file-93"), "{log}");
    }
}

#[tokio::test]
async fn a_slack_webhook_gets_an_incoming_webhook_message_per_dead_job() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let receiver = Receiver::start(0).await;
    let fail = handler("fail", "fail");
    // The format from the environment, the dashboard from the file; no secret needed.
    let toml = "[alerts]\ndashboard_url = \"https://wasmq.example.com/ops\"\n";
    let _host = HostProcess::builder(&redis.url())
        .config(toml)
        .envs(&[("WASMQ_ALERT_FORMAT", "slack")])
        .args([
            "--queues",
            Q,
            "--alert-webhook",
            &receiver.url,
            "--handler",
            &fail,
        ])
        .start();
    let ids = enqueue_failing(&client, 2).await;
    wait_for_count(&client, Q, JobState::Dead, 2, Duration::from_secs(30)).await;
    eventually(
        "a message per dead job, all acknowledged",
        Duration::from_secs(30),
        || async { (receiver.received().len() == 2 && pending(&redis).await == 0).then_some(()) },
    )
    .await;
    let mut seen = Vec::new();
    for request in receiver.received() {
        assert_eq!(request.headers["content-type"], "application/json");
        assert!(request.headers.get("x-wasmq-signature").is_none());
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let id = ids
            .iter()
            .find(|id| body["text"].as_str().unwrap().contains(id.as_str()))
            .unwrap_or_else(|| panic!("no job id in {body}"));
        seen.push(id.clone());
        let blocks = body["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["type"], "plain_text");
        assert_eq!(blocks[1]["type"], "section");
        let fields: Vec<&str> = blocks[1]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                assert_eq!(f["type"], "mrkdwn");
                f["text"].as_str().unwrap()
            })
            .collect();
        for expected in [
            format!("*Queue*\n{Q}"),
            format!("*Job*\n{id}"),
            "*Handler*\nfail".to_string(),
            "*Attempts*\n1 of 1".to_string(),
        ] {
            assert!(
                fields.contains(&expected.as_str()),
                "{expected:?} not in {fields:?}"
            );
        }
        assert!(
            fields.iter().any(|f| f.starts_with("*Outcome*\n")),
            "{fields:?}"
        );
        assert_eq!(blocks[2]["text"]["text"], "*Error*\npermanent failure");
        assert_eq!(
            blocks[3]["elements"][0]["text"],
            format!(
                "<https://wasmq.example.com/ops/#/queues/{Q}/jobs/{id}|Open the job in the dashboard>"
            )
        );
    }
    seen.sort();
    let mut ids = ids;
    ids.sort();
    assert_eq!(seen, ids);
}

const SMTP_USER: &str = "alerts";
const SMTP_PASSWORD: &str = "smtp-pw-7d1f0c9a2b4e-not-in-logs";

fn email_table(port: u16) -> String {
    format!(
        "[alerts.email]\nhost = \"127.0.0.1\"\nport = {port}\nstarttls = \"off\"\n\
         from = \"wasmq alerts <alerts@example.com>\"\n\
         to = [\"ops@example.com\", \"oncall@example.com\"]\n"
    )
}

#[tokio::test]
async fn email_alerts_reach_the_smtp_server_authenticated_with_the_host_secret() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let sink = SmtpSink::start(Some((SMTP_USER, SMTP_PASSWORD))).await;
    let fail = handler("fail", "fail");
    let http = crate::support::free_loopback_addr();
    let toml = format!(
        "[alerts]\nbackoff = \"100ms\"\ndashboard_url = \"http://127.0.0.1:7070\"\n{}\
         username = \"{SMTP_USER}\"\npassword_secret = \"SMTP_PASSWORD\"\n",
        email_table(sink.port)
    );
    // E-mail only, no webhook; the password only in the host's secrets; everything logged.
    let mut host = HostProcess::builder(&redis.url())
        .config(&toml)
        .envs(&[
            ("WASMQ_SECRET_SMTP_PASSWORD", SMTP_PASSWORD),
            ("RUST_LOG", "debug"),
        ])
        .args(["--queues", Q, "--handler", &fail, "--http", &http])
        .start();
    let ids = enqueue_failing(&client, 3).await;
    wait_for_count(&client, Q, JobState::Dead, 3, Duration::from_secs(30)).await;
    eventually(
        "an e-mail per dead job, all acknowledged",
        Duration::from_secs(30),
        || async { (sink.mails().len() == 3 && pending(&redis).await == 0).then_some(()) },
    )
    .await;
    assert_eq!(sink.auth_failures(), 0);
    assert!(
        sink.unknown_commands().is_empty(),
        "{:?}",
        sink.unknown_commands()
    );
    let mut seen = Vec::new();
    for mail in sink.mails() {
        // Authenticated with the host secret (the sink refuses mail otherwise).
        assert_eq!(mail.user.as_deref(), Some(SMTP_USER));
        assert_eq!(mail.from, "<alerts@example.com>");
        assert_eq!(mail.to, ["<ops@example.com>", "<oncall@example.com>"]);
        let from = mail.header("From").unwrap();
        assert!(
            from.contains("wasmq alerts") && from.contains("<alerts@example.com>"),
            "{from}"
        );
        let to = mail.header("To").unwrap();
        assert!(
            to.contains("ops@example.com") && to.contains("oncall@example.com"),
            "{to}"
        );
        let subject = mail.header("Subject").unwrap();
        let id = ids
            .iter()
            .find(|id| subject.contains(id.as_str()))
            .unwrap_or_else(|| panic!("no job id in {subject:?}"));
        assert!(
            subject.starts_with(&format!("[wasmq] job dead in {Q}: {id} (fail, ")),
            "{subject}"
        );
        seen.push(id.clone());
        let body = mail.body().replace("\r\n", "\n");
        for expected in [
            format!("Queue:    {Q}\n"),
            format!("Job:      {id}\n"),
            "Handler:  fail\n".to_string(),
            "Attempts: 1 of 1\n".to_string(),
            "Error:\npermanent failure\n".to_string(),
            format!("Dashboard: http://127.0.0.1:7070/#/queues/{Q}/jobs/{id}\n"),
        ] {
            assert!(body.contains(&expected), "{expected:?} not in:\n{body}");
        }
    }
    seen.sort();
    let mut ids = ids;
    ids.sort();
    assert_eq!(seen, ids);
    let metrics = reqwest::get(format!("http://{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"wasmq_alerts_total{result="sent"} 3"#)
    );
    // The password shows nowhere: not in the metrics, not in the log (at debug level, up to
    // the host's exit), not even as the AUTH PLAIN string.
    host.sigterm();
    assert_eq!(host.wait_exit(Duration::from_secs(30)).code(), Some(0));
    let auth_plain = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("\0{SMTP_USER}\0{SMTP_PASSWORD}"),
    );
    let log = host.log_text();
    assert!(log.contains("alerts on"), "{log}");
    for text in [&metrics, &log] {
        assert!(!text.contains(SMTP_PASSWORD) && !text.contains(&auth_plain));
    }
}

#[tokio::test]
async fn a_wrong_smtp_password_is_given_up_without_showing_it() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let sink = SmtpSink::start(Some((SMTP_USER, "the-right-one"))).await;
    let fail = handler("fail", "fail");
    let toml = format!(
        "[alerts]\nbackoff = \"100ms\"\nmax_attempts = 2\n{}\
         username = \"{SMTP_USER}\"\npassword_secret = \"SMTP_PASSWORD\"\n",
        email_table(sink.port)
    );
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(
        secrets.path().join("SMTP_PASSWORD"),
        format!("{SMTP_PASSWORD}\n"),
    )
    .unwrap();
    let dir = secrets.path().to_str().unwrap();
    let mut host = HostProcess::builder(&redis.url())
        .config(&toml)
        .envs(&[("RUST_LOG", "debug")])
        .args(["--queues", Q, "--handler", &fail, "--secrets-dir", dir])
        .start();
    enqueue_failing(&client, 1).await;
    // Refused twice (the password from --secrets-dir, trailing newline removed, is wrong),
    // given up, acknowledged.
    eventually(
        "two refused attempts, acknowledged",
        Duration::from_secs(30),
        || async { (sink.auth_failures() == 2 && pending(&redis).await == 0).then_some(()) },
    )
    .await;
    assert!(sink.mails().is_empty());
    host.sigterm();
    host.wait_exit(Duration::from_secs(30));
    let log = host.log_text();
    assert!(
        log.contains("alert given up: the email did not accept it"),
        "{log}"
    );
    // The sink quoted the password in its refusal; the host's log shows it redacted.
    assert!(log.contains("invalid: alerts / <redacted>"), "{log}");
    assert!(!log.contains(SMTP_PASSWORD), "{log}");
}

#[tokio::test]
async fn a_burst_of_dead_jobs_becomes_a_few_digests_on_every_channel() {
    const JOBS: u64 = 1000;
    const AFTER: u64 = 3;
    const WINDOW: Duration = Duration::from_secs(2);
    let redis = RedisServer::start();
    let client = redis.client().await;
    let receiver = Receiver::start(0).await;
    let sink = SmtpSink::start(None).await;
    let fail = handler("fail", "fail");
    let toml = format!(
        "[alerts]\nbackoff = \"100ms\"\n[alerts.digest]\nafter = {AFTER}\nwindow = \"2s\"\n{}",
        email_table(sink.port)
    );
    enqueue_failing(&client, JOBS as usize).await;
    let _host = alerting_host(&redis, &receiver.url, &toml, &[&fail], &[]);
    wait_for_count(&client, Q, JobState::Dead, JOBS, Duration::from_secs(90)).await;
    let jobs_in = |alerts: &[Value]| -> u64 {
        alerts
            .iter()
            .map(|a| match a["type"].as_str().unwrap() {
                "job.dead" => 1,
                "job.dead.digest" => a["count"].as_u64().unwrap(),
                other => panic!("unexpected {other}"),
            })
            .sum()
    };
    eventually(
        "every dead job in an alert or a digest, all acknowledged",
        Duration::from_secs(60),
        || async {
            (jobs_in(&receiver.accepted()) >= JOBS && pending(&redis).await == 0).then_some(())
        },
    )
    .await;
    let alerts = receiver.accepted();
    // None lost, none twice: single alerts name distinct jobs, and with the digests' counts
    // they add up to exactly the jobs that died.
    assert_eq!(jobs_in(&alerts), JOBS);
    let singles = per_job(
        &alerts
            .iter()
            .filter(|a| a["type"] == "job.dead")
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert!(singles.values().all(|&n| n == 1), "{singles:?}");
    let digests: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["type"] == "job.dead.digest")
        .collect();
    assert!(!digests.is_empty());
    for digest in &digests {
        let groups = digest["groups"].as_array().unwrap();
        let sum: u64 = groups.iter().map(|g| g["count"].as_u64().unwrap()).sum();
        assert_eq!(digest["count"].as_u64().unwrap(), sum);
        for group in groups {
            assert_eq!(group["queue"], Q);
            assert_eq!(group["handler"], "fail");
            let named = group["job_ids"].as_array().unwrap();
            assert!(!named.is_empty() && named.len() <= 5);
            // A job in a digest did not also get an alert of its own.
            assert!(
                named
                    .iter()
                    .all(|id| !singles.contains_key(id.as_str().unwrap()))
            );
        }
    }
    // At most AFTER single alerts and one digest per window the burst spanned.
    let received = receiver.received();
    let first = received.iter().map(|r| r.at).min().unwrap();
    let last = received.iter().map(|r| r.at).max().unwrap();
    let windows = (last - first).as_millis() / WINDOW.as_millis() + 1;
    let messages = received.len() as u64;
    assert!(
        messages <= windows as u64 * (AFTER + 1),
        "{messages} messages over {windows} windows of {WINDOW:?}"
    );
    assert!(messages < 50, "{messages} messages for {JOBS} dead jobs");
    // E-mail got the same alerts: as many messages, as many digests.
    eventually("as many e-mails", Duration::from_secs(10), || async {
        (sink.mails().len() as u64 == messages).then_some(())
    })
    .await;
    let digest_mails = sink
        .mails()
        .iter()
        .filter(|m| m.header("Subject").unwrap().ends_with("(digest)"))
        .count();
    assert_eq!(digest_mails, digests.len());
}

#[tokio::test]
async fn backlog_alerts_reach_slack_and_email_too() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let receiver = Receiver::start(0).await;
    let sink = SmtpSink::start(None).await;
    client.pause(Q).await.unwrap();
    let toml = format!(
        "[alerts]\nformat = \"slack\"\n[alerts.backlog]\nwaiting = 2\ninterval = \"100ms\"\n{}",
        email_table(sink.port)
    );
    let echo = handler("echo", "echo");
    let _host = HostProcess::builder(&redis.url())
        .config(&toml)
        .args([
            "--queues",
            Q,
            "--alert-webhook",
            &receiver.url,
            "--handler",
            &echo,
        ])
        .start();
    let jobs: Vec<NewJob> = (0..3).map(|_| NewJob::new("echo", b"x".to_vec())).collect();
    client.enqueue_bulk(Q, &jobs).await.unwrap();
    let line = format!(
        "backlog on queue {Q}: waiting jobs 3 reached the threshold 2 (the queue is paused)"
    );
    eventually(
        "the backlog on both channels",
        Duration::from_secs(20),
        || async { (receiver.received().len() == 1 && sink.mails().len() == 1).then_some(()) },
    )
    .await;
    let slack: Value = serde_json::from_slice(&receiver.received()[0].body).unwrap();
    assert_eq!(slack["text"], line);
    assert_eq!(
        slack["blocks"][0]["text"]["text"],
        format!("*wasmq:* {line}")
    );
    let mail = &sink.mails()[0];
    assert_eq!(mail.header("Subject").unwrap(), format!("[wasmq] {line}"));
    assert!(mail.body().contains("Waiting:    3\r\n"), "{}", mail.body());
    // Resolved: once on each channel too.
    client.resume(Q).await.unwrap();
    wait_for_count(&client, Q, JobState::Completed, 3, Duration::from_secs(30)).await;
    eventually(
        "the resolution on both channels",
        Duration::from_secs(20),
        || async { (receiver.received().len() == 2 && sink.mails().len() == 2).then_some(()) },
    )
    .await;
    let resolved: Value = serde_json::from_slice(&receiver.received()[1].body).unwrap();
    assert!(
        resolved["text"]
            .as_str()
            .unwrap()
            .starts_with(&format!("backlog resolved on queue {Q}: waiting jobs ")),
        "{resolved}"
    );
}

#[tokio::test]
async fn starttls_required_sends_nothing_to_a_server_without_it() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    // The sink offers no STARTTLS: with the default `starttls = "required"` the host must not
    // go on in the clear, so neither the password nor the message reaches it.
    let sink = SmtpSink::start(Some((SMTP_USER, SMTP_PASSWORD))).await;
    let fail = handler("fail", "fail");
    let toml = format!(
        "[alerts]\nbackoff = \"100ms\"\nmax_attempts = 2\n[alerts.email]\nhost = \"127.0.0.1\"\n\
         port = {}\nfrom = \"alerts@example.com\"\nto = [\"ops@example.com\"]\n\
         username = \"{SMTP_USER}\"\npassword_secret = \"SMTP_PASSWORD\"\n",
        sink.port
    );
    let mut host = HostProcess::builder(&redis.url())
        .config(&toml)
        .envs(&[("WASMQ_SECRET_SMTP_PASSWORD", SMTP_PASSWORD)])
        .args(["--queues", Q, "--handler", &fail])
        .start();
    enqueue_failing(&client, 1).await;
    wait_for_count(&client, Q, JobState::Dead, 1, Duration::from_secs(30)).await;
    eventually("the alert given up", Duration::from_secs(30), || async {
        let log = host.log_text();
        (log.contains("alert given up: the email did not accept it")
            && log.contains("STARTTLS is not supported")
            && pending(&redis).await == 0)
            .then_some(())
    })
    .await;
    assert!(sink.mails().is_empty());
    assert_eq!(sink.auth_failures(), 0);
    host.sigterm();
    host.wait_exit(Duration::from_secs(30));
    assert!(!host.log_text().contains(SMTP_PASSWORD));
}

/// The group's `lag`: entries of the queue's events stream no alerting host has read yet.
async fn unread(redis: &RedisServer) -> Option<i64> {
    let mut conn = redis.connection().await;
    let groups: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(format!("wasmq:{{{Q}}}:events"))
        .query_async(&mut conn)
        .await
        .ok()?;
    match groups.first()?.get("lag")? {
        redis::Value::Int(n) => Some(*n),
        _ => None,
    }
}

#[tokio::test]
async fn a_digest_a_killed_host_held_is_sent_by_another_host() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let receiver = Receiver::start(0).await;
    let fail = handler("fail", "fail");
    // Everything into a digest; the first host's window outlasts it.
    let held = "[alerts]\nclaim_after = \"2s\"\n[alerts.digest]\nafter = 0\nwindow = \"1h\"\n";
    let mut first = alerting_host(&redis, &receiver.url, held, &[&fail], &[]);
    enqueue_failing(&client, 20).await;
    wait_for_count(&client, Q, JobState::Dead, 20, Duration::from_secs(30)).await;
    eventually(
        "every entry read and held in the digest",
        Duration::from_secs(20),
        || async { (unread(&redis).await == Some(0) && pending(&redis).await > 0).then_some(()) },
    )
    .await;
    // The host dies with its digest unsent: the entries stay pending...
    first.sigkill();
    assert!(receiver.received().is_empty());
    assert!(pending(&redis).await > 0);
    // ... and another host claims them after claim_after and sends them, in its own digest.
    let sends = "[alerts]\nclaim_after = \"2s\"\n[alerts.digest]\nafter = 0\nwindow = \"1s\"\n";
    let _second = alerting_host(&redis, &receiver.url, sends, &[&fail], &[]);
    eventually(
        "all 20 dead jobs in digests, all acknowledged",
        Duration::from_secs(30),
        || async {
            let total: u64 = receiver
                .accepted()
                .iter()
                .map(|a| a["count"].as_u64().unwrap())
                .sum();
            (total == 20 && pending(&redis).await == 0).then_some(())
        },
    )
    .await;
    assert!(
        receiver
            .accepted()
            .iter()
            .all(|a| a["type"] == "job.dead.digest")
    );
}
