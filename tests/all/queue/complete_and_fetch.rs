//! Complete and fetch in one call: completions recorded and the next jobs leased, within pauses and
//! rate limits, stale completions refused.

use std::time::Duration;

use wasmq::queue::{Completion, JobState, LeaseRejection, NewJob};

use crate::support::jobs::{recover_expired_leases, set_limits};
use crate::support::redis::RedisServer;

use super::{HOST, LEASE, eventually, fetch_one, grouped, ids, no_retry_wait, start};

async fn reset_stats(server: &RedisServer) {
    let mut conn = server.connection().await;
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn complete_and_fetch_records_completions_and_leases_the_next_jobs_in_one_call() {
    let (server, client) = start().await;
    let jobs: Vec<NewJob> = (0..4)
        .map(|i| NewJob::new("h", vec![]).with_id(format!("j{i}")))
        .collect();
    client.enqueue_bulk("q", &jobs).await.unwrap();
    let first = client.fetch("q", 2, LEASE, HOST).await.unwrap();
    assert_eq!(ids(&first), ["j0", "j1"]);
    // Loads the function library (a first FCALL answered `Function not found` would count as
    // a call).
    client
        .complete_and_fetch("q", &[], 0, LEASE, HOST)
        .await
        .unwrap();

    reset_stats(&server).await;
    let done: Vec<Completion> = first
        .iter()
        .map(|job| Completion::new(job, format!("result of {}", job.id)))
        .collect();
    let (report, fetched) = client
        .complete_and_fetch("q", &done, 2, LEASE, "host-b")
        .await
        .unwrap();
    assert_eq!(server.script_calls().await, 1, "one script call");
    assert_eq!(report.completed, ["j0", "j1"]);
    assert!(report.rejected.is_empty() && report.result_too_large.is_empty());
    assert_eq!(ids(&fetched.jobs), ["j2", "j3"], "next in line, FIFO");
    let next = &fetched.jobs[0];
    assert_eq!(next.attempt, 1);
    assert_ne!(next.token, first[0].token, "a fresh lease token");
    assert_eq!(next.lease_expires_at_ms, fetched.now_ms + 60_000);

    for job in &first {
        let stored = client.get("q", &job.id).await.unwrap().unwrap();
        assert_eq!(stored.state, JobState::Completed);
        assert_eq!(
            stored.result.as_deref(),
            Some(format!("result of {}", job.id).as_bytes())
        );
    }
    let stored = client.get("q", "j2").await.unwrap().unwrap();
    assert_eq!(
        (stored.state, stored.host.as_deref(), stored.attempt),
        (JobState::Active, Some("host-b"), 1)
    );
    let counts = client.counts("q").await.unwrap();
    assert_eq!((counts.waiting, counts.active, counts.completed), (0, 2, 2));
    let events = client.events("q", None, 100).await.unwrap();
    let last: Vec<&str> = events[events.len() - 2..]
        .iter()
        .map(|e| e.event.as_str())
        .collect();
    assert_eq!(
        last,
        ["completed", "active"],
        "completions first, then the fetch"
    );

    // The fetch part is fetch's own: a due delayed job is promoted and leased; one in the
    // future is what the reply says to wait for. N = 0 only completes.
    let soon = client
        .enqueue(
            "q",
            &NewJob::new("h", vec![]).with_delay(Duration::from_millis(100)),
        )
        .await
        .unwrap();
    let later = client
        .enqueue(
            "q",
            &NewJob::new("h", vec![]).with_delay(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    let (report, nothing) = client
        .complete_and_fetch(
            "q",
            &[Completion::new(&fetched.jobs[0], vec![])],
            0,
            LEASE,
            HOST,
        )
        .await
        .unwrap();
    assert_eq!(report.completed, ["j2"]);
    assert!(nothing.jobs.is_empty());
    let due_at = client
        .get("q", &soon.id)
        .await
        .unwrap()
        .unwrap()
        .run_at_ms
        .unwrap();
    eventually("the delayed job to come due", || async {
        (server.now_ms().await >= due_at).then_some(())
    })
    .await;
    let (report, fetched) = client
        .complete_and_fetch(
            "q",
            &[Completion::new(&fetched.jobs[1], vec![])],
            5,
            LEASE,
            HOST,
        )
        .await
        .unwrap();
    assert_eq!(report.completed, ["j3"]);
    assert_eq!(ids(&fetched.jobs), [soon.id.as_str()]);
    let later_at = client.get("q", &later.id).await.unwrap().unwrap().run_at_ms;
    assert_eq!(fetched.next_due_ms, later_at);
}

#[tokio::test]
async fn complete_and_fetch_on_a_paused_queue_records_completions_and_leases_nothing() {
    let (_server, client) = start().await;
    let jobs: Vec<NewJob> = (0..3).map(|_| NewJob::new("h", vec![])).collect();
    client.enqueue_bulk("q", &jobs).await.unwrap();
    let running = fetch_one(&client, "q").await;
    client.pause("q").await.unwrap();
    let (report, fetched) = client
        .complete_and_fetch("q", &[Completion::new(&running, vec![])], 2, LEASE, HOST)
        .await
        .unwrap();
    assert_eq!(report.completed, [running.id.as_str()]);
    assert!(fetched.jobs.is_empty());
    let counts = client.counts("q").await.unwrap();
    assert_eq!((counts.waiting, counts.active, counts.completed), (2, 0, 1));
    client.resume("q").await.unwrap();
    assert_eq!(client.fetch("q", 10, LEASE, HOST).await.unwrap().len(), 2);
}

#[tokio::test]
async fn complete_and_fetch_leases_within_the_queue_and_group_rate_limits() {
    let (_server, client) = start().await;
    // Queue limit: 3 starts a minute, 2 of them used by the first fetch.
    set_limits(&client, "q", Some("3/60s"), None).await;
    let jobs: Vec<NewJob> = (0..10).map(|_| NewJob::new("h", vec![])).collect();
    client.enqueue_bulk("q", &jobs).await.unwrap();
    let first = client.fetch("q", 2, LEASE, HOST).await.unwrap();
    let done: Vec<Completion> = first.iter().map(|j| Completion::new(j, vec![])).collect();
    let (report, fetched) = client
        .complete_and_fetch("q", &done, 2, LEASE, HOST)
        .await
        .unwrap();
    assert_eq!(report.completed.len(), 2);
    assert_eq!(fetched.jobs.len(), 1, "one start left in the window");
    let (report, limited) = client
        .complete_and_fetch(
            "q",
            &[Completion::new(&fetched.jobs[0], vec![])],
            2,
            LEASE,
            HOST,
        )
        .await
        .unwrap();
    assert_eq!(
        report.completed.len(),
        1,
        "completions do not wait for the window"
    );
    assert!(limited.jobs.is_empty());
    let frees = limited.next_due_ms.expect("says when the window frees");
    assert!(frees > limited.now_ms && frees <= limited.now_ms + 60_000);

    // Group limit: one start per group a minute; the groups take turns as in fetch.
    set_limits(&client, "g", None, Some("1/60s")).await;
    let mut jobs = grouped("a", 3);
    jobs.extend(grouped("b", 3));
    client.enqueue_bulk("g", &jobs).await.unwrap();
    let a = fetch_one(&client, "g").await;
    assert_eq!(
        client
            .get("g", &a.id)
            .await
            .unwrap()
            .unwrap()
            .group
            .as_deref(),
        Some("a")
    );
    let (_, fetched) = client
        .complete_and_fetch("g", &[Completion::new(&a, vec![])], 5, LEASE, HOST)
        .await
        .unwrap();
    assert_eq!(fetched.jobs.len(), 1, "only group b may start");
    let b = client.get("g", &fetched.jobs[0].id).await.unwrap().unwrap();
    assert_eq!(b.group.as_deref(), Some("b"));
}

#[tokio::test]
async fn a_stale_completion_is_refused_by_complete_and_fetch_and_the_fetch_is_still_done() {
    let (_server, client) = start().await;
    client
        .enqueue(
            "q",
            &NewJob::new("h", vec![])
                .with_id("x")
                .with_backoff(no_retry_wait()),
        )
        .await
        .unwrap();
    let stale = client
        .fetch("q", 1, Duration::from_millis(50), "host-old")
        .await
        .unwrap()
        .remove(0);
    recover_expired_leases(&client, "q", &[], 1).await;
    let current = client
        .fetch("q", 1, LEASE, "host-new")
        .await
        .unwrap()
        .remove(0);
    client
        .enqueue("q", &NewJob::new("h", vec![]).with_id("y"))
        .await
        .unwrap();

    // The old holder finishes late: its completion is refused, and it still gets the next job.
    let (report, fetched) = client
        .complete_and_fetch(
            "q",
            &[Completion::new(&stale, vec![])],
            1,
            LEASE,
            "host-old",
        )
        .await
        .unwrap();
    assert!(report.completed.is_empty());
    assert_eq!(
        report.rejected,
        [("x".to_string(), LeaseRejection::TokenMismatch)]
    );
    assert_eq!(ids(&fetched.jobs), ["y"]);
    let x = client.get("q", "x").await.unwrap().unwrap();
    assert_eq!(
        (x.state, x.host.as_deref(), x.attempt),
        (JobState::Active, Some("host-new"), current.attempt)
    );

    // A refused completion of a job that went back to waiting: the same call leases that job
    // again, as a new attempt under the new lease.
    client
        .complete("q", &[Completion::new(&current, vec![])])
        .await
        .unwrap();
    client
        .enqueue(
            "q",
            &NewJob::new("h", vec![])
                .with_id("z")
                .with_backoff(no_retry_wait()),
        )
        .await
        .unwrap();
    let z = client
        .fetch("q", 1, Duration::from_millis(50), "host-old")
        .await
        .unwrap()
        .remove(0);
    recover_expired_leases(&client, "q", &[], 1).await;
    let (report, fetched) = client
        .complete_and_fetch("q", &[Completion::new(&z, vec![])], 1, LEASE, "host-old")
        .await
        .unwrap();
    assert_eq!(
        report.rejected,
        [("z".to_string(), LeaseRejection::NotActive("waiting".into()))]
    );
    assert_eq!(ids(&fetched.jobs), ["z"]);
    assert_eq!(
        fetched.jobs[0].attempt, 2,
        "the lost lease counted; this is attempt 2"
    );
    assert_ne!(fetched.jobs[0].token, z.token);
}
