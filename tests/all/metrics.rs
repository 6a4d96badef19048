//! `/metrics` of a real `wasmq run --http` host against a real Redis: the text parses with the
//! reference OpenMetrics parser (prometheus-client's, from tests/tools), and its counters and
//! gauges match what the host did.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use wasmq::queue::{Backoff, Client, JobState, NewJob, QueueConfig, RateLimit};

use crate::support::guests::handler;
use crate::support::host::HostProcess;
use crate::support::redis::RedisServer;
use crate::support::{eventually, tools};

const Q: &str = "metered";
/// A queue that starts one job per minute.
const SLOW: &str = "metered-slow";

/// One sample: its labels (sorted) and value.
type Samples = BTreeMap<(String, Vec<(String, String)>), f64>;

/// Parses `text` with the reference parser; panics with the text when it does not parse.
fn parse(text: &str) -> Samples {
    let mut child = Command::new(tools::python())
        .arg(tools::script("parse_metrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the OpenMetrics parser");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let sample: Value = serde_json::from_str(line).unwrap();
            let mut labels: Vec<(String, String)> = sample["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            labels.sort();
            let name = sample["name"].as_str().unwrap().to_string();
            ((name, labels), sample["value"].as_f64().unwrap())
        })
        .collect()
}

fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    samples.get(&(name.to_string(), labels)).copied()
}

async fn wait_for(client: &Client, queue: &str, state: JobState, n: u64) {
    eventually(
        &format!("{n} jobs {state} in {queue}"),
        Duration::from_secs(60),
        || async { (client.counts(queue).await.ok()?.get(state) == n).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn metrics_parse_and_match_the_jobs_the_host_ran() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let no_wait = Backoff::fixed(Duration::ZERO);
    for i in 0..20 {
        client
            .enqueue(Q, &NewJob::new("echo", format!("{i}").into_bytes()))
            .await
            .unwrap();
    }
    for _ in 0..3 {
        let job = NewJob::new("retry", Vec::new())
            .with_max_attempts(2)
            .with_backoff(no_wait);
        client.enqueue(Q, &job).await.unwrap();
    }
    for _ in 0..2 {
        client
            .enqueue(Q, &NewJob::new("fail", Vec::new()))
            .await
            .unwrap();
    }
    // One job leased by a host that then vanishes: this host recovers it when the lease
    // expires, and runs it.
    let ghost = client
        .enqueue(Q, &NewJob::new("echo", b"ghost".to_vec()).with_priority(10))
        .await
        .unwrap();
    let leased = client
        .fetch(Q, 1, Duration::from_millis(200), "ghost-host")
        .await
        .unwrap();
    assert_eq!(leased[0].id, ghost.id);
    // A queue limited to one start a minute, with three jobs: its fetches are held back.
    let limited = QueueConfig {
        rate: Some(RateLimit::new(1, Duration::from_secs(60)).unwrap()),
        ..QueueConfig::default()
    };
    client.set_config(SLOW, &limited).await.unwrap();
    for _ in 0..3 {
        client
            .enqueue(SLOW, &NewJob::new("echo", Vec::new()))
            .await
            .unwrap();
    }

    let addr = crate::support::free_loopback_addr();
    let _host = HostProcess::builder(&redis.url())
        .args([
            "--queues",
            &format!("{Q},{SLOW}"),
            "--handler",
            &handler("echo", "echo"),
            "--handler",
            &handler("retry", "retry"),
            "--handler",
            &handler("fail", "fail"),
            "--concurrency",
            "4",
            "--memory-budget",
            "1GiB",
            "--lease",
            "3s",
            "--http",
            &addr,
        ])
        .start();
    wait_for(&client, Q, JobState::Completed, 21).await;
    wait_for(&client, Q, JobState::Dead, 5).await;
    wait_for(&client, SLOW, JobState::Completed, 1).await;

    let http = reqwest::Client::new();
    let scrape = || async {
        let response = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .ok()?;
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        Some(parse(&response.text().await.unwrap()))
    };
    // The slow queue's fetcher tries again when the window frees; by then it has been held
    // back at least once (its wake-up from the enqueues, at the latest).
    let samples = eventually(
        "a rate-limited fetch counted",
        Duration::from_secs(20),
        || async {
            let samples = scrape().await?;
            let held = value(
                &samples,
                "wasmq_rate_limited_fetches_total",
                &[("queue", SLOW)],
            );
            held.is_some_and(|n| n >= 1.0).then_some(samples)
        },
    )
    .await;

    let jobs = |handler: &str, outcome: &str| {
        value(
            &samples,
            "wasmq_jobs_total",
            &[("queue", Q), ("handler", handler), ("outcome", outcome)],
        )
    };
    assert_eq!(jobs("echo", "ok"), Some(21.0));
    assert_eq!(jobs("retry", "retry"), Some(6.0));
    assert_eq!(jobs("fail", "fail"), Some(2.0));
    assert_eq!(jobs("echo", "retry"), None, "no such outcome happened");
    let per_handler = [("queue", Q), ("handler", "echo")];
    assert_eq!(
        value(&samples, "wasmq_job_duration_seconds_count", &per_handler),
        Some(21.0)
    );
    assert_eq!(
        value(&samples, "wasmq_instantiation_seconds_count", &per_handler),
        Some(21.0)
    );
    let duration_sum = value(&samples, "wasmq_job_duration_seconds_sum", &per_handler).unwrap();
    let instantiation_sum =
        value(&samples, "wasmq_instantiation_seconds_sum", &per_handler).unwrap();
    assert!(
        0.0 < instantiation_sum && instantiation_sum <= duration_sum,
        "instantiation {instantiation_sum} s of {duration_sum} s"
    );
    assert_eq!(
        value(&samples, "wasmq_lease_recoveries_total", &[("queue", Q)]),
        Some(1.0)
    );
    // Depths read from Redis at the scrape.
    for (state, n) in [("completed", 21.0), ("dead", 5.0), ("waiting", 0.0)] {
        assert_eq!(
            value(
                &samples,
                "wasmq_queue_jobs",
                &[("queue", Q), ("state", state)]
            ),
            Some(n),
            "{state}"
        );
    }
    assert_eq!(
        value(
            &samples,
            "wasmq_queue_jobs",
            &[("queue", SLOW), ("state", "waiting")]
        ),
        Some(2.0)
    );
    assert_eq!(value(&samples, "wasmq_slots", &[]), Some(4.0));
    assert_eq!(
        value(&samples, "wasmq_memory_budget_bytes", &[]),
        Some(1024.0 * 1024.0 * 1024.0)
    );
    assert_eq!(value(&samples, "wasmq_redis_up", &[]), Some(1.0));
    assert_eq!(
        value(&samples, "wasmq_redis_reconnects_total", &[]),
        Some(0.0)
    );
    // Slots and budget held (room a fetch reserves counts too) are within the totals.
    let in_use = value(&samples, "wasmq_slots_in_use", &[]).unwrap();
    assert!((0.0..=4.0).contains(&in_use), "{in_use} slots in use");
    let memory = value(&samples, "wasmq_memory_budget_in_use_bytes", &[]).unwrap();
    assert!(memory <= 1024.0 * 1024.0 * 1024.0, "{memory}");
}
