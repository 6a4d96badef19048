//! The queue protocol against real redis-server processes: every transition and option, lease
//! checks, bad input, crash recovery and concurrent fetchers. Each test starts its own server.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use redis::AsyncCommands;
use wasmq::queue::{
    Backoff, CancelOutcome, Client, Completion, FailOutcome, Failure, JobState, LeaseRejection,
    LeasedJob, NewJob, OwnPolicy, QueueConfig, QueueError, RetryPolicy,
};

use crate::support::jobs::{
    keep_everything, most_starts_in_a_window, recover_expired_leases, set_limits,
};
use crate::support::redis::RedisServer;

const LEASE: Duration = Duration::from_secs(60);
const HOST: &str = "host-a";

async fn start() -> (RedisServer, Client) {
    let server = RedisServer::start();
    let client = server.client().await;
    (server, client)
}

async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    crate::support::eventually(what, Duration::from_secs(10), probe).await
}

async fn fetch_one(client: &Client, queue: &str) -> LeasedJob {
    let mut jobs = client.fetch(queue, 1, LEASE, HOST).await.unwrap();
    assert_eq!(jobs.len(), 1, "expected one job to fetch");
    jobs.remove(0)
}

fn ids(jobs: &[LeasedJob]) -> Vec<&str> {
    jobs.iter().map(|job| job.id.as_str()).collect()
}

fn no_retry_wait() -> Backoff {
    Backoff::fixed(Duration::ZERO)
}

#[tokio::test]
async fn an_enqueued_job_is_leased_with_its_payload_options_and_first_attempt() {
    let (server, client) = start().await;
    let job = NewJob::new("send-email", b"{\"to\":\"a@b\"}".to_vec())
        .with_max_attempts(5)
        .with_timeout(Duration::from_secs(30));
    let enqueued = client.enqueue("emails", &job).await.unwrap();
    assert!(enqueued.created);
    assert_eq!(enqueued.state, JobState::Waiting);
    assert_eq!(enqueued.id.len(), 26, "generated ids are ULIDs");

    let before = server.now_ms().await;
    let leased = fetch_one(&client, "emails").await;
    assert_eq!(leased.id, enqueued.id);
    assert_eq!(leased.handler, "send-email");
    assert_eq!(leased.payload, job.payload);
    assert_eq!((leased.attempt, leased.max_attempts), (1, 5));
    assert_eq!(leased.timeout, Some(Duration::from_secs(30)));
    // The lease expiry comes from Redis TIME plus the lease.
    assert!(leased.lease_expires_at_ms >= before + 60_000);
    assert!(leased.lease_expires_at_ms <= server.now_ms().await + 60_000);

    let stored = client.get("emails", &leased.id).await.unwrap().unwrap();
    assert_eq!(stored.state, JobState::Active);
    assert_eq!(stored.host.as_deref(), Some(HOST));
    assert_eq!(stored.lease_expires_at_ms, Some(leased.lease_expires_at_ms));

    let report = client
        .complete("emails", &[Completion::new(&leased, b"sent".to_vec())])
        .await
        .unwrap();
    assert_eq!(report.completed, vec![leased.id.clone()]);
    let done = client.get("emails", &leased.id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.result.as_deref(), Some(&b"sent"[..]));
    assert_eq!(done.history.len(), 1);
    assert_eq!(done.history[0].outcome, "ok");
    assert_eq!(done.history[0].host, HOST);
    let counts = client.counts("emails").await.unwrap();
    assert_eq!((counts.waiting, counts.active, counts.completed), (0, 0, 1));
}

#[tokio::test]
async fn higher_priority_runs_first_and_fifo_holds_within_a_priority() {
    let (_server, client) = start().await;
    let plan = [
        ("low-1", -5),
        ("mid-1", 0),
        ("high-1", 10),
        ("mid-2", 0),
        ("high-2", 10),
        ("low-2", -5),
    ];
    let jobs: Vec<NewJob> = plan
        .iter()
        .map(|(id, priority)| {
            NewJob::new("h", vec![])
                .with_id(*id)
                .with_priority(*priority)
        })
        .collect();
    client.enqueue_bulk("q", &jobs).await.unwrap();
    let waiting = client.list("q", JobState::Waiting, 0, 10).await.unwrap();
    let listed: Vec<&str> = waiting.iter().map(|job| job.id.as_str()).collect();
    assert_eq!(
        listed,
        ["high-1", "high-2", "mid-1", "mid-2", "low-1", "low-2"]
    );

    let first = client.fetch("q", 3, LEASE, HOST).await.unwrap();
    let rest = client.fetch("q", 10, LEASE, HOST).await.unwrap();
    assert_eq!(ids(&first), ["high-1", "high-2", "mid-1"]);
    assert_eq!(ids(&rest), ["mid-2", "low-1", "low-2"]);
}

#[tokio::test]
async fn a_delayed_job_waits_for_its_time_on_the_redis_clock() {
    let (server, client) = start().await;
    let before = server.now_ms().await;
    let enqueued = client
        .enqueue(
            "q",
            &NewJob::new("h", vec![]).with_delay(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    assert_eq!(enqueued.state, JobState::Delayed);
    let job = client.get("q", &enqueued.id).await.unwrap().unwrap();
    let run_at = job.run_at_ms.unwrap();
    assert!(run_at >= before + 300 && run_at <= server.now_ms().await + 300);

    let fetched = client.fetch_batch("q", 10, LEASE, HOST).await.unwrap();
    if fetched.now_ms < run_at {
        assert!(
            fetched.jobs.is_empty(),
            "a delayed job must not be leased early"
        );
        assert_eq!(fetched.next_due_ms, Some(run_at));
    } else {
        // This machine stalled past the delay; the job is due, so leasing it is right.
        assert_eq!(fetched.jobs.len(), 1);
        return;
    }

    let leased = eventually("the delayed job to come due", || async {
        client.fetch("q", 10, LEASE, HOST).await.unwrap().pop()
    })
    .await;
    assert_eq!(leased.id, enqueued.id);
    assert!(server.now_ms().await >= run_at);
}

#[tokio::test]
async fn run_at_schedules_in_the_future_and_a_past_time_means_now() {
    let (_server, client) = start().await;
    let future = SystemTime::now() + Duration::from_secs(3600);
    let past = SystemTime::now() - Duration::from_secs(3600);
    let later = client
        .enqueue("q", &NewJob::new("h", vec![]).with_run_at(future))
        .await
        .unwrap();
    let now = client
        .enqueue("q", &NewJob::new("h", vec![]).with_run_at(past))
        .await
        .unwrap();
    assert_eq!(later.state, JobState::Delayed);
    assert_eq!(now.state, JobState::Waiting);
    let stored = client.get("q", &later.id).await.unwrap().unwrap();
    assert_eq!(stored.run_at_ms, Some(wasmq::queue::unix_ms(future)));
    // The past time is not stored as given: the job became due when it was enqueued (a
    // run-at of 1970 would make it look 56 years late to a backlog alert).
    let stored = client.get("q", &now.id).await.unwrap().unwrap();
    assert_eq!(stored.run_at_ms, Some(stored.created_at_ms));
    assert_eq!(
        ids(&client.fetch("q", 10, LEASE, HOST).await.unwrap()),
        [now.id.as_str()]
    );
}

#[tokio::test]
async fn enqueueing_an_existing_id_writes_nothing_and_returns_the_existing_job() {
    let (server, client) = start().await;
    let first = client
        .enqueue("q", &NewJob::new("h", b"one".to_vec()).with_id("order-42"))
        .await
        .unwrap();
    assert!(first.created);
    let before = server.snapshot().await;
    let again = client
        .enqueue(
            "q",
            &NewJob::new("other", b"two".to_vec())
                .with_id("order-42")
                .with_priority(9),
        )
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(
        (again.id.as_str(), again.state),
        ("order-42", JobState::Waiting)
    );
    assert_eq!(
        server.snapshot().await,
        before,
        "a duplicate must write nothing"
    );
    let job = client.get("q", "order-42").await.unwrap().unwrap();
    assert_eq!(job.payload, b"one");

    // Within one bulk call too: the second occurrence is reported as existing.
    let bulk = client
        .enqueue_bulk(
            "q",
            &[
                NewJob::new("h", vec![]).with_id("x"),
                NewJob::new("h", vec![]).with_id("x"),
            ],
        )
        .await
        .unwrap();
    assert_eq!((bulk[0].created, bulk[1].created), (true, false));
    assert_eq!(client.counts("q").await.unwrap().waiting, 2);
}

#[tokio::test]
async fn failed_attempts_wait_base_times_two_to_the_n_minus_one_with_jitter_capped() {
    let (server, client) = start().await;
    let backoff = Backoff::Exponential {
        base: Duration::from_millis(100),
        cap: Duration::from_millis(250),
        jitter: 0.2,
    };
    let id = client
        .enqueue(
            "q",
            &NewJob::new("h", vec![])
                .with_max_attempts(4)
                .with_backoff(backoff),
        )
        .await
        .unwrap()
        .id;
    let mut conn = server.connection().await;
    for attempt in 1..=3u32 {
        let leased = eventually("the retry to come due", || async {
            client.fetch("q", 1, LEASE, HOST).await.unwrap().pop()
        })
        .await;
        assert_eq!(leased.attempt, attempt);
        let before = server.now_ms().await;
        let report = client
            .fail(
                "q",
                &[Failure::new(
                    &leased,
                    "guest_fail",
                    format!("error {attempt}"),
                )],
            )
            .await
            .unwrap();
        let after = server.now_ms().await;
        let [(failed_id, FailOutcome::Retry { run_at_ms })] = report.outcomes.as_slice() else {
            panic!("expected a retry, got {report:?}");
        };
        assert_eq!(failed_id, &id);
        // The retry set holds the job at exactly that due time.
        let score: f64 = conn.zscore("wasmq:{q}:retry", &id).await.unwrap();
        assert_eq!(score as u64, *run_at_ms);
        let (lo, hi) = backoff.delay_bounds_ms(attempt);
        let nominal = (100u64 << (attempt - 1)).min(250);
        assert_eq!((lo, hi), ((nominal * 4) / 5, (nominal * 6 / 5).min(250)));
        assert!(
            *run_at_ms >= before + lo && *run_at_ms <= after + hi,
            "attempt {attempt}: due {} ms after the failure, expected {lo}..={hi}",
            *run_at_ms as i64 - before as i64
        );
        let job = client.get("q", &id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Retry);
    }
}

#[tokio::test]
async fn jitter_spreads_the_retries_of_jobs_that_fail_together() {
    let (_server, client) = start().await;
    let backoff = Backoff::exponential(Duration::from_secs(10)).with_jitter(0.5);
    let jobs: Vec<NewJob> = (0..20)
        .map(|_| NewJob::new("h", vec![]).with_backoff(backoff))
        .collect();
    client.enqueue_bulk("q", &jobs).await.unwrap();
    let leased = client.fetch("q", 20, LEASE, HOST).await.unwrap();
    let failures: Vec<Failure> = leased
        .iter()
        .map(|job| Failure::new(job, "trap", "boom"))
        .collect();
    let report = client.fail("q", &failures).await.unwrap();
    let due: HashSet<u64> = report
        .outcomes
        .iter()
        .map(|(_, outcome)| match outcome {
            FailOutcome::Retry { run_at_ms } => *run_at_ms,
            FailOutcome::Dead => panic!("not out of attempts yet"),
        })
        .collect();
    assert!(
        due.len() > 10,
        "20 retries fell on only {} distinct times",
        due.len()
    );
}

#[tokio::test]
async fn fixed_backoff_waits_the_same_delay_every_time() {
    let (server, client) = start().await;
    client
        .enqueue(
            "q",
            &NewJob::new("h", vec![]).with_backoff(Backoff::fixed(Duration::from_secs(5))),
        )
        .await
        .unwrap();
    let leased = fetch_one(&client, "q").await;
    let before = server.now_ms().await;
    let report = client
        .fail("q", &[Failure::new(&leased, "timeout", "slow")])
        .await
        .unwrap();
    let after = server.now_ms().await;
    let FailOutcome::Retry { run_at_ms } = report.outcomes[0].1 else {
        panic!("expected a retry");
    };
    assert!(run_at_ms >= before + 5000 && run_at_ms <= after + 5000);
}

#[tokio::test]
async fn a_job_out_of_attempts_is_dead_lettered_with_every_attempt_kept() {
    let (_server, client) = start().await;
    let id = client
        .enqueue(
            "q",
            &NewJob::new("h", b"payload".to_vec())
                .with_max_attempts(3)
                .with_backoff(no_retry_wait()),
        )
        .await
        .unwrap()
        .id;
    let classes = ["timeout", "trap", "guest_fail"];
    for (n, class) in classes.iter().enumerate() {
        let leased = fetch_one(&client, "q").await;
        assert_eq!(leased.attempt as usize, n + 1);
        let report = client
            .fail(
                "q",
                &[Failure::new(&leased, *class, format!("failure {}", n + 1))],
            )
            .await
            .unwrap();
        let expected = if n + 1 < 3 { "retry" } else { "dead" };
        let got = match report.outcomes[0].1 {
            FailOutcome::Retry { .. } => "retry",
            FailOutcome::Dead => "dead",
        };
        assert_eq!(got, expected, "after attempt {}", n + 1);
    }
    let job = client.get("q", &id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.payload, b"payload");
    assert_eq!(job.last_error.as_deref(), Some("failure 3"));
    let history: Vec<(u32, &str, &str)> = job
        .history
        .iter()
        .map(|a| (a.attempt, a.outcome.as_str(), a.error.as_str()))
        .collect();
    assert_eq!(
        history,
        [
            (1, "timeout", "failure 1"),
            (2, "trap", "failure 2"),
            (3, "guest_fail", "failure 3")
        ]
    );
    for attempt in &job.history {
        assert_eq!(attempt.host, HOST);
        assert!(attempt.started_at > 0 && attempt.finished_at >= attempt.started_at);
    }
    let dlq = client.dead_letters("q", 0, 10).await.unwrap();
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].id, id);
    assert!(client.fetch("q", 10, LEASE, HOST).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_permanent_failure_dead_letters_at_once() {
    let (_server, client) = start().await;
    client
        .enqueue("q", &NewJob::new("h", vec![]).with_max_attempts(10))
        .await
        .unwrap();
    let leased = fetch_one(&client, "q").await;
    let report = client
        .fail(
            "q",
            &[Failure::new(&leased, "guest_fail", "bad input").permanent()],
        )
        .await
        .unwrap();
    assert_eq!(report.outcomes[0].1, FailOutcome::Dead);
    let counts = client.counts("q").await.unwrap();
    assert_eq!((counts.dead, counts.retry, counts.active), (1, 0, 0));
}

#[tokio::test]
async fn replay_returns_dead_jobs_to_waiting_with_fresh_attempts_and_history_kept() {
    let (_server, client) = start().await;
    let id = client
        .enqueue("q", &NewJob::new("h", vec![]).with_max_attempts(1))
        .await
        .unwrap()
        .id;
    let leased = fetch_one(&client, "q").await;
    client
        .fail("q", &[Failure::new(&leased, "trap", "boom")])
        .await
        .unwrap();
    let report = client
        .replay("q", &[id.clone(), "missing".to_string()])
        .await
        .unwrap();
    assert_eq!(report.done, [id.as_str()]);
    assert_eq!(
        report.skipped,
        [("missing".to_string(), "not_found".to_string())]
    );

    let job = client.get("q", &id).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.attempt, job.replays),
        (JobState::Waiting, 0, 1)
    );
    assert_eq!(job.history.len(), 1, "history survives a replay");
    // Due since the replay, not since its first enqueue.
    let replayed_at = job.run_at_ms.unwrap();
    assert!(replayed_at >= job.history[0].finished_at, "{job:?}");
    let again = fetch_one(&client, "q").await;
    assert_eq!(again.attempt, 1);

    // Replaying the oldest without naming ids works the same way.
    client
        .fail("q", &[Failure::new(&again, "trap", "boom")])
        .await
        .unwrap();
    assert_eq!(
        client.replay_oldest("q", 10).await.unwrap().done,
        [id.as_str()]
    );
    assert_eq!(client.counts("q").await.unwrap().dead, 0);
}

#[tokio::test]
async fn purge_deletes_dead_jobs_and_nothing_else() {
    let (server, client) = start().await;
    let jobs: Vec<NewJob> = ["d1", "d2", "alive"]
        .iter()
        .map(|id| NewJob::new("h", vec![]).with_id(*id).with_max_attempts(1))
        .collect();
    client.enqueue_bulk("q", &jobs).await.unwrap();
    let leased = client.fetch("q", 2, LEASE, HOST).await.unwrap();
    let failures: Vec<Failure> = leased
        .iter()
        .map(|j| Failure::new(j, "trap", "x"))
        .collect();
    client.fail("q", &failures).await.unwrap();

    let report = client
        .purge("q", &["d1".to_string(), "alive".to_string()])
        .await
        .unwrap();
    assert_eq!(report.done, ["d1"]);
    assert_eq!(
        report.skipped,
        [("alive".to_string(), "waiting".to_string())]
    );
    assert_eq!(client.purge_oldest("q", 10).await.unwrap().done, ["d2"]);
    let mut conn = server.connection().await;
    let exists: bool = conn.exists("wasmq:{q}:job:d1").await.unwrap();
    assert!(!exists);
    let counts = client.counts("q").await.unwrap();
    assert_eq!((counts.dead, counts.waiting), (0, 1));
}

#[tokio::test]
async fn completed_jobs_beyond_the_retention_count_are_deleted_oldest_first() {
    let (server, client) = start().await;
    let config = QueueConfig {
        completed_keep: Some(3),
        ..QueueConfig::default()
    };
    client.set_config("q", &config).await.unwrap();
    assert_eq!(client.config("q").await.unwrap(), config);
    let jobs: Vec<NewJob> = (1..=5)
        .map(|n| NewJob::new("h", vec![]).with_id(format!("j{n}")))
        .collect();
    client.enqueue_bulk("q", &jobs).await.unwrap();
    // One at a time, so completion order (and so age) is j1..j5.
    for _ in 0..5 {
        let leased = fetch_one(&client, "q").await;
        client
            .complete("q", &[Completion::new(&leased, leased.id.clone())])
            .await
            .unwrap();
    }
    let completed = client.list("q", JobState::Completed, 0, 10).await.unwrap();
    let kept: Vec<&str> = completed.iter().map(|job| job.id.as_str()).collect();
    assert_eq!(kept, ["j3", "j4", "j5"]);
    assert_eq!(completed[2].result.as_deref(), Some(&b"j5"[..]));
    let mut conn = server.connection().await;
    for gone in ["j1", "j2"] {
        let exists: bool = conn
            .exists(format!("wasmq:{{q}}:job:{gone}"))
            .await
            .unwrap();
        assert!(!exists, "{gone} should have been deleted");
    }
}

#[tokio::test]
async fn a_completion_batch_of_any_size_leaves_only_completed_keep_jobs() {
    let (server, client) = start().await;
    let config = QueueConfig {
        completed_keep: Some(10),
        ..QueueConfig::default()
    };
    client.set_config("q", &config).await.unwrap();
    // Over the 1000 deletions a call may make beyond the jobs it completes.
    let jobs = vec![NewJob::new("h", vec![]); 2500];
    client.enqueue_bulk("q", &jobs).await.unwrap();
    let leased = client.fetch("q", 2500, LEASE, HOST).await.unwrap();
    let done: Vec<Completion> = leased.iter().map(|j| Completion::new(j, vec![])).collect();
    let report = client.complete("q", &done).await.unwrap();
    assert_eq!(report.completed.len(), 2500);
    assert_eq!(client.counts("q").await.unwrap().completed, 10);
    let mut conn = server.connection().await;
    let hashes: Vec<String> = conn.keys("wasmq:{q}:job:*").await.unwrap();
    assert_eq!(hashes.len(), 10);
}

#[tokio::test]
async fn keep_zero_deletes_on_completion_and_max_age_deletes_old_completions() {
    let (server, client) = start().await;
    client
        .set_config(
            "none",
            &QueueConfig {
                completed_keep: Some(0),
                ..QueueConfig::default()
            },
        )
        .await
        .unwrap();
    let id = client
        .enqueue("none", &NewJob::new("h", vec![]))
        .await
        .unwrap()
        .id;
    let leased = fetch_one(&client, "none").await;
    assert_eq!(
        client
            .complete("none", &[Completion::new(&leased, vec![])])
            .await
            .unwrap()
            .completed,
        [id.as_str()]
    );
    assert!(client.get("none", &id).await.unwrap().is_none());
    assert_eq!(client.counts("none").await.unwrap().completed, 0);

    client
        .set_config(
            "aged",
            &QueueConfig {
                completed_keep: None,
                completed_max_age: Some(Duration::from_millis(100)),
                ..QueueConfig::default()
            },
        )
        .await
        .unwrap();
    client
        .enqueue_bulk(
            "aged",
            &[
                NewJob::new("h", vec![]).with_id("old"),
                NewJob::new("h", vec![]).with_id("new"),
            ],
        )
        .await
        .unwrap();
    let old = fetch_one(&client, "aged").await;
    client
        .complete("aged", &[Completion::new(&old, vec![])])
        .await
        .unwrap();
    let start = server.now_ms().await;
    eventually("the first completion to age", || async {
        (server.now_ms().await > start + 150).then_some(())
    })
    .await;
    let new = fetch_one(&client, "aged").await;
    client
        .complete("aged", &[Completion::new(&new, vec![])])
        .await
        .unwrap();
    let kept = client
        .list("aged", JobState::Completed, 0, 10)
        .await
        .unwrap();
    assert_eq!(
        kept.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        ["new"]
    );
}

#[tokio::test]
async fn a_paused_queue_leases_nothing_until_resumed() {
    let (_server, client) = start().await;
    client
        .enqueue("q", &NewJob::new("h", vec![]))
        .await
        .unwrap();
    assert!(client.pause("q").await.unwrap());
    assert!(
        !client.pause("q").await.unwrap(),
        "pausing twice is a no-op"
    );
    assert!(client.counts("q").await.unwrap().paused);
    // Enqueue still works while paused.
    client
        .enqueue("q", &NewJob::new("h", vec![]))
        .await
        .unwrap();
    assert!(client.fetch("q", 10, LEASE, HOST).await.unwrap().is_empty());
    assert!(client.resume("q").await.unwrap());
    assert_eq!(client.fetch("q", 10, LEASE, HOST).await.unwrap().len(), 2);
}

#[tokio::test]
async fn cancel_deletes_waiting_delayed_and_retry_jobs_but_not_running_ones() {
    let (_server, client) = start().await;
    client
        .enqueue_bulk(
            "q",
            &[
                NewJob::new("h", vec![]).with_id("running"),
                NewJob::new("h", vec![]).with_id("waiting"),
                NewJob::new("h", vec![])
                    .with_id("delayed")
                    .with_delay(Duration::from_secs(60)),
            ],
        )
        .await
        .unwrap();
    fetch_one(&client, "q").await;
    let ids: Vec<String> = ["waiting", "delayed", "running", "nope"]
        .map(String::from)
        .to_vec();
    let outcomes = client.cancel("q", &ids).await.unwrap();
    assert_eq!(
        outcomes,
        [
            ("waiting".to_string(), CancelOutcome::Cancelled),
            ("delayed".to_string(), CancelOutcome::Cancelled),
            (
                "running".to_string(),
                CancelOutcome::NotCancellable(JobState::Active)
            ),
            ("nope".to_string(), CancelOutcome::NotFound),
        ]
    );
    let counts = client.counts("q").await.unwrap();
    assert_eq!((counts.waiting, counts.delayed, counts.active), (0, 0, 1));
    assert!(client.get("q", "waiting").await.unwrap().is_none());
}

#[tokio::test]
async fn an_oversize_payload_is_refused_and_nothing_is_written() {
    let (server, client) = start().await;
    client
        .enqueue("q", &NewJob::new("h", vec![]))
        .await
        .unwrap();
    let before = server.snapshot().await;

    let big = NewJob::new("h", vec![0u8; 512 * 1024 + 1]).with_id("big");
    let err = client.enqueue("q", &big).await.unwrap_err();
    assert!(
        matches!(&err, QueueError::PayloadTooLarge { id, size, limit } if id == "big" && *size == 512 * 1024 + 1 && *limit == 512 * 1024),
        "{err:?}"
    );
    // One oversize job fails the whole bulk call: nothing of it is written.
    let err = client
        .enqueue_bulk("q", &[NewJob::new("h", vec![1]), big.clone()])
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::PayloadTooLarge { .. }), "{err:?}");
    assert_eq!(server.snapshot().await, before);

    // The limit is per queue.
    client
        .set_config(
            "small",
            &QueueConfig {
                max_payload_bytes: 10,
                ..QueueConfig::default()
            },
        )
        .await
        .unwrap();
    let err = client
        .enqueue("small", &NewJob::new("h", vec![0u8; 11]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, QueueError::PayloadTooLarge { limit: 10, .. }),
        "{err:?}"
    );
    assert!(
        client
            .enqueue("small", &NewJob::new("h", vec![0u8; 10]))
            .await
            .is_ok()
    );
    // The exact message a user sees.
    assert_eq!(
        client.enqueue("q", &big).await.unwrap_err().to_string(),
        "payload of job big is 524289 bytes, over the queue's limit of 524288 bytes"
    );
}

#[tokio::test]
async fn malformed_input_is_refused_with_a_clear_error_and_nothing_is_written() {
    let (server, client) = start().await;
    client
        .enqueue("q", &NewJob::new("h", vec![]))
        .await
        .unwrap();
    let before = server.snapshot().await;

    let table: Vec<(&str, NewJob, &str)> = vec![
        (
            "q",
            NewJob::new("", vec![]),
            "handler name must not be empty",
        ),
        (
            "q",
            NewJob::new("h", vec![]).with_max_attempts(0),
            "max attempts must be within 1..=1000",
        ),
        (
            "q",
            NewJob::new("h", vec![]).with_id("has space"),
            "printable ASCII",
        ),
        (
            "q",
            NewJob::new("h", vec![]).with_priority(5000),
            "priority",
        ),
        ("bad{queue}", NewJob::new("h", vec![]), "invalid queue name"),
        ("", NewJob::new("h", vec![]), "invalid queue name"),
    ];
    for (queue, job, message) in table {
        let err = client.enqueue(queue, &job).await.unwrap_err();
        assert!(
            matches!(
                err,
                QueueError::InvalidJob { .. } | QueueError::InvalidQueue(_)
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(message),
            "{err} should say {message:?}"
        );
    }
    assert!(matches!(
        client.fetch("q", 0, LEASE, HOST).await.unwrap_err(),
        QueueError::InvalidArgument(_)
    ));

    // A producer speaking the protocol directly gets the same checks from the script.
    let mut conn = server.connection().await;
    let raw_table: Vec<(Vec<&str>, &str)> = vec![
        (vec!["1", "j", "1", "payload", "x"], "handler must be"),
        (
            vec!["1", "j", "2", "handler", "h", "colour", "red"],
            "unknown field colour",
        ),
        (
            vec!["1", "j", "2", "handler", "h", "max_attempts", "0"],
            "max_attempts",
        ),
        (
            vec!["1", "j", "2", "handler", "h", "delay_ms", "-5"],
            "delay_ms",
        ),
        (vec!["2", "j", "1", "handler", "h"], "truncated"),
        (
            vec!["1", "j", "1", "handler", "h", "extra"],
            "more arguments",
        ),
        (vec!["0"], "number of jobs, 1 to 10000"),
        (vec!["10001"], "number of jobs, 1 to 10000"),
        (
            vec!["1", "j", "2", "handler", "h", "handler", "h2"],
            "field handler given twice",
        ),
        (
            vec![
                "1", "j", "3", "handler", "h", "priority", "1", "priority", "2",
            ],
            "field priority given twice",
        ),
        (
            vec!["1", "j", "65", "handler", "h"],
            "number of field/value pairs must be 0 to 64",
        ),
    ];
    for (args, message) in raw_table {
        let err = enqueue_raw(&mut conn, &args).await.unwrap_err();
        assert_eq!(err.code(), Some("WASMQ_INVALID"), "{args:?}: {err}");
        assert!(
            err.to_string().contains(message),
            "{args:?}: {err} should say {message:?}"
        );
    }
    assert_eq!(
        server.snapshot().await,
        before,
        "refused input must write nothing"
    );
}

/// enqueue.lua run as a producer with a plain Redis client runs it: queue `q`'s seven keys and
/// `args` as ARGV.
async fn enqueue_raw(
    conn: &mut wasmq::connection::RedisConnection,
    args: &[&str],
) -> redis::RedisResult<redis::Value> {
    let script = redis::Script::new(wasmq::queue::ENQUEUE_LUA);
    let mut invocation = script.prepare_invoke();
    for key in [
        "job:", "config", "waiting", "delayed", "seq", "events", "wake",
    ] {
        invocation.key(format!("wasmq:{{q}}:{key}"));
    }
    for arg in args {
        invocation.arg(*arg);
    }
    invocation.invoke_async(conn).await
}

// enqueue.lua stores numbers as the producer wrote them and every host reads them back with
// Rust's parsers; Lua's tonumber is laxer (spaces, hex, nan, a NUL and what follows it, `-0`
// for a count), and a job the script accepted in such a form could never be fetched.
#[tokio::test]
async fn enqueue_accepts_only_numbers_the_host_can_read_back() {
    let (server, client) = start().await;
    let mut conn = server.connection().await;
    let host_reads = |text: &str| text.parse::<f64>().is_ok_and(|j| (0.0..=1.0).contains(&j));

    let before = server.snapshot().await;
    let refused_jitter = [
        " 0.5",
        "0.5 ",
        "\t0.5",
        "0.5\n",
        "0x0.8",
        "0X1",
        "0x.8p1",
        "nan",
        "NaN",
        "-nan",
        "inf",
        "-inf",
        "infinity",
        "0.5\0junk",
        "",
        ".",
        "+",
        "e-1",
        "1e",
        "1e+",
        "1.5.1",
        "1,5",
        "-0.1",
        "1.5",
        "2e-0",
        "0.5e1",
    ];
    for text in refused_jitter {
        let args = ["1", "j", "2", "handler", "h", "backoff_jitter", text];
        let err = enqueue_raw(&mut conn, &args).await.unwrap_err();
        assert_eq!(err.code(), Some("WASMQ_INVALID"), "{text:?}: {err}");
        assert!(
            err.to_string()
                .contains("backoff_jitter must be a decimal number in 0..1"),
            "{text:?}: {err}"
        );
        assert!(!host_reads(text), "{text:?} is a jitter the host reads");
    }
    // `-0` is no count of attempts or milliseconds to Rust's unsigned parse.
    assert!("-0".parse::<u64>().is_err() && "-0".parse::<u32>().is_err());
    let unsigned = [
        "delay_ms",
        "run_at_ms",
        "timeout_ms",
        "backoff_ms",
        "backoff_cap_ms",
        "max_attempts",
    ];
    let mut refused_integers = Vec::new();
    for field in unsigned.iter().chain(&["priority"]) {
        for text in [
            " 5", "5 ", "5\n", "0x10", "1e3", "5.0", "+5", "5\0", "", "-",
        ] {
            refused_integers.push((*field, text));
        }
    }
    for field in unsigned {
        refused_integers.push((field, "-0"));
    }
    for (field, text) in refused_integers {
        let args = ["1", "j", "2", "handler", "h", field, text];
        let err = enqueue_raw(&mut conn, &args).await.unwrap_err();
        assert_eq!(err.code(), Some("WASMQ_INVALID"), "{field} {text:?}: {err}");
        assert!(
            err.to_string().contains(&format!("job j: {field} must be")),
            "{field} {text:?}: {err}"
        );
    }
    assert_eq!(
        server.snapshot().await,
        before,
        "refused input must write nothing"
    );

    // Every form the script takes decodes, to the value Rust's parse gives.
    let accepted_jitter = [
        "0.5",
        "1",
        "0",
        "-0",
        "-0.0",
        ".5",
        "1.",
        "+0.25",
        "1e-1",
        "2.5E-1",
        "10e-1",
        "0.0000001",
        "1e-400",
        "1.00000000000000000001",
    ];
    for (n, &text) in accepted_jitter.iter().enumerate() {
        let id = format!("jitter-{n}");
        let args = ["1", &id, "2", "handler", "h", "backoff_jitter", text];
        enqueue_raw(&mut conn, &args)
            .await
            .unwrap_or_else(|err| panic!("{text:?} refused: {err}"));
        let job = client.get("q", &id).await.unwrap().unwrap();
        assert_eq!(
            job.backoff.jitter(),
            text.parse::<f64>().unwrap(),
            "{text:?}"
        );
        assert!(host_reads(text), "{text:?}");
    }
    // Integers in the forms both read alike: leading zeros, `-0` where a sign is allowed.
    let args = [
        "1",
        "integers",
        "7",
        "handler",
        "h",
        "priority",
        "-007",
        "max_attempts",
        "05",
        "timeout_ms",
        "0030000",
        "backoff_ms",
        "0",
        "backoff_cap_ms",
        "00",
        "run_at_ms",
        "0",
    ];
    enqueue_raw(&mut conn, &args).await.unwrap();
    let job = client.get("q", "integers").await.unwrap().unwrap();
    assert_eq!((job.priority, job.max_attempts), (-7, 5));
    assert_eq!(job.timeout, Some(Duration::from_secs(30)));
    assert_eq!(
        job.backoff,
        Backoff::Exponential {
            base: Duration::ZERO,
            cap: Duration::ZERO,
            jitter: 0.2
        }
    );
    assert_eq!(
        (job.state, job.run_at_ms),
        (JobState::Waiting, Some(job.created_at_ms)),
        "a run_at_ms in the past means now"
    );
    let args = [
        "1", "zeros", "3", "handler", "h", "priority", "-0", "delay_ms", "000",
    ];
    enqueue_raw(&mut conn, &args).await.unwrap();
    let job = client.get("q", "zeros").await.unwrap().unwrap();
    assert_eq!((job.priority, job.state), (0, JobState::Waiting));

    // And a host leases every one of them.
    let fetched = client.fetch("q", 100, LEASE, HOST).await.unwrap();
    assert_eq!(fetched.len(), accepted_jitter.len() + 2);
}

#[tokio::test]
async fn a_malformed_job_hash_in_redis_is_an_error_not_a_panic() {
    let (server, client) = start().await;
    let mut conn = server.connection().await;
    let () = conn
        .hset_multiple(
            "wasmq:{q}:job:weird",
            &[("state", "sleeping"), ("handler", "h")],
        )
        .await
        .unwrap();
    let err = client.get("q", "weird").await.unwrap_err();
    assert!(
        matches!(err, QueueError::MalformedJob { ref id, .. } if id == "weird"),
        "{err:?}"
    );

    // A waiting id with no hash behind it is dropped by fetch, which reports it.
    let () = conn.zadd("wasmq:{q}:waiting", "ghost", 1).await.unwrap();
    let fetched = client.fetch_batch("q", 10, LEASE, HOST).await.unwrap();
    assert!(fetched.jobs.is_empty());
    assert_eq!(fetched.dropped, 1);
    // A dead-letter entry without a hash makes listing fail with an error naming it.
    let () = conn.zadd("wasmq:{q}:dead", "ghost", 1).await.unwrap();
    let err = client.dead_letters("q", 0, 10).await.unwrap_err();
    assert!(
        matches!(err, QueueError::MalformedJob { ref id, .. } if id == "ghost"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_stale_lease_token_cannot_complete_fail_extend_or_release_the_job() {
    let (_server, client) = start().await;
    client
        .enqueue("q", &NewJob::new("h", vec![]).with_backoff(no_retry_wait()))
        .await
        .unwrap();
    let first = client
        .fetch("q", 1, Duration::from_millis(50), "host-old")
        .await
        .unwrap()
        .remove(0);
    // The old holder stalls; its lease expires and is recovered; another host takes the job.
    recover_expired_leases(&client, "q", &[], 1).await;
    let second = client
        .fetch("q", 1, LEASE, "host-new")
        .await
        .unwrap()
        .remove(0);
    assert_eq!(second.id, first.id);
    assert_eq!(second.attempt, 2, "the lost lease counted as an attempt");

    let stale = client
        .complete("q", &[Completion::new(&first, vec![])])
        .await
        .unwrap();
    assert!(stale.completed.is_empty());
    assert_eq!(
        stale.rejected,
        [(first.id.clone(), LeaseRejection::TokenMismatch)]
    );
    let failed = client
        .fail("q", &[Failure::new(&first, "trap", "late")])
        .await
        .unwrap();
    assert_eq!(failed.rejected.len(), 1);
    let extended = client.extend("q", &[first.lease()], LEASE).await.unwrap();
    assert_eq!(extended.rejected.len(), 1);
    let released = client.release("q", &[first.lease()]).await.unwrap();
    assert!(released.released.is_empty());
    assert_eq!(released.rejected.len(), 1);

    let job = client.get("q", &first.id).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.host.as_deref()),
        (JobState::Active, Some("host-new"))
    );
    // The current holder completes; afterwards even its own token is rejected as not active.
    let done = client
        .complete("q", &[Completion::new(&second, vec![])])
        .await
        .unwrap();
    assert_eq!(done.completed, [second.id.as_str()]);
    let twice = client
        .complete("q", &[Completion::new(&second, vec![])])
        .await
        .unwrap();
    assert_eq!(
        twice.rejected,
        [(
            second.id.clone(),
            LeaseRejection::NotActive("completed".into())
        )]
    );
}

#[tokio::test]
async fn extend_moves_the_lease_expiry_so_recovery_leaves_the_job_alone() {
    let (server, client) = start().await;
    client
        .enqueue("q", &NewJob::new("h", vec![]))
        .await
        .unwrap();
    let leased = client
        .fetch("q", 1, Duration::from_millis(200), HOST)
        .await
        .unwrap()
        .remove(0);
    let before = server.now_ms().await;
    let extended = client
        .extend("q", &[leased.lease()], Duration::from_secs(30))
        .await
        .unwrap();
    assert!(extended.rejected.is_empty());
    assert!(extended.lease_expires_at_ms >= before + 30_000);
    let start = server.now_ms().await;
    eventually("the original lease to pass", || async {
        (server.now_ms().await > start + 250).then_some(())
    })
    .await;
    assert!(
        client
            .recover_expired("q", 10, &[])
            .await
            .unwrap()
            .outcomes
            .is_empty()
    );
    let job = client.get("q", &leased.id).await.unwrap().unwrap();
    assert_eq!(job.lease_expires_at_ms, Some(extended.lease_expires_at_ms));
}

#[tokio::test]
async fn release_returns_jobs_to_their_place_in_line_without_counting_the_attempt() {
    let (_server, client) = start().await;
    client
        .enqueue_bulk(
            "q",
            &[
                NewJob::new("h", vec![]).with_id("first"),
                NewJob::new("h", vec![]).with_id("second"),
            ],
        )
        .await
        .unwrap();
    let leased = fetch_one(&client, "q").await;
    assert_eq!((leased.id.as_str(), leased.attempt), ("first", 1));
    let released = client.release("q", &[leased.lease()]).await.unwrap();
    assert_eq!(released.released, ["first"]);
    let job = client.get("q", "first").await.unwrap().unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Waiting, 0));
    assert!(job.history.is_empty(), "a release is not an attempt");
    let again = fetch_one(&client, "q").await;
    assert_eq!((again.id.as_str(), again.attempt), ("first", 1));
}

#[tokio::test]
async fn a_result_over_the_limit_dead_letters_its_job() {
    let (_server, client) = start().await;
    client
        .set_config(
            "q",
            &QueueConfig {
                max_result_bytes: 4,
                ..QueueConfig::default()
            },
        )
        .await
        .unwrap();
    client
        .enqueue_bulk(
            "q",
            &[
                NewJob::new("h", vec![]).with_id("ok"),
                NewJob::new("h", vec![]).with_id("big"),
            ],
        )
        .await
        .unwrap();
    let leased = client.fetch("q", 2, LEASE, HOST).await.unwrap();
    let report = client
        .complete(
            "q",
            &[
                Completion::new(&leased[0], b"1234".to_vec()),
                Completion::new(&leased[1], b"12345".to_vec()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(report.completed, ["ok"]);
    assert_eq!(report.result_too_large, ["big"]);
    let big = client.get("q", "big").await.unwrap().unwrap();
    assert_eq!(
        (big.state, big.last_outcome.as_deref()),
        (JobState::Dead, Some("result_too_large"))
    );
    assert_eq!(client.counts("q").await.unwrap().active, 0);
}

#[tokio::test]
async fn the_events_stream_records_each_transition_with_job_ids_and_attempts() {
    let (_server, client) = start().await;
    client
        .enqueue_bulk(
            "q",
            &[
                NewJob::new("h", vec![]).with_id("a"),
                NewJob::new("h", vec![])
                    .with_id("b")
                    .with_max_attempts(2)
                    .with_backoff(no_retry_wait()),
            ],
        )
        .await
        .unwrap();
    let leased = client.fetch("q", 2, LEASE, HOST).await.unwrap();
    client
        .complete("q", &[Completion::new(&leased[0], vec![])])
        .await
        .unwrap();
    client
        .fail("q", &[Failure::new(&leased[1], "trap", "x")])
        .await
        .unwrap();
    let b = fetch_one(&client, "q").await;
    client
        .fail("q", &[Failure::new(&b, "trap", "x")])
        .await
        .unwrap();
    client.replay("q", &["b".to_string()]).await.unwrap();
    client.cancel("q", &["b".to_string()]).await.unwrap();

    let events = client.events("q", None, 100).await.unwrap();
    let seen: Vec<(&str, Vec<(String, u32)>)> = events
        .iter()
        .map(|e| (e.event.as_str(), e.jobs.clone()))
        .collect();
    let pair = |id: &str, n: u32| (id.to_string(), n);
    assert_eq!(
        seen,
        [
            ("enqueued", vec![pair("a", 0), pair("b", 0)]),
            ("active", vec![pair("a", 1), pair("b", 1)]),
            ("completed", vec![pair("a", 1)]),
            ("retried", vec![pair("b", 1)]),
            ("active", vec![pair("b", 2)]),
            ("dead", vec![pair("b", 2)]),
            ("replayed", vec![pair("b", 0)]),
            ("cancelled", vec![pair("b", 0)]),
        ]
    );
    // Reading on from an entry returns only what came after it.
    let after = client
        .events("q", Some(&events[5].stream_id), 100)
        .await
        .unwrap();
    assert_eq!(after.len(), 2);
}

#[tokio::test]
async fn an_events_entry_lists_at_most_100_jobs_so_maxlen_bounds_the_streams_memory() {
    let (_server, client) = start().await;
    let jobs: Vec<NewJob> = (0..250)
        .map(|n| NewJob::new("h", vec![]).with_id(format!("j{n:03}")))
        .collect();
    client.enqueue_bulk("q", &jobs).await.unwrap();
    let leased = client.fetch("q", 250, LEASE, HOST).await.unwrap();
    let done: Vec<Completion> = leased.iter().map(|j| Completion::new(j, vec![])).collect();
    client.complete("q", &done).await.unwrap();

    let events = client.events("q", None, 100).await.unwrap();
    let mut seen: Vec<(&str, usize)> = Vec::new();
    let mut listed: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for e in &events {
        seen.push((e.event.as_str(), e.jobs.len()));
        listed
            .entry(e.event.as_str())
            .or_default()
            .extend(e.jobs.iter().map(|(id, _)| id.clone()));
    }
    assert_eq!(
        seen,
        [
            ("enqueued", 100),
            ("enqueued", 100),
            ("enqueued", 50),
            ("active", 100),
            ("active", 100),
            ("active", 50),
            ("completed", 100),
            ("completed", 100),
            ("completed", 50),
        ]
    );
    // Every job once per transition, in order.
    let ids: Vec<String> = (0..250).map(|n| format!("j{n:03}")).collect();
    for (event, jobs) in listed {
        assert_eq!(jobs, ids, "{event}");
    }
}

#[tokio::test]
async fn an_idle_worker_waiting_on_the_queue_wakes_when_a_job_is_enqueued() {
    let (_server, client) = start().await;
    let mut waiter = client.waiter();
    assert!(
        !waiter.wait("q", Duration::from_millis(50)).await.unwrap(),
        "no work, no wake-up"
    );
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let woke = waiter.wait("q", Duration::from_secs(10)).await.unwrap();
        (woke, started.elapsed())
    });
    // Give the waiter a moment to block, then enqueue; the wake-up must not depend on it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    client
        .enqueue("q", &NewJob::new("h", vec![]))
        .await
        .unwrap();
    let (woke, waited) = waiting.await.unwrap();
    assert!(woke);
    assert!(waited < Duration::from_secs(5), "woke after {waited:?}");
}

#[tokio::test]
async fn counts_and_lists_page_through_each_state() {
    let (_server, client) = start().await;
    let jobs: Vec<NewJob> = (0..7)
        .map(|n| NewJob::new("h", vec![]).with_id(format!("w{n}")))
        .collect();
    client.enqueue_bulk("q", &jobs).await.unwrap();
    client
        .enqueue(
            "q",
            &NewJob::new("h", vec![])
                .with_id("later")
                .with_delay(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    fetch_one(&client, "q").await;
    let counts = client.counts("q").await.unwrap();
    assert_eq!((counts.waiting, counts.delayed, counts.active), (6, 1, 1));
    let page1 = client.list("q", JobState::Waiting, 0, 4).await.unwrap();
    let page2 = client.list("q", JobState::Waiting, 4, 4).await.unwrap();
    let listed: Vec<String> = page1.iter().chain(&page2).map(|j| j.id.clone()).collect();
    assert_eq!(listed, ["w1", "w2", "w3", "w4", "w5", "w6"]);
    let active = client.list("q", JobState::Active, 0, 10).await.unwrap();
    assert_eq!(active[0].id, "w0");
    assert!(active[0].lease_expires_at_ms.is_some());
    assert_eq!(
        client.list("q", JobState::Delayed, 0, 10).await.unwrap()[0].id,
        "later"
    );
}

#[tokio::test]
async fn scripts_are_reloaded_when_redis_forgets_them() {
    let (server, client) = start().await;
    client
        .enqueue("q", &NewJob::new("h", vec![]))
        .await
        .unwrap();
    assert_eq!(client.fetch("q", 1, LEASE, HOST).await.unwrap().len(), 1);
    // As after a restart without persistence: no scripts, no function library.
    let mut conn = server.connection().await;
    for flush in ["SCRIPT", "FUNCTION"] {
        let () = redis::cmd(flush)
            .arg("FLUSH")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    client
        .enqueue("q", &NewJob::new("h", vec![]))
        .await
        .unwrap();
    assert_eq!(client.fetch("q", 10, LEASE, HOST).await.unwrap().len(), 1);
    let libraries: redis::Value = redis::cmd("FUNCTION")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        format!("{libraries:?}").contains("wasmq_"),
        "the library is loaded again: {libraries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_fetchers_lease_each_of_5000_jobs_exactly_once() {
    let server = RedisServer::start();
    let client = server.client().await;
    keep_everything(&client, "q").await;
    let jobs: Vec<NewJob> = (0..5000)
        .map(|n| NewJob::new("h", n.to_string().into_bytes()))
        .collect();
    for chunk in jobs.chunks(1000) {
        client.enqueue_bulk("q", chunk).await.unwrap();
    }
    let mut fetchers = Vec::new();
    for f in 0..8 {
        // Each fetcher has its own connection, like separate hosts.
        let client = server.client().await;
        fetchers.push(tokio::spawn(async move {
            let host = format!("host-{f}");
            let mut seen = Vec::new();
            loop {
                let batch = client.fetch("q", 32, LEASE, &host).await.unwrap();
                if batch.is_empty() {
                    return seen;
                }
                let done: Vec<Completion> =
                    batch.iter().map(|j| Completion::new(j, vec![])).collect();
                let report = client.complete("q", &done).await.unwrap();
                assert!(
                    report.rejected.is_empty(),
                    "lost a lease: {:?}",
                    report.rejected
                );
                seen.extend(batch.into_iter().map(|job| (job.id, job.attempt)));
            }
        }));
    }
    let mut all = Vec::new();
    for fetcher in fetchers {
        all.extend(fetcher.await.unwrap());
    }
    assert_eq!(all.len(), 5000, "every job fetched once");
    let unique: HashSet<&String> = all.iter().map(|(id, _)| id).collect();
    assert_eq!(unique.len(), 5000, "no job fetched twice");
    assert!(all.iter().all(|(_, attempt)| *attempt == 1));
    let counts = client.counts("q").await.unwrap();
    assert_eq!(
        (counts.waiting, counts.active, counts.completed),
        (0, 0, 5000)
    );
}

#[tokio::test]
async fn a_fetcher_that_dies_before_acking_loses_nothing() {
    let server = RedisServer::start();
    let survivor = server.client().await;
    let jobs: Vec<NewJob> = (0..10)
        .map(|n| {
            NewJob::new("h", vec![])
                .with_id(format!("j{n}"))
                .with_backoff(no_retry_wait())
        })
        .collect();
    survivor.enqueue_bulk("q", &jobs).await.unwrap();
    let expiry;
    {
        let doomed = server.client().await;
        let leased = doomed
            .fetch("q", 10, Duration::from_millis(300), "host-doomed")
            .await
            .unwrap();
        assert_eq!(leased.len(), 10);
        expiry = leased[0].lease_expires_at_ms;
        // The fetcher dies here: its connection goes away with it, nothing is acked.
    }
    // Until the lease runs out, the jobs stay leased to the dead host.
    let early = survivor.recover_expired("q", 100, &[]).await.unwrap();
    if server.now_ms().await < expiry {
        assert!(
            early.outcomes.is_empty(),
            "recovered before the lease expired"
        );
    }
    let mut recovered: HashSet<String> = early.outcomes.into_iter().map(|(id, _)| id).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while recovered.len() < 10 {
        assert!(
            Instant::now() < deadline,
            "only {} leases recovered",
            recovered.len()
        );
        let report = survivor.recover_expired("q", 100, &[]).await.unwrap();
        recovered.extend(report.outcomes.into_iter().map(|(id, _)| id));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let again = survivor.fetch("q", 100, LEASE, HOST).await.unwrap();
    assert_eq!(again.len(), 10, "every job came back");
    assert!(
        again.iter().all(|job| job.attempt == 2),
        "the lost lease counted as an attempt"
    );
    let job = survivor.get("q", "j0").await.unwrap().unwrap();
    assert_eq!(job.history.len(), 1);
    assert_eq!(
        (
            job.history[0].outcome.as_str(),
            job.history[0].error.as_str(),
            job.history[0].host.as_str()
        ),
        ("lease_expired", "lease expired", "host-doomed")
    );
}

#[tokio::test]
async fn a_lost_lease_on_the_last_attempt_dead_letters_the_job() {
    let (_server, client) = start().await;
    client
        .enqueue("q", &NewJob::new("h", vec![]).with_max_attempts(1))
        .await
        .unwrap();
    client
        .fetch("q", 1, Duration::from_millis(20), HOST)
        .await
        .unwrap();
    let report = recover_expired_leases(&client, "q", &[], 1).await;
    assert_eq!(report.outcomes[0].1, FailOutcome::Dead);
    assert_eq!(client.counts("q").await.unwrap().dead, 1);
}

#[tokio::test]
async fn a_producer_with_a_plain_redis_client_can_enqueue_by_the_documented_protocol() {
    // The protocol page quotes enqueue.lua verbatim, so a producer can EVAL it from there.
    let doc_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    assert!(
        doc.contains(wasmq::queue::ENQUEUE_LUA.trim_end()),
        "docs/protocol.md must quote scripts/enqueue.lua verbatim"
    );

    let (server, client) = start().await;
    let mut conn = server.connection().await;
    // What the Python/Node example does: EVAL with the keys and field/value pairs.
    let reply: redis::Value = redis::cmd("EVAL")
        .arg(wasmq::queue::ENQUEUE_LUA)
        .arg(7)
        .arg(&[
            "wasmq:{emails}:job:",
            "wasmq:{emails}:config",
            "wasmq:{emails}:waiting",
            "wasmq:{emails}:delayed",
            "wasmq:{emails}:seq",
            "wasmq:{emails}:events",
            "wasmq:{emails}:wake",
        ])
        .arg(1)
        .arg("welcome-42")
        .arg(4)
        .arg(&[
            "handler",
            "send-email",
            "payload",
            "{\"to\":\"ada@example.com\"}",
            "priority",
            "5",
            "max_attempts",
            "5",
        ])
        .query_async(&mut conn)
        .await
        .unwrap();
    let expected = redis::Value::Array(vec![redis::Value::Array(vec![
        redis::Value::BulkString(b"welcome-42".to_vec()),
        redis::Value::BulkString(b"created".to_vec()),
        redis::Value::BulkString(b"waiting".to_vec()),
    ])]);
    assert_eq!(reply, expected);
    let leased = fetch_one(&client, "emails").await;
    assert_eq!(
        (leased.id.as_str(), leased.handler.as_str()),
        ("welcome-42", "send-email")
    );
    assert_eq!((leased.priority, leased.max_attempts), (5, 5));
    assert_eq!(leased.payload, b"{\"to\":\"ada@example.com\"}");
}

#[tokio::test]
async fn with_aof_a_job_survives_redis_being_killed_and_the_client_reconnects() {
    let mut server = RedisServer::start_with_aof();
    let client = server.client().await;
    let id = client
        .enqueue("q", &NewJob::new("h", b"durable".to_vec()))
        .await
        .unwrap()
        .id;
    server.kill();
    // An outage longer than the client's reconnect retries: every call fails meanwhile.
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(1) {
        assert!(client.counts("q").await.is_err(), "Redis is down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.restart();
    // The shared connection reconnects by itself; calls fail until it has.
    let job = eventually("the client to reconnect", || async {
        client.get("q", &id).await.ok().flatten()
    })
    .await;
    assert_eq!(job.payload, b"durable");
    assert_eq!(fetch_one(&client, "q").await.id, id);
}

#[tokio::test]
async fn batch_sizes_are_bounded_so_no_call_blocks_redis_for_long() {
    let (_server, client) = start().await;
    for result in [
        client
            .fetch("q", wasmq::queue::MAX_BULK + 1, LEASE, HOST)
            .await
            .map(|_| ()),
        client.recover_expired("q", 0, &[]).await.map(|_| ()),
        client
            .enqueue_bulk(
                "q",
                &vec![NewJob::new("h", vec![]); wasmq::queue::MAX_BULK + 1],
            )
            .await
            .map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(QueueError::InvalidArgument(_))),
            "{result:?}"
        );
    }
}

#[tokio::test]
async fn promote_moves_due_jobs_to_waiting_and_reports_the_next_due_time() {
    let (server, client) = start().await;
    client
        .enqueue_bulk(
            "q",
            &[
                NewJob::new("h", vec![])
                    .with_id("soon")
                    .with_delay(Duration::from_millis(50)),
                NewJob::new("h", vec![])
                    .with_id("later")
                    .with_delay(Duration::from_secs(60)),
            ],
        )
        .await
        .unwrap();
    let later_due = client
        .get("q", "later")
        .await
        .unwrap()
        .unwrap()
        .run_at_ms
        .unwrap();
    let moved = eventually("the short delay to pass", || async {
        let (moved, next_due) = client.promote("q", 100).await.unwrap();
        (moved == 1).then_some(next_due)
    })
    .await;
    assert_eq!(moved, Some(later_due));
    let job = client.get("q", "soon").await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Waiting);
    assert!(server.now_ms().await >= job.run_at_ms.unwrap());
    let counts = client.counts("q").await.unwrap();
    assert_eq!((counts.waiting, counts.delayed), (1, 1));
}

#[tokio::test]
async fn a_full_batch_passes_the_wake_up_on_to_the_next_idle_worker() {
    let (_server, client) = start().await;
    let jobs: Vec<NewJob> = (0..5).map(|_| NewJob::new("h", vec![])).collect();
    client.enqueue_bulk("q", &jobs).await.unwrap();
    let mut first = client.waiter();
    let mut second = client.waiter();
    assert!(first.wait("q", Duration::from_secs(5)).await.unwrap());
    // The enqueue left one token; the first worker took it. Its full batch leaves work behind,
    // so fetch hands a token to the next worker.
    assert_eq!(client.fetch("q", 2, LEASE, HOST).await.unwrap().len(), 2);
    assert!(second.wait("q", Duration::from_secs(5)).await.unwrap());
    // A batch that empties the queue wakes nobody.
    assert_eq!(client.fetch("q", 10, LEASE, HOST).await.unwrap().len(), 3);
    assert!(!second.wait("q", Duration::from_millis(50)).await.unwrap());
}

// ----- complete and fetch in one call ------------------------------------------------------

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

// ----- rate limits and groups -------------------------------------------------------------

fn grouped(group: &str, n: usize) -> Vec<NewJob> {
    (0..n)
        .map(|i| NewJob::new("h", i.to_string().into_bytes()).with_group(group))
        .collect()
}

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
    assert_eq!(client.counts("q").await.unwrap().dead, 1);
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

#[tokio::test]
async fn a_handlers_retry_policy_covers_what_the_job_left_out_and_attempts_record_the_version() {
    let (_server, client) = start().await;
    let policy = RetryPolicy {
        max_attempts: Some(2),
        backoff: Some(Backoff::fixed(Duration::ZERO)),
    };
    // Three producers: no policy, their own attempts, their own everything.
    let bare = client
        .enqueue("q", &NewJob::new("h", vec![]))
        .await
        .unwrap();
    let attempts = client
        .enqueue("q", &NewJob::new("h", vec![]).with_max_attempts(3))
        .await
        .unwrap();
    let own = client
        .enqueue(
            "q",
            &NewJob::new("h", vec![])
                .with_max_attempts(5)
                .with_backoff(Backoff::fixed(Duration::from_secs(600))),
        )
        .await
        .unwrap();
    let stored = client.get("q", &bare.id).await.unwrap().unwrap();
    assert_eq!(stored.own_policy, OwnPolicy::default());
    assert_eq!(
        stored.max_attempts, 3,
        "the queue default until a handler applies"
    );
    let stored = client.get("q", &attempts.id).await.unwrap().unwrap();
    assert!(stored.own_policy.max_attempts && !stored.own_policy.backoff);

    // Each leased job tells its host what it set, so the guest can be told its real attempts.
    let leased = client.fetch("q", 3, LEASE, HOST).await.unwrap();
    let by_id = |id: &str| leased.iter().find(|j| j.id == id).unwrap().clone();
    assert_eq!(policy.max_attempts_for(by_id(&bare.id).own_policy, 3), 2);
    assert_eq!(
        policy.max_attempts_for(by_id(&attempts.id).own_policy, 3),
        3
    );
    assert_eq!(policy.max_attempts_for(by_id(&own.id).own_policy, 5), 5);

    let fail = |job: &LeasedJob| {
        Failure::new(job, "retry", "again").with_handler("7:0123456789ab", policy)
    };
    let report = client
        .fail("q", &leased.iter().map(fail).collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);

    // The bare job took the handler's attempts and backoff; it is waiting again at once.
    let job = client.get("q", &bare.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Waiting);
    assert_eq!(job.max_attempts, 2);
    assert_eq!(job.backoff, Backoff::fixed(Duration::ZERO));
    assert_eq!(job.history[0].version.as_deref(), Some("7:0123456789ab"));
    // The job with its own attempts kept them and took the handler's backoff.
    let job = client.get("q", &attempts.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Waiting);
    assert_eq!(job.max_attempts, 3);
    assert_eq!(job.backoff, Backoff::fixed(Duration::ZERO));
    // The job with a policy of its own kept all of it: a 10-minute wait.
    let job = client.get("q", &own.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Retry);
    assert_eq!(job.max_attempts, 5);
    assert_eq!(job.backoff, Backoff::fixed(Duration::from_secs(600)));

    // Second attempts: the bare job is out of the handler's two attempts, the other is not.
    // Its lease expires instead of failing: recovery applies the same policy.
    let leased = client
        .fetch("q", 2, Duration::from_millis(20), HOST)
        .await
        .unwrap();
    assert_eq!(leased.len(), 2);
    let policies = [("h".to_string(), policy)];
    let report = recover_expired_leases(&client, "q", &policies, 2).await;
    assert_eq!(
        report.outcomes.len(),
        2,
        "both leases recovered in one call"
    );
    let job = client.get("q", &bare.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.history.len(), 2);
    assert_eq!(job.history[1].outcome, "lease_expired");
    assert_eq!(
        job.history[1].version, None,
        "nobody knows what a lost lease ran"
    );
    let job = client.get("q", &attempts.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Waiting);

    // A success records its version too.
    let last = fetch_one(&client, "q").await;
    assert_eq!(last.id, attempts.id);
    client
        .complete(
            "q",
            &[Completion::new(&last, b"done".to_vec()).with_version("local:abcdefabcdef")],
        )
        .await
        .unwrap();
    let job = client.get("q", &attempts.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Completed);
    let versions: Vec<_> = job.history.iter().map(|a| a.version.as_deref()).collect();
    assert_eq!(
        versions,
        [Some("7:0123456789ab"), None, Some("local:abcdefabcdef")]
    );
}

/// The nine keys of queue `queue` as enqueue.lua takes them.
fn enqueue_keys(queue: &str) -> Vec<String> {
    [
        "job:", "config", "waiting", "delayed", "seq", "events", "wake", "g:", "groups",
    ]
    .iter()
    .map(|k| format!("wasmq:{{{queue}}}:{k}"))
    .collect()
}

/// EVAL of a standalone script with `keys` and `args`, as a producer in any language sends it.
async fn eval(
    server: &RedisServer,
    script: &str,
    keys: &[String],
    args: &[&str],
) -> redis::RedisResult<redis::Value> {
    let mut conn = server.connection().await;
    redis::cmd("EVAL")
        .arg(script)
        .arg(keys.len())
        .arg(keys)
        .arg(args)
        .query_async(&mut conn)
        .await
}

#[tokio::test]
async fn enqueue_refuses_keys_that_are_not_the_queues_own_in_order() {
    let (server, _client) = start().await;
    let good = enqueue_keys("q");
    let mut swapped = good.clone();
    swapped.swap(2, 3);
    let mut other_queue = good.clone();
    other_queue[4] = "wasmq:{other}:seq".into();
    let no_tag: Vec<String> = good.iter().map(|k| k.replace("{q}", "q")).collect();
    // (keys, what the script says, whether the keys span hash slots: a Redis Cluster refuses
    // those itself, CROSSSLOT, before the script runs, and so writes nothing either)
    let table: Vec<(Vec<String>, &str, bool)> = vec![
        (swapped, "KEYS[3] must be wasmq:{q}:waiting", false),
        (other_queue, "KEYS[5] must be wasmq:{q}:seq", true),
        (no_tag, "KEYS[1] must be wasmq:{<queue>}:job:", true),
        (good[..8].to_vec(), "give the 9 keys of the queue", false),
        (good[..1].to_vec(), "give the 9 keys of the queue", false),
    ];
    let before = server.snapshot().await;
    for (keys, message, spans_slots) in table {
        let err = eval(
            &server,
            wasmq::queue::ENQUEUE_LUA,
            &keys,
            &["1", "j", "1", "handler", "h"],
        )
        .await
        .unwrap_err();
        if spans_slots && server.is_cluster() {
            assert_eq!(err.code(), Some("CROSSSLOT"), "{keys:?}: {err}");
            continue;
        }
        assert_eq!(err.code(), Some("WASMQ_INVALID"), "{keys:?}: {err}");
        assert!(
            err.to_string().contains(message),
            "{err} should say {message:?}"
        );
    }
    assert_eq!(
        server.snapshot().await,
        before,
        "refused keys must write nothing"
    );
    // The same call with the right keys enqueues.
    eval(
        &server,
        wasmq::queue::ENQUEUE_LUA,
        &good,
        &["1", "j", "1", "handler", "h"],
    )
    .await
    .unwrap();
}

// Redis keeps a script's writes when a later command fails: a key of the wrong type met
// half-way would have left the jobs already written in no set. enqueue.lua checks every key it
// writes before its first write and answers WASMQ_WRONGTYPE, so "nothing written" holds for
// every error it returns.
#[tokio::test]
async fn a_key_of_the_wrong_type_refuses_the_enqueue_before_anything_is_written() {
    let (server, _client) = start().await;
    let mut conn = server.connection().await;
    let table: [(&str, &str); 7] = [
        ("config", "string"),
        ("waiting", "string"),
        ("delayed", "list"),
        ("seq", "hash"),
        ("seq", "not a number"),
        ("groups", "string"),
        ("g:t1:waiting", "hash"),
    ];
    for (n, (key, kind)) in table.iter().enumerate() {
        let queue = format!("q{n}");
        let full = format!("wasmq:{{{queue}}}:{key}");
        let () = match *kind {
            "list" => conn.rpush(&full, "x").await.unwrap(),
            "hash" => conn.hset(&full, "x", "y").await.unwrap(),
            "not a number" => conn.set(&full, "abc").await.unwrap(),
            _ => conn.set(&full, "x").await.unwrap(),
        };
        let before = server.snapshot().await;
        // A plain job, a delayed one and a grouped one: every set enqueue writes.
        let args = [
            "3", "a", "1", "handler", "h", "b", "2", "handler", "h", "delay_ms", "60000", "c", "2",
            "handler", "h", "group", "t1",
        ];
        let err = eval(
            &server,
            wasmq::queue::ENQUEUE_LUA,
            &enqueue_keys(&queue),
            &args,
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Some("WASMQ_WRONGTYPE"), "{key} {kind}: {err}");
        assert!(err.to_string().contains(&full), "{err} should name {full}");
        assert_eq!(
            server.snapshot().await,
            before,
            "{key} {kind}: nothing written"
        );
    }
    // A job key of another type under an id being enqueued.
    let () = conn.set("wasmq:{qj}:job:b", "x").await.unwrap();
    let before = server.snapshot().await;
    let args = ["2", "a", "1", "handler", "h", "b", "1", "handler", "h"];
    let err = eval(
        &server,
        wasmq::queue::ENQUEUE_LUA,
        &enqueue_keys("qj"),
        &args,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Some("WASMQ_WRONGTYPE"), "{err}");
    assert!(err.to_string().contains("wasmq:{qj}:job:b string"), "{err}");
    assert_eq!(server.snapshot().await, before, "nothing written");
}

#[tokio::test]
async fn an_exponential_base_over_the_default_cap_is_its_own_cap_unless_a_cap_is_given() {
    let (server, client) = start().await;
    let keys = enqueue_keys("q");
    let two_hours = "7200000";
    let args = ["1", "long", "2", "handler", "h", "backoff_ms", two_hours];
    eval(&server, wasmq::queue::ENQUEUE_LUA, &keys, &args)
        .await
        .unwrap();
    let job = client.get("q", "long").await.unwrap().unwrap();
    let two_hours = Duration::from_secs(7200);
    assert_eq!(
        job.backoff,
        Backoff::Exponential {
            base: two_hours,
            cap: two_hours,
            jitter: 0.2
        }
    );
    // A cap the producer chose is kept to: below the base, refused.
    let args = [
        "1",
        "capped",
        "3",
        "handler",
        "h",
        "backoff_ms",
        "7200000",
        "backoff_cap_ms",
        "3600000",
    ];
    let err = eval(&server, wasmq::queue::ENQUEUE_LUA, &keys, &args)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("backoff_cap_ms must not be below backoff_ms"),
        "{err}"
    );
    // A fixed backoff has no cap: a two-hour delay is just that.
    let args = [
        "1",
        "fixed",
        "3",
        "handler",
        "h",
        "backoff",
        "fixed",
        "backoff_ms",
        "7200000",
    ];
    eval(&server, wasmq::queue::ENQUEUE_LUA, &keys, &args)
        .await
        .unwrap();
    let job = client.get("q", "fixed").await.unwrap().unwrap();
    // Two hours ± the default 20 % jitter, after any attempt: nothing caps it at one hour.
    assert_eq!(job.backoff.delay_bounds_ms(5), (5_760_000, 8_640_000));
    // The Rust client says the same: exponential from two hours, no cap given.
    client
        .enqueue(
            "q",
            &NewJob::new("h", vec![]).with_backoff(Backoff::exponential(two_hours)),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn counts_lua_is_a_standalone_script_a_producer_can_eval() {
    let (server, client) = start().await;
    client
        .enqueue("q", &NewJob::new("h", vec![]))
        .await
        .unwrap();
    client
        .enqueue("q", &NewJob::new("h", vec![]).with_group("t1"))
        .await
        .unwrap();
    client
        .enqueue(
            "q",
            &NewJob::new("h", vec![]).with_delay(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    fetch_one(&client, "q").await;
    client.pause("q").await.unwrap();
    let keys: Vec<String> = [
        "config",
        "waiting",
        "delayed",
        "active",
        "retry",
        "completed",
        "dead",
        "g:",
        "groups",
    ]
    .iter()
    .map(|k| format!("wasmq:{{q}}:{k}"))
    .collect();
    let reply = eval(&server, wasmq::queue::COUNTS_LUA, &keys, &[])
        .await
        .unwrap();
    let redis::Value::Array(items) = reply else {
        panic!("counts replied {reply:?}")
    };
    let numbers: Vec<i64> = items
        .into_iter()
        .map(|v| redis::from_redis_value(v).unwrap())
        .collect();
    // waiting 1 (the grouped job; the plain one is active), delayed, active, retry,
    // completed, dead, paused, now.
    assert_eq!(numbers[..7], [1, 1, 1, 0, 0, 0, 1]);
    assert!(numbers[7] >= server.now_ms().await as i64 - 10_000);
    let counts = client.counts("q").await.unwrap();
    assert_eq!((counts.waiting, counts.delayed, counts.active), (1, 1, 1));
}
