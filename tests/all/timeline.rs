//! A job's run timeline and its queue's duration percentiles (docs/api.md), from what a real
//! host recorded: a real `wasmq run --http`, a real Redis, the `workflow` guest sleeping
//! durably, then failing a step once, then completing.

use std::time::Duration;

use serde_json::Value;
use wasmq::queue::{Backoff, JobState, NewJob};

use crate::support::eventually;
use crate::support::guests::handler;
use crate::support::host::HostProcess;
use crate::support::jobs::keep_everything;
use crate::support::redis::RedisServer;

const Q: &str = "timelines";

/// A segment as `(kind, attempt, outcome or name)`.
fn label(s: &Value) -> (String, Option<u64>, Option<String>) {
    let text = s["outcome"]
        .as_str()
        .or(s["name"].as_str())
        .map(str::to_string);
    (
        s["kind"].as_str().unwrap_or_default().to_string(),
        s["attempt"].as_u64(),
        text,
    )
}

#[tokio::test]
async fn a_workflows_timeline_shows_its_sleep_steps_retry_and_attempts_as_the_host_ran_them() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, Q).await;
    let job = NewJob::new(
        "workflow",
        br#"{"sleep_ms":300,"fail_two_once":true}"#.to_vec(),
    )
    .with_id("wf-1")
    .with_backoff(Backoff::fixed(Duration::from_millis(100)));
    client.enqueue(Q, &job).await.unwrap();
    let addr = crate::support::free_loopback_addr();
    let workflow = handler("workflow", "workflow");
    let _host = HostProcess::builder(&redis.url())
        .args(["--queues", Q, "--handler", &workflow, "--http", &addr])
        .start();
    eventually("wf-1 to complete", Duration::from_secs(90), || async {
        let job = client.get(Q, "wf-1").await.ok()??;
        (job.state == JobState::Completed).then_some(())
    })
    .await;
    let job = client.get(Q, "wf-1").await.unwrap().unwrap();
    let outcomes: Vec<&str> = job.history.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["suspended", "retry", "ok"]);
    // The host's suspend wrote the sleep as fields, which the timeline reads.
    assert_eq!(job.history[0].sleep.as_deref(), Some("nap"));
    assert_eq!(job.history[0].sleep_ms, Some(300));

    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        let url = format!("http://{addr}{path}");
        async move {
            let response = http.get(url).send().await.ok()?;
            response.status().is_success().then_some(())?;
            response.json::<Value>().await.ok()
        }
    };
    let timeline = eventually("the timeline", Duration::from_secs(30), || {
        get(format!("/api/queues/{Q}/jobs/wf-1/timeline"))
    })
    .await;
    assert_eq!(timeline["steps_complete"], true, "{timeline}");
    let segments = timeline["segments"].as_array().unwrap();
    let shown: Vec<_> = segments
        .iter()
        .filter(|s| s["kind"] != "wait")
        .map(label)
        .collect();
    let row = |kind: &str, attempt: Option<u64>, text: Option<&str>| {
        (kind.to_string(), attempt, text.map(str::to_string))
    };
    assert_eq!(
        shown,
        [
            row("enqueued", None, None),
            row("attempt", Some(1), Some("suspended")),
            row("step", Some(1), Some("one")),
            row("sleep", Some(1), Some("nap")),
            // Step one comes from storage now; step two fails.
            row("attempt", Some(1), Some("retry")),
            row("attempt", Some(2), Some("ok")),
            row("step", Some(2), Some("two")),
            row("step", Some(2), Some("three")),
            row("finished", None, Some("completed")),
        ],
        "{timeline}"
    );
    // Each attempt spans what its history entry recorded.
    let attempts: Vec<&Value> = segments.iter().filter(|s| s["kind"] == "attempt").collect();
    for (segment, recorded) in attempts.iter().zip(&job.history) {
        assert_eq!(segment["start_ms"], recorded.started_at, "{segment}");
        assert_eq!(segment["end_ms"], recorded.finished_at, "{segment}");
    }
    // The sleep lasts what the handler asked for, from the end of the attempt that reached
    // it; the wait before the retry is at least the job's 100 ms backoff.
    let sleep = segments.iter().find(|s| s["kind"] == "sleep").unwrap();
    assert_eq!(sleep["start_ms"], job.history[0].finished_at);
    assert_eq!(
        sleep["end_ms"].as_u64().unwrap() - sleep["start_ms"].as_u64().unwrap(),
        300
    );
    let retry_wait = segments
        .iter()
        .find(|s| s["kind"] == "wait" && s["reason"] == "retry")
        .unwrap_or_else(|| panic!("a wait before the retry: {timeline}"));
    assert_eq!(retry_wait["start_ms"], job.history[1].finished_at);
    assert_eq!(retry_wait["end_ms"], job.history[2].started_at);
    assert!(
        job.history[2].started_at - job.history[1].finished_at >= 100,
        "{retry_wait}"
    );
    // The steps were saved during the attempts that ran them.
    for s in segments.iter().filter(|s| s["kind"] == "step") {
        let at = s["start_ms"].as_u64().unwrap();
        let n = s["attempt"].as_u64().unwrap();
        let ran = attempts
            .iter()
            .filter(|a| a["attempt"].as_u64() == Some(n))
            .any(|a| {
                (a["start_ms"].as_u64().unwrap()..=a["end_ms"].as_u64().unwrap()).contains(&at)
            });
        assert!(ran, "{s} during attempt {n}");
    }

    // The queue's durations: the three attempts of the one handler.
    let durations = get(format!("/api/queues/{Q}/durations")).await.unwrap();
    let handlers = durations["handlers"].as_array().unwrap();
    assert_eq!(handlers.len(), 1, "{durations}");
    assert_eq!(handlers[0]["handler"], "workflow");
    assert_eq!(handlers[0]["count"], 3);
    let longest = job
        .history
        .iter()
        .map(|a| a.finished_at - a.started_at)
        .max()
        .unwrap();
    assert_eq!(handlers[0]["max_ms"], longest);
    assert_eq!(handlers[0]["p99_ms"], longest);
}
