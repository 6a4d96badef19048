//! Events through real processes: `wasmq handler deploy --on`, `wasmq event send`, and a real
//! host running the subscribers' jobs against a real Redis.

use std::time::Duration;

use serde_json::{Value, json};
use wasmq::queue::JobState;

use crate::support::cli::{ok, wasmq};
use crate::support::host::HostProcess;
use crate::support::redis::RedisServer;
use crate::support::{eventually, guests};

#[tokio::test]
async fn one_event_starts_each_subscribed_handler_once() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let echo = guests::rust("echo");
    let echo = echo.to_str().unwrap();
    // Three subscribers (one on its own queue), and one handler of another event.
    for (name, extra) in [
        ("audit", vec!["--on", "order/created"]),
        ("email", vec!["--on", "order/created,order/paid"]),
        (
            "ship",
            vec!["--on", "order/created", "--on-queue", "shipping"],
        ),
        ("welcome", vec!["--on", "user/signup"]),
    ] {
        let mut args = vec!["handler", "deploy", name, echo];
        args.extend(extra);
        ok(&wasmq(&redis, &args));
    }
    let listed = ok(&wasmq(&redis, &["handler", "list"]));
    assert!(listed.contains("on order/created -> shipping"), "{listed}");
    let _host = HostProcess::builder(&redis.url())
        .args(["--queues", "default,shipping"])
        .start();

    let out = ok(&wasmq(
        &redis,
        &[
            "event",
            "send",
            "order/created",
            r#"{"order":42}"#,
            "--id",
            "ord-42",
            "--json",
        ],
    ));
    let sent: Value = serde_json::from_str(&out).unwrap();
    let jobs: Vec<(&str, &str, &str)> = sent["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["handler"].as_str().unwrap(),
                j["queue"].as_str().unwrap(),
                j["job_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        jobs,
        [
            ("audit", "default", "evt:ord-42:audit"),
            ("email", "default", "evt:ord-42:email"),
            ("ship", "shipping", "evt:ord-42:ship"),
        ]
    );
    // Each runs once, with the event as its payload (echo returns it).
    let expected = json!({"name": "order/created", "id": "ord-42", "data": {"order": 42}});
    for (_, queue, id) in &jobs {
        let job = eventually(
            &format!("{id} completed"),
            Duration::from_secs(30),
            || async {
                let job = client.get(queue, id).await.ok()??;
                (job.state == JobState::Completed).then_some(job)
            },
        )
        .await;
        let result: Value = serde_json::from_slice(job.result.as_deref().unwrap()).unwrap();
        assert_eq!(result, expected);
        assert_eq!(job.history.len(), 1);
    }

    // The same event id again: nothing new; a new id: three more jobs.
    let again = ok(&wasmq(
        &redis,
        &[
            "event",
            "send",
            "order/created",
            r#"{"order":42}"#,
            "--id",
            "ord-42",
        ],
    ));
    assert_eq!(again.matches("already sent").count(), 3, "{again}");
    ok(&wasmq(&redis, &["event", "send", "order/created", "{}"]));
    eventually("six jobs completed", Duration::from_secs(30), || async {
        let default = client.counts("default").await.ok()?.completed;
        let shipping = client.counts("shipping").await.ok()?.completed;
        (default == 4 && shipping == 2).then_some(())
    })
    .await;
    // No welcome job was ever enqueued.
    let welcome = client
        .list("default", JobState::Completed, 0, 100)
        .await
        .unwrap();
    assert!(welcome.iter().all(|j| j.handler != "welcome"));

    // Bad input: not JSON, a bad name; nothing enqueued.
    let bad = wasmq(&redis, &["event", "send", "order/created", "{nope"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not JSON"));
    let bad = wasmq(&redis, &["event", "send", "has space", "{}"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("event name"));
    let bad = wasmq(&redis, &["handler", "deploy", "x", echo, "--on-queue", "q"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("at least one event"));
}
