//! Rate limits and groups: a queue limit and a per-group limit held in every window, groups kept
//! apart, grouped jobs back in their group after every transition.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use wasmq::queue::{Backoff, CancelOutcome, Completion, Failure, JobState, NewJob, QueueError};

use crate::support::jobs::{most_starts_in_a_window, recover_expired_leases, set_limits};
use crate::support::redis::RedisServer;

use super::{HOST, LEASE, eventually, fetch_one, grouped, ids, no_retry_wait, start};

/// Whether `id` waits in `group`'s own set (and not in the ungrouped `waiting` set).
async fn waits_in_group(server: &RedisServer, queue: &str, group: &str, id: &str) -> bool {
    let keys = wasmq::queue::QueueKeys::new(queue).unwrap();
    let mut conn = server.connection().await;
    let in_group: Option<f64> = conn.zscore(keys.group_waiting(group), id).await.unwrap();
    let in_plain: Option<f64> = conn.zscore(keys.waiting(), id).await.unwrap();
    let listed: Option<f64> = conn.zscore(keys.groups(), group).await.unwrap();
    in_group.is_some() && in_plain.is_none() && listed.is_some()
}

#[tokio::test]
async fn a_fetch_at_the_rate_limit_leases_nothing_and_says_when_the_window_frees() {
    let (server, client) = start().await;
    set_limits(&client, "q", Some("5/1s"), None).await;
    client
        .enqueue_bulk(
            "q",
            &(0..10)
                .map(|_| NewJob::new("h", vec![]))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    let first = client.fetch_batch("q", 10, LEASE, HOST).await.unwrap();
    assert_eq!(first.jobs.len(), 5, "the limit caps the batch");
    let limited = client.fetch_batch("q", 10, LEASE, HOST).await.unwrap();
    assert!(limited.jobs.is_empty());
    // The window frees when the oldest start is a window old: no worker needs to poll.
    let due = limited
        .next_due_ms
        .expect("a limited fetch says when to come back");
    assert!(
        due > limited.now_ms && due <= first.now_ms + 1000,
        "{due} vs {}",
        first.now_ms
    );
    assert_eq!(client.counts("q").await.unwrap().waiting, 5);
    // Once the window has passed (on the Redis clock), the rest start.
    eventually("the window to free", || async {
        (server.now_ms().await >= due).then_some(())
    })
    .await;
    assert_eq!(client.fetch("q", 10, LEASE, HOST).await.unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queue_rate_limit_holds_in_every_window_across_fetchers() {
    const WINDOW: u64 = 300;
    const MAX: usize = 20;
    let server = RedisServer::start();
    let client = server.client().await;
    set_limits(&client, "q", Some(&format!("{MAX}/{WINDOW}ms")), None).await;
    let jobs: Vec<NewJob> = (0..400).map(|_| NewJob::new("h", vec![])).collect();
    client.enqueue_bulk("q", &jobs).await.unwrap();
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut fetchers = Vec::new();
    for f in 0..4 {
        // Separate connections, like separate hosts; each sleeps as long as fetch says.
        let client = server.client().await;
        fetchers.push(tokio::spawn(async move {
            let host = format!("host-{f}");
            let mut ids = Vec::new();
            while Instant::now() < deadline {
                let batch = client.fetch_batch("q", 8, LEASE, &host).await.unwrap();
                if batch.jobs.is_empty() {
                    let due = batch.next_due_ms.expect("limited, with jobs waiting");
                    let wait = due.saturating_sub(batch.now_ms).min(WINDOW);
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    continue;
                }
                let done: Vec<Completion> = batch
                    .jobs
                    .iter()
                    .map(|j| Completion::new(j, vec![]))
                    .collect();
                client.complete("q", &done).await.unwrap();
                ids.extend(batch.jobs.into_iter().map(|job| job.id));
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for fetcher in fetchers {
        ids.extend(fetcher.await.unwrap());
    }
    let mut starts = Vec::new();
    for id in &ids {
        starts.push(
            client
                .get("q", id)
                .await
                .unwrap()
                .unwrap()
                .started_at_ms
                .unwrap(),
        );
    }
    assert_eq!(most_starts_in_a_window(&starts, WINDOW), MAX);
    // 1.5 s is five windows: the limit bound, and the fetchers kept up with it.
    assert!(
        ids.len() >= 4 * MAX && ids.len() <= 6 * MAX,
        "{} jobs started",
        ids.len()
    );
}

#[tokio::test]
async fn each_group_is_held_to_its_own_limit_and_the_others_still_run() {
    let (_server, client) = start().await;
    set_limits(&client, "q", None, Some("3/1h")).await;
    client.enqueue_bulk("q", &grouped("a", 10)).await.unwrap();
    client.enqueue_bulk("q", &grouped("b", 10)).await.unwrap();
    client
        .enqueue_bulk("q", &[NewJob::new("h", vec![]), NewJob::new("h", vec![])])
        .await
        .unwrap();
    let first = client.fetch_batch("q", 64, LEASE, HOST).await.unwrap();
    let mut per_group: BTreeMap<String, usize> = BTreeMap::new();
    for job in &first.jobs {
        let group = client.get("q", &job.id).await.unwrap().unwrap().group;
        *per_group.entry(group.unwrap_or_default()).or_default() += 1;
    }
    // Ungrouped jobs have no group limit; each group starts 3 in its window.
    let expected: BTreeMap<String, usize> =
        [("".into(), 2), ("a".into(), 3), ("b".into(), 3)].into();
    assert_eq!(per_group, expected);
    let next = client.fetch_batch("q", 64, LEASE, HOST).await.unwrap();
    assert!(next.jobs.is_empty());
    let due = next
        .next_due_ms
        .expect("the groups' windows free at a known time");
    assert!(due >= first.now_ms + 3_600_000 && due <= next.now_ms + 3_600_000);
    assert_eq!(client.counts("q").await.unwrap().waiting, 14);
}

#[tokio::test]
async fn a_group_with_10000_waiting_jobs_does_not_hold_up_another_groups_job() {
    let (server, client) = start().await;
    set_limits(&client, "q", None, Some("50/1s")).await;
    client
        .enqueue_bulk("q", &grouped("big", 10_000))
        .await
        .unwrap();
    assert_eq!(client.fetch("q", 64, LEASE, HOST).await.unwrap().len(), 50);
    let enqueued_at = server.now_ms().await;
    let small = client
        .enqueue("q", &NewJob::new("h", vec![]).with_group("small"))
        .await
        .unwrap();
    // The big group is at its limit; the small group's job is next, well within one window.
    let fetched = client.fetch_batch("q", 64, LEASE, HOST).await.unwrap();
    assert_eq!(ids(&fetched.jobs), vec![small.id.as_str()]);
    assert!(fetched.now_ms < enqueued_at + 1000);
    assert_eq!(client.counts("q").await.unwrap().waiting, 9_950);

    // Without any limit, groups still take turns: a one-job group is served in the next batch
    // however long the other group's backlog.
    set_limits(&client, "q", None, None).await;
    let other = client
        .enqueue("q", &NewJob::new("h", vec![]).with_group("other"))
        .await
        .unwrap();
    let batch = client.fetch("q", 10, LEASE, HOST).await.unwrap();
    assert_eq!(batch.len(), 10);
    assert!(
        ids(&batch).contains(&other.id.as_str()),
        "round-robin serves every group"
    );
}

#[tokio::test]
async fn a_queue_limit_shares_each_window_between_groups() {
    let (server, client) = start().await;
    // One start per window: the turn goes round, so the one-job group waits one turn at most.
    set_limits(&client, "q", Some("1/1h"), None).await;
    client
        .enqueue_bulk("q", &grouped("big", 100))
        .await
        .unwrap();
    let small = client
        .enqueue("q", &NewJob::new("h", vec![]).with_group("small"))
        .await
        .unwrap();
    let first = fetch_one(&client, "q").await;
    assert_eq!(
        client
            .get("q", &first.id)
            .await
            .unwrap()
            .unwrap()
            .group
            .as_deref(),
        Some("big")
    );
    // The big group was served; the small one is next once the window frees.
    // Free the window by hand rather than wait an hour.
    let mut conn = server.connection().await;
    let () = conn.del("wasmq:{q}:rate").await.unwrap();
    assert_eq!(fetch_one(&client, "q").await.id, small.id);
}

#[tokio::test]
async fn priority_and_fifo_hold_within_a_group() {
    let (_server, client) = start().await;
    let plan = [
        ("low-1", -5),
        ("mid-1", 0),
        ("high-1", 10),
        ("mid-2", 0),
        ("high-2", 10),
    ];
    for (id, priority) in plan {
        let job = NewJob::new("h", vec![])
            .with_id(id)
            .with_priority(priority)
            .with_group("t1");
        client.enqueue("q", &job).await.unwrap();
    }
    let mut order = Vec::new();
    for _ in 0..plan.len() {
        order.push(fetch_one(&client, "q").await.id);
    }
    assert_eq!(order, ["high-1", "high-2", "mid-1", "mid-2", "low-1"]);
}

#[tokio::test]
async fn grouped_jobs_come_back_into_their_group_on_release_retry_recover_and_replay() {
    let (server, client) = start().await;
    let enqueue = |id: &'static str, backoff: Backoff| {
        let client = client.clone();
        async move {
            let job = NewJob::new("h", vec![])
                .with_id(id)
                .with_group("t1")
                .with_max_attempts(2)
                .with_backoff(backoff);
            client.enqueue("q", &job).await.unwrap();
        }
    };

    // Release.
    enqueue("released", no_retry_wait()).await;
    let job = fetch_one(&client, "q").await;
    client.release("q", &[job.lease()]).await.unwrap();
    assert!(waits_in_group(&server, "q", "t1", "released").await);
    client.cancel("q", &["released".into()]).await.unwrap();

    // A failure with no backoff goes straight back to waiting: the group's.
    enqueue("failed", no_retry_wait()).await;
    let job = fetch_one(&client, "q").await;
    client
        .fail("q", &[Failure::new(&job, "fail", "boom")])
        .await
        .unwrap();
    assert!(waits_in_group(&server, "q", "t1", "failed").await);
    // Out of attempts: dead; replay puts it back into its group.
    let job = fetch_one(&client, "q").await;
    client
        .fail("q", &[Failure::new(&job, "fail", "boom")])
        .await
        .unwrap();
    // (with the cancelled "released")
    assert_eq!(client.counts("q").await.unwrap().dead, 2);
    client.replay("q", &["failed".into()]).await.unwrap();
    assert!(waits_in_group(&server, "q", "t1", "failed").await);
    client.cancel("q", &["failed".into()]).await.unwrap();

    // A retry after a backoff is promoted into its group.
    enqueue("retried", Backoff::fixed(Duration::from_millis(20))).await;
    let job = fetch_one(&client, "q").await;
    client
        .fail("q", &[Failure::new(&job, "fail", "boom")])
        .await
        .unwrap();
    eventually("the retry to come due", || async {
        let (moved, _) = client.promote("q", 10).await.unwrap();
        (moved == 1).then_some(())
    })
    .await;
    assert!(waits_in_group(&server, "q", "t1", "retried").await);
    client.cancel("q", &["retried".into()]).await.unwrap();

    // A lost lease is recovered into the group (no backoff: straight to waiting).
    enqueue("lost", no_retry_wait()).await;
    let job = client
        .fetch("q", 1, Duration::from_millis(1), HOST)
        .await
        .unwrap()
        .remove(0);
    recover_expired_leases(&client, "q", &[], 1).await;
    assert!(waits_in_group(&server, "q", "t1", &job.id).await);
    client
        .cancel("q", std::slice::from_ref(&job.id))
        .await
        .unwrap();

    // A delayed job is promoted into its group by fetch.
    let delayed = NewJob::new("h", vec![])
        .with_id("delayed")
        .with_group("t1")
        .with_delay(Duration::from_millis(20));
    client.enqueue("q", &delayed).await.unwrap();
    let job = eventually("the delayed job to run", || async {
        client.fetch("q", 1, LEASE, HOST).await.unwrap().pop()
    })
    .await;
    assert_eq!(job.id, "delayed");
    let counts = client.counts("q").await.unwrap();
    assert_eq!((counts.waiting, counts.active, counts.delayed), (0, 1, 0));
}

#[tokio::test]
async fn counts_list_and_cancel_see_grouped_waiting_jobs() {
    let (server, client) = start().await;
    for (id, group) in [
        ("a1", Some("a")),
        ("p1", None),
        ("a2", Some("a")),
        ("b1", Some("b")),
        ("p2", None),
    ] {
        let mut job = NewJob::new("h", vec![]).with_id(id);
        if let Some(group) = group {
            job = job.with_group(group);
        }
        client.enqueue("q", &job).await.unwrap();
    }
    assert_eq!(client.counts("q").await.unwrap().waiting, 5);
    let listed: Vec<String> = client
        .list("q", JobState::Waiting, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|job| job.id)
        .collect();
    // Ungrouped first, then each group's jobs in the groups' turn order.
    assert_eq!(listed, ["p1", "p2", "a1", "a2", "b1"]);
    let page: Vec<String> = client
        .list("q", JobState::Waiting, 1, 3)
        .await
        .unwrap()
        .into_iter()
        .map(|job| job.id)
        .collect();
    assert_eq!(page, ["p2", "a1", "a2"]);
    let job = client.get("q", "b1").await.unwrap().unwrap();
    assert_eq!(job.group.as_deref(), Some("b"));

    let outcomes = client
        .cancel("q", &["b1".into(), "a1".into()])
        .await
        .unwrap();
    assert!(outcomes.iter().all(|(_, o)| *o == CancelOutcome::Cancelled));
    assert_eq!(client.counts("q").await.unwrap().waiting, 3);
    // The emptied group left the round-robin; the other is still in it.
    let mut conn = server.connection().await;
    let groups: Vec<String> = conn.zrange("wasmq:{q}:groups", 0, -1).await.unwrap();
    assert_eq!(groups, ["a"]);
    let all = client.fetch("q", 10, LEASE, HOST).await.unwrap();
    let mut got = ids(&all);
    got.sort_unstable();
    assert_eq!(got, ["a2", "p1", "p2"]);
    assert_eq!(client.counts("q").await.unwrap().waiting, 0);
}

#[tokio::test]
async fn a_bad_group_is_refused_and_a_seven_key_enqueue_cannot_place_a_grouped_job() {
    let (server, client) = start().await;
    for bad in ["", "has space", &"x".repeat(129)] {
        let err = client
            .enqueue("q", &NewJob::new("h", vec![]).with_group(bad))
            .await
            .unwrap_err();
        assert!(
            matches!(err, QueueError::InvalidJob { .. }),
            "{bad:?}: {err}"
        );
    }
    // A producer on the 7-key form (protocol 1) still enqueues ungrouped jobs, and is told
    // clearly when it asks for a group.
    let mut conn = server.connection().await;
    let keys: Vec<String> = [
        "job:", "config", "waiting", "delayed", "seq", "events", "wake",
    ]
    .iter()
    .map(|k| format!("wasmq:{{q}}:{k}"))
    .collect();
    let err = redis::cmd("EVAL")
        .arg(wasmq::queue::ENQUEUE_LUA)
        .arg(7)
        .arg(&keys)
        .arg(&["1", "j1", "2", "handler", "h", "group", "t1"])
        .query_async::<redis::Value>(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("WASMQ_INVALID"), "{err}");
    assert_eq!(client.counts("q").await.unwrap().waiting, 0);
}
