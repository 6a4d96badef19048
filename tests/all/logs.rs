//! The host's log as collectors read it: `wasmq run --log-format json` (or `log_format` in the
//! config file) writes one JSON object per line, and a job's lines carry its span's fields.

use std::time::Duration;

use serde_json::Value;
use wasmq::queue::{JobState, NewJob};

use crate::support::eventually;
use crate::support::guests::handler;
use crate::support::host::HostProcess;
use crate::support::jobs::wait_for_count;
use crate::support::redis::RedisServer;

const Q: &str = "work";

/// The complete lines of the host's log so far, each parsed as JSON (a line that is not JSON
/// fails the test).
fn json_lines(host: &HostProcess) -> Vec<Value> {
    let text = host.log_text();
    // The last line may still be being written.
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

#[tokio::test]
async fn json_logs_carry_the_job_span_fields() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let job = client
        .enqueue(Q, &NewJob::new("echo", b"hello".to_vec()))
        .await
        .unwrap();
    let echo = handler("echo", "echo");
    let host = HostProcess::builder(&redis.url())
        .args([
            "--queues",
            Q,
            "--handler",
            &echo,
            "--log-format",
            "json",
            "--log",
            "info",
        ])
        .start();
    wait_for_count(&client, Q, JobState::Completed, 1, Duration::from_secs(30)).await;
    // The echo guest logs "echo 5 bytes" through context.log, inside the job's span.
    let line = eventually("a log line of the job", Duration::from_secs(10), || async {
        json_lines(&host)
            .into_iter()
            .find(|line| line["span"]["job_id"] == job.id.as_str())
    })
    .await;
    assert_eq!(line["span"]["name"], "job");
    assert_eq!(line["span"]["queue"], Q);
    assert_eq!(line["span"]["handler"], "echo");
    assert_eq!(line["span"]["attempt"], 1);
    assert_eq!(line["fields"]["message"], "echo 5 bytes");
    assert_eq!(line["level"], "INFO");
    assert!(line["timestamp"].is_string());
    assert!(line["spans"].as_array().is_some_and(|s| !s.is_empty()));
}

#[tokio::test]
async fn log_format_can_come_from_the_config_file() {
    let redis = RedisServer::start();
    let echo = handler("echo", "echo");
    let host = HostProcess::builder(&redis.url())
        .config("log_format = \"json\"\n")
        .args(["--queues", Q, "--handler", &echo])
        .start();
    let started = eventually("the host's start line", Duration::from_secs(30), || async {
        json_lines(&host)
            .into_iter()
            .find(|line| line["fields"]["message"] == "wasmq host running")
    })
    .await;
    assert_eq!(started["fields"]["queues"], format!("[\"{Q}\"]"));
}
