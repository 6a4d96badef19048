//! Rate limits as users run them: real `wasmq run` processes sharing one Redis, held to a
//! queue's limit and a per-group limit set in the queue's config. The clock is Redis's: job
//! start times come from the jobs' history.

use std::time::Duration;

use wasmq::queue::{JobState, NewJob};

use crate::support::eventually;
use crate::support::guests::handler;
use crate::support::host::HostProcess;
use crate::support::jobs::{enqueue_ids, most_starts_in_a_window, set_limits};
use crate::support::redis::RedisServer;

const Q: &str = "limited";

fn echo_host(redis: &RedisServer) -> HostProcess {
    HostProcess::builder(&redis.url())
        .args(["--queues", Q, "--handler", &handler("echo", "echo")])
        .start()
}

#[tokio::test]
async fn two_hosts_start_at_most_100_jobs_in_any_second_of_a_queue_limited_to_100_per_second() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    set_limits(&client, Q, Some("100/1s"), None).await;
    let jobs: Vec<NewJob> = (0..500)
        .map(|i| NewJob::new("echo", format!("{i}").into_bytes()))
        .collect();
    let ids = enqueue_ids(&client, Q, &jobs).await;
    let _hosts = [echo_host(&redis), echo_host(&redis)];
    eventually("500 jobs completed", Duration::from_secs(20), || async {
        let counts = client.counts(Q).await.ok()?;
        (counts.completed == 500).then_some(())
    })
    .await;

    let mut starts = Vec::new();
    let mut hosts = std::collections::HashSet::new();
    for id in &ids {
        let job = client.get(Q, id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Completed);
        // Every attempt started counts against the limit, not only the successful one.
        starts.extend(job.history.iter().map(|a| a.started_at));
        hosts.insert(job.host.unwrap());
    }
    assert_eq!(most_starts_in_a_window(&starts, 1000), 100);
    let span = starts.iter().max().unwrap() - starts.iter().min().unwrap();
    // 500 starts at 100 per second: the fifth hundred can start no sooner than 4 s after the
    // first, so the limit really bound.
    assert!(span >= 4000, "500 starts took only {span} ms");
    assert!(span < 8000, "the hosts lagged the limit: {span} ms");
    assert_eq!(hosts.len(), 2, "both hosts took part");
    // While held back, the hosts slept until the window freed rather than polling: a few
    // calls per window each (fetch, acks, heartbeats), not thousands.
    let calls = redis.script_calls().await;
    assert!(calls < 2000, "{calls} script calls for 500 jobs");
}

#[tokio::test]
async fn a_tenant_with_10000_jobs_does_not_hold_up_another_tenants_job_past_one_window() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    set_limits(&client, Q, None, Some("50/1s")).await;
    let backlog: Vec<NewJob> = (0..10_000)
        .map(|i| NewJob::new("echo", format!("{i}").into_bytes()).with_group("tenant-a"))
        .collect();
    client.enqueue_bulk(Q, &backlog).await.unwrap();
    let _host = echo_host(&redis);
    // Tenant A is at its limit once its first 50 have started.
    eventually(
        "tenant A's first window",
        Duration::from_secs(15),
        || async {
            let counts = client.counts(Q).await.ok()?;
            (counts.completed >= 50).then_some(())
        },
    )
    .await;

    let enqueued_at = redis.now_ms().await;
    let b = client
        .enqueue(
            Q,
            &NewJob::new("echo", b"b".to_vec()).with_group("tenant-b"),
        )
        .await
        .unwrap();
    let job = eventually("tenant B's job", Duration::from_secs(5), || async {
        let job = client.get(Q, &b.id).await.ok()??;
        (job.state == JobState::Completed).then_some(job)
    })
    .await;
    let waited = job.finished_at_ms.unwrap() - enqueued_at;
    assert!(waited < 2000, "tenant B's job waited {waited} ms");
    assert_eq!(job.result.as_deref(), Some(&b"b"[..]));
    // Tenant A is still held to 50 a second: nearly all of its jobs still wait.
    let counts = client.counts(Q).await.unwrap();
    assert!(counts.waiting > 9_700, "{counts:?}");
}
