//! The worker host as users run it: real `wasmq run` processes, real signals, real Redis, real
//! components. Each test starts its own redis-server.

use std::time::Duration;

use wasmq::queue::{Client, JobState, NewJob};

use crate::support::eventually;
use crate::support::guests::{self, handler};
use crate::support::host::HostProcess;
use crate::support::jobs::{enqueue_ids, keep_everything, wait_for_count};
use crate::support::redis::RedisServer;

const Q: &str = "work";

async fn enqueue_sleeps(client: &Client, n: usize, ms: u64) -> Vec<String> {
    let jobs: Vec<NewJob> = (0..n)
        .map(|_| NewJob::new("sleep", ms.to_string().into_bytes()))
        .collect();
    enqueue_ids(client, Q, &jobs).await
}

/// `(start_ms, end_ms)` that the sleep guest reported for each completed job.
async fn sleep_spans(client: &Client, ids: &[String]) -> Vec<(u64, u64)> {
    let mut spans = Vec::new();
    for id in ids {
        let job = client.get(Q, id).await.unwrap().unwrap();
        let result: serde_json::Value =
            serde_json::from_slice(job.result.as_deref().unwrap()).unwrap();
        spans.push((
            result["start_ms"].as_u64().unwrap(),
            result["end_ms"].as_u64().unwrap(),
        ));
    }
    spans
}

/// The most spans that overlap at any instant.
fn max_overlap(spans: &[(u64, u64)]) -> usize {
    let mut edges: Vec<(u64, i32)> = spans.iter().flat_map(|&(s, e)| [(s, 1), (e, -1)]).collect();
    // At equal times, ends before starts: back-to-back jobs do not overlap.
    edges.sort();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, delta) in edges {
        now += delta;
        max = max.max(now);
    }
    max as usize
}

#[tokio::test]
async fn host_runs_enqueued_jobs_and_records_their_results() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let jobs: Vec<NewJob> = (0..50)
        .map(|i| NewJob::new("echo", format!("job {i}").into_bytes()))
        .collect();
    let enqueued = client.enqueue_bulk(Q, &jobs).await.unwrap();
    let _host = HostProcess::builder(&redis.url())
        .args(["--queues", Q, "--handler", &handler("echo", "echo")])
        .start();
    wait_for_count(&client, Q, JobState::Completed, 50, Duration::from_secs(30)).await;
    for (i, e) in enqueued.iter().enumerate() {
        let job = client.get(Q, &e.id).await.unwrap().unwrap();
        assert_eq!(job.result.as_deref(), Some(format!("job {i}").as_bytes()));
        assert_eq!(job.attempt, 1);
    }
    // A job enqueued while the host idles is picked up without polling delay.
    let late = client
        .enqueue(Q, &NewJob::new("echo", b"late".to_vec()))
        .await
        .unwrap();
    wait_for_count(&client, Q, JobState::Completed, 51, Duration::from_secs(5)).await;
    let job = client.get(Q, &late.id).await.unwrap().unwrap();
    assert_eq!(job.result.as_deref(), Some(&b"late"[..]));
}

#[tokio::test]
async fn guest_failures_follow_the_retry_policy() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let no_wait = wasmq::queue::Backoff::fixed(Duration::ZERO);
    let retry = client
        .enqueue(
            Q,
            &NewJob::new("retry", Vec::new())
                .with_max_attempts(2)
                .with_backoff(no_wait),
        )
        .await
        .unwrap();
    let fail = client
        .enqueue(Q, &NewJob::new("fail", Vec::new()).with_max_attempts(5))
        .await
        .unwrap();
    let unknown = client
        .enqueue(Q, &NewJob::new("nobody", Vec::new()).with_max_attempts(1))
        .await
        .unwrap();
    let _host = HostProcess::builder(&redis.url())
        .args([
            "--queues",
            Q,
            "--handler",
            &handler("retry", "retry"),
            "--handler",
            &handler("fail", "fail"),
        ])
        .start();
    wait_for_count(&client, Q, JobState::Dead, 3, Duration::from_secs(60)).await;

    let job = client.get(Q, &retry.id).await.unwrap().unwrap();
    let outcomes: Vec<_> = job.history.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["retry", "retry"]);
    assert_eq!(job.history[1].error, "try again (attempt 2 of 2)");
    // A `--handler` file has no version but its hash: each attempt records it.
    assert!(
        job.history.iter().all(|a| a
            .version
            .as_deref()
            .is_some_and(|v| v.starts_with("local:") && v.len() == 18)),
        "{:?}",
        job.history
    );

    // A permanent failure dead-letters at once, attempts left or not.
    let job = client.get(Q, &fail.id).await.unwrap().unwrap();
    assert_eq!(job.history.len(), 1);
    assert_eq!(job.history[0].outcome, "fail");

    let job = client.get(Q, &unknown.id).await.unwrap().unwrap();
    assert_eq!(job.history[0].outcome, "unknown_handler");
}

/// A retry with no backoff is waiting again the moment it is recorded, so this host may lease
/// the next attempt before it has forgotten the previous one. Each attempt must still be acked
/// and heartbeated as itself: no second attempt lost to a lease expiry (regression: the acker
/// used to forget the job by id, orphaning the new attempt).
#[tokio::test]
async fn immediate_retries_are_acked_as_their_own_attempt() {
    const N: u64 = 300;
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, Q).await;
    let no_wait = wasmq::queue::Backoff::fixed(Duration::ZERO);
    let jobs: Vec<NewJob> = (0..N)
        .map(|_| NewJob::new("flaky", b"{}".to_vec()).with_backoff(no_wait))
        .collect();
    let ids = enqueue_ids(&client, Q, &jobs).await;
    let _host = HostProcess::builder(&redis.url())
        .args([
            "--queues",
            Q,
            "--handler",
            &handler("flaky", "flaky"),
            "--lease",
            "2s",
        ])
        .start();
    wait_for_count(&client, Q, JobState::Completed, N, Duration::from_secs(60)).await;
    let mut wrong = Vec::new();
    for id in &ids {
        let job = client.get(Q, id).await.unwrap().unwrap();
        let outcomes: Vec<_> = job.history.iter().map(|a| a.outcome.clone()).collect();
        if outcomes != ["retry", "ok"] {
            wrong.push((id.clone(), outcomes));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} jobs ran other attempts: {wrong:?}",
        wrong.len()
    );
    // Each attempt's record keeps what the guest logged and its last progress.
    let job = client.get(Q, &ids[0]).await.unwrap().unwrap();
    let logs: Vec<_> = job.history.iter().map(|a| a.logs.as_deref()).collect();
    assert_eq!(
        logs,
        [
            Some("info: flaky attempt 1 of 3\n"),
            Some("info: flaky attempt 2 of 3\n")
        ]
    );
    let progress: Vec<_> = job.history.iter().map(|a| a.progress).collect();
    assert_eq!(progress, [Some(0), Some(100)]);
}

/// At concurrency 1 the host runs the jobs one after another, in order, each once, and records
/// each one's result in the same script call that leases the next (one call per job, not two).
/// Starts an echo host at concurrency 1 (with `flags`) on the jobs already waiting in `Q`,
/// waits until `n` have completed, and returns the host and the script calls Redis served
/// meanwhile: every one the host's, since the wait polls with a plain command.
async fn run_at_concurrency_one(redis: &RedisServer, n: u64, flags: &[&str]) -> (HostProcess, u64) {
    let conn = redis.connection().await;
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn.clone())
        .await
        .unwrap();
    let echo = handler("echo", "echo");
    let mut args = vec!["--queues", Q, "--handler", &echo, "--concurrency", "1"];
    args.extend_from_slice(flags);
    let host = HostProcess::builder(&redis.url()).args(&args).start();
    let completed = wasmq::queue::QueueKeys::new(Q).unwrap().completed();
    eventually(
        &format!("{n} jobs completed"),
        Duration::from_secs(60),
        || {
            let mut conn = conn.clone();
            let completed = completed.clone();
            async move {
                let done: u64 = redis::cmd("ZCARD")
                    .arg(&completed)
                    .query_async(&mut conn)
                    .await
                    .ok()?;
                (done == n).then_some(())
            }
        },
    )
    .await;
    (host, redis.script_calls().await)
}

#[tokio::test]
async fn a_host_at_concurrency_one_runs_a_batch_in_order_with_one_call_per_job() {
    const N: u64 = 200;
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, Q).await;
    let jobs: Vec<NewJob> = (0..N)
        .map(|i| NewJob::new("echo", format!("job {i}").into_bytes()))
        .collect();
    let ids = enqueue_ids(&client, Q, &jobs).await;
    let (_host, calls) = run_at_concurrency_one(&redis, N, &["--prefetch", "0"]).await;

    let mut spans = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let job = client.get(Q, id).await.unwrap().unwrap();
        assert_eq!(job.result.as_deref(), Some(format!("job {i}").as_bytes()));
        assert_eq!((job.attempt, job.history.len()), (1, 1), "job {i} ran once");
        spans.push((job.history[0].started_at, job.history[0].finished_at));
    }
    // One at a time, in enqueue order (Redis clock: each job starts when the one before it
    // is recorded, in the same call).
    assert!(
        spans.windows(2).all(|w| w[0].1 <= w[1].0),
        "jobs overlapped or ran out of order: {spans:?}"
    );
    let events = client.events(Q, None, 10_000).await.unwrap();
    let mut leased: Vec<(String, u32)> = events
        .iter()
        .filter(|e| e.event == "active")
        .flat_map(|e| e.jobs.clone())
        .collect();
    leased.sort();
    let mut expected: Vec<(String, u32)> = ids.iter().map(|id| (id.clone(), 1)).collect();
    expected.sort();
    assert_eq!(leased, expected, "each job leased exactly once");
    // A fetch, one complete-and-fetch per job, the last fetch that finds the queue empty, and
    // a few heartbeats, recoveries and idle fetches; two calls per job would be 2N.
    assert!(calls <= N + 30, "{calls} script calls for {N} jobs");
}

/// Enqueues `n` echo jobs whose payloads say their place, and returns their ids.
async fn enqueue_echoes(client: &Client, n: u64) -> Vec<String> {
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| NewJob::new("echo", format!("job {i}").into_bytes()))
        .collect();
    let mut ids = Vec::new();
    for chunk in jobs.chunks(1000) {
        ids.extend(enqueue_ids(client, Q, chunk).await);
    }
    ids
}

#[tokio::test]
async fn a_host_at_concurrency_one_leases_short_jobs_ahead_and_runs_each_once_in_order() {
    const N: u64 = 400;
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, Q).await;
    let ids = enqueue_echoes(&client, N).await;
    // The default prefetch; echo takes well under a millisecond on a quiet machine, and a
    // busy one (CI, other suites beside this test) must not decide the outcome.
    let (_host, calls) = run_at_concurrency_one(&redis, N, &["--prefetch-below", "100ms"]).await;

    let mut finished = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let job = client.get(Q, id).await.unwrap().unwrap();
        assert_eq!(job.result.as_deref(), Some(format!("job {i}").as_bytes()));
        assert_eq!((job.attempt, job.history.len()), (1, 1), "job {i} ran once");
        finished.push(job.history[0].finished_at);
    }
    // One slot runs its jobs in the order they were leased, which is the queue's order, and
    // the acker records them in the order they ended.
    assert!(
        finished.windows(2).all(|w| w[0] <= w[1]),
        "jobs finished out of order: {finished:?}"
    );
    let events = client.events(Q, None, 10_000).await.unwrap();
    let mut leased: Vec<(String, u32)> = events
        .iter()
        .filter(|e| e.event == "active")
        .flat_map(|e| e.jobs.clone())
        .collect();
    leased.sort();
    let mut expected: Vec<(String, u32)> = ids.iter().map(|id| (id.clone(), 1)).collect();
    expected.sort();
    assert_eq!(leased, expected, "each job leased exactly once");
    // Without leasing ahead this is one call per job (the test above): runs of jobs share
    // the call that leases them, and their completions batch up while the slot runs on.
    assert!(calls <= N / 2, "{calls} script calls for {N} jobs");
}

#[tokio::test]
async fn jobs_leased_ahead_of_a_long_job_go_back_to_the_queue_uncounted() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, Q).await;
    // Short jobs first, so the slot leases ahead (the very first attempt in a fresh pool slot
    // may be slower); then a long one, with short ones behind it.
    let warm = enqueue_echoes(&client, 50).await;
    let long = enqueue_sleeps(&client, 1, 4000).await;
    let behind = enqueue_echoes(&client, 10).await;
    let _host = HostProcess::builder(&redis.url())
        .args([
            "--queues",
            Q,
            "--handler",
            &handler("echo", "echo"),
            "--handler",
            &handler("sleep", "sleep"),
            "--concurrency",
            "1",
            // Echo counts as short however busy the machine; jobs behind one go back after 1 s.
            "--prefetch-below",
            "100ms",
        ])
        .start();
    eventually("the long job running", Duration::from_secs(20), || async {
        let job = client.get(Q, &long[0]).await.ok()??;
        (job.state == JobState::Active).then_some(())
    })
    .await;
    // Leased with it, then given back while it runs: waiting again, their attempt uncounted.
    eventually(
        "the jobs behind the long one back in waiting",
        Duration::from_secs(3),
        || async {
            for id in &behind {
                let job = client.get(Q, id).await.ok()??;
                if job.state != JobState::Waiting || job.attempt != 0 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    let running = client.get(Q, &long[0]).await.unwrap().unwrap();
    assert_eq!(
        running.state,
        JobState::Active,
        "given back before it ended"
    );
    let events = client.events(Q, None, 1000).await.unwrap();
    let leased_ahead: Vec<&String> = events
        .iter()
        .filter(|e| e.event == "active")
        .flat_map(|e| e.jobs.iter().map(|(id, _)| id))
        .filter(|id| behind.contains(id))
        .collect();
    let released: Vec<&String> = events
        .iter()
        .filter(|e| e.event == "released")
        .flat_map(|e| e.jobs.iter().map(|(id, _)| id))
        .collect();
    assert!(
        !leased_ahead.is_empty() && leased_ahead.iter().all(|id| released.contains(id)),
        "leased ahead {leased_ahead:?}, released {released:?}"
    );

    wait_for_count(&client, Q, JobState::Completed, 61, Duration::from_secs(30)).await;
    for id in warm.iter().chain(&long).chain(&behind) {
        let job = client.get(Q, id).await.unwrap().unwrap();
        assert_eq!((job.attempt, job.history.len()), (1, 1), "job {id}");
    }
}

#[tokio::test]
async fn sigterm_while_short_jobs_flow_releases_the_jobs_leased_ahead_uncounted() {
    const N: u64 = 3000;
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, Q).await;
    let ids = enqueue_echoes(&client, N).await;
    let args = [
        "--queues",
        Q,
        "--handler",
        &handler("echo", "echo"),
        "--concurrency",
        "1",
    ];
    let mut first = HostProcess::builder(&redis.url()).args(args).start();
    eventually("some jobs done", Duration::from_secs(30), || async {
        let c = client.counts(Q).await.ok()?;
        (c.completed >= 200).then_some(())
    })
    .await;
    first.sigterm();
    let status = first.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "log:\n{}", first.log_text());
    // Nothing left active; every job ran once or not at all.
    let counts = client.counts(Q).await.unwrap();
    assert_eq!(counts.active, 0);
    assert_eq!(counts.completed + counts.waiting, N, "{counts:?}");
    assert!(counts.waiting > 0, "the host was stopped before the end");
    for id in &ids {
        let job = client.get(Q, id).await.unwrap().unwrap();
        match job.state {
            JobState::Completed => assert_eq!((job.attempt, job.history.len()), (1, 1)),
            JobState::Waiting => {
                assert_eq!(
                    (job.attempt, job.history.len()),
                    (0, 0),
                    "released uncounted"
                )
            }
            other => panic!("job {id} is {other}"),
        }
    }

    let _second = HostProcess::builder(&redis.url()).args(args).start();
    wait_for_count(&client, Q, JobState::Completed, N, Duration::from_secs(60)).await;
    for id in &ids {
        let job = client.get(Q, id).await.unwrap().unwrap();
        assert_eq!((job.attempt, job.history.len()), (1, 1), "job {id}");
    }
}

#[tokio::test]
async fn sigterm_lets_in_flight_jobs_finish_and_exits_zero() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let ids = enqueue_sleeps(&client, 20, 1000).await;
    let mut host = HostProcess::builder(&redis.url())
        .args([
            "--queues",
            Q,
            "--handler",
            &handler("sleep", "sleep"),
            "--concurrency",
            "20",
            "--grace",
            "20s",
        ])
        .start();
    wait_for_count(&client, Q, JobState::Active, 20, Duration::from_secs(20)).await;
    host.sigterm();
    let status = host.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "log:\n{}", host.log_text());
    let counts = client.counts(Q).await.unwrap();
    assert_eq!(
        (
            counts.completed,
            counts.retry,
            counts.dead,
            counts.waiting,
            counts.active
        ),
        (20, 0, 0, 0, 0)
    );
    for id in &ids {
        let job = client.get(Q, id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Completed);
        assert_eq!(job.attempt, 1);
    }
}

#[tokio::test]
async fn sigterm_past_the_grace_returns_jobs_uncounted_for_another_host() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let ids = enqueue_sleeps(&client, 5, 4000).await;
    let mut first = HostProcess::builder(&redis.url())
        .args([
            "--queues",
            Q,
            "--handler",
            &handler("sleep", "sleep"),
            "--grace",
            "300ms",
        ])
        .start();
    wait_for_count(&client, Q, JobState::Active, 5, Duration::from_secs(20)).await;
    first.sigterm();
    let status = first.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "log:\n{}", first.log_text());
    let counts = client.counts(Q).await.unwrap();
    assert_eq!((counts.waiting, counts.active, counts.completed), (5, 0, 0));
    for id in &ids {
        let job = client.get(Q, id).await.unwrap().unwrap();
        assert_eq!(job.attempt, 0, "a released job's attempt is not counted");
        assert!(job.history.is_empty());
    }

    let _second = HostProcess::builder(&redis.url())
        .args(["--queues", Q, "--handler", &handler("sleep", "sleep")])
        .start();
    wait_for_count(&client, Q, JobState::Completed, 5, Duration::from_secs(30)).await;
    for id in &ids {
        assert_eq!(client.get(Q, id).await.unwrap().unwrap().attempt, 1);
    }
}

#[tokio::test]
async fn a_second_signal_stops_in_flight_jobs_at_once() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    enqueue_sleeps(&client, 3, 30_000).await;
    let mut host = HostProcess::builder(&redis.url())
        .args([
            "--queues",
            Q,
            "--handler",
            &handler("sleep", "sleep"),
            "--grace",
            "60s",
        ])
        .start();
    wait_for_count(&client, Q, JobState::Active, 3, Duration::from_secs(20)).await;
    host.sigterm();
    // The first signal has landed (the host says so) before the second is sent.
    eventually(
        "the host to take the first signal",
        Duration::from_secs(10),
        || async {
            host.log_text()
                .lines()
                .any(|l| l.contains("signal received") && l.contains("Draining"))
                .then_some(())
        },
    )
    .await;
    host.sigint();
    let status = host.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    let counts = client.counts(Q).await.unwrap();
    assert_eq!((counts.waiting, counts.active), (3, 0));
}

#[tokio::test]
async fn sigkill_mid_batch_loses_nothing_and_reruns_count_an_attempt() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, Q).await;
    let ids = enqueue_sleeps(&client, 10, 3000).await;
    let sleep = handler("sleep", "sleep");
    let mut doomed = HostProcess::builder(&redis.url())
        .args(["--queues", Q, "--handler", &sleep, "--lease", "1s"])
        .start();
    wait_for_count(&client, Q, JobState::Active, 10, Duration::from_secs(20)).await;
    doomed.sigkill();

    let _survivor = HostProcess::builder(&redis.url())
        .args(["--queues", Q, "--handler", &sleep, "--lease", "1s"])
        .start();
    wait_for_count(&client, Q, JobState::Completed, 10, Duration::from_secs(60)).await;
    for id in &ids {
        let job = client.get(Q, id).await.unwrap().unwrap();
        assert_eq!(job.attempt, 2, "job {id}");
        assert_eq!(job.history[0].outcome, "lease_expired");
        assert_eq!(job.history.last().unwrap().outcome, "ok");
    }
}

#[tokio::test]
async fn memory_budget_bounds_how_many_jobs_run_at_once() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, Q).await;
    let ids = enqueue_sleeps(&client, 6, 400).await;
    let toml = format!(
        "memory_budget = \"128MiB\"\nconcurrency = 10\n[handlers.sleep]\npath = {:?}\nmemory = \"64MiB\"\n",
        guests::rust("sleep")
    );
    let _host = HostProcess::builder(&redis.url())
        .config(&toml)
        .args(["--queues", Q])
        .start();
    wait_for_count(&client, Q, JobState::Completed, 6, Duration::from_secs(30)).await;
    let spans = sleep_spans(&client, &ids).await;
    assert_eq!(max_overlap(&spans), 2, "{spans:?}");
}

#[tokio::test]
async fn redis_restart_while_jobs_flow_loses_nothing() {
    let mut redis = RedisServer::start_with_aof();
    let client = redis.client().await;
    keep_everything(&client, Q).await;
    let jobs: Vec<NewJob> = (0..2000)
        .map(|i| NewJob::new("echo", format!("{i}").into_bytes()))
        .collect();
    for chunk in jobs.chunks(500) {
        client.enqueue_bulk(Q, chunk).await.unwrap();
    }
    let mut host = HostProcess::builder(&redis.url())
        .args([
            "--queues",
            Q,
            "--handler",
            &handler("echo", "echo"),
            "--lease",
            "5s",
        ])
        .start();
    eventually("some jobs done", Duration::from_secs(30), || async {
        let c = client.counts(Q).await.ok()?;
        (c.completed > 0).then_some(())
    })
    .await;
    redis.restart();
    let client = redis.client().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let counts = client.counts(Q).await;
        if matches!(&counts, Ok(c) if c.completed == 2000) {
            break;
        }
        if std::time::Instant::now() > deadline {
            let fresh = redis.client().await.counts(Q).await;
            panic!(
                "2000 jobs not completed within 90 s of the restart: {counts:?} (a new \
                 client: {fresh:?}); host log:\n{}",
                host.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(host.is_running(), "the host exited:\n{}", host.log_text());
    let counts = client.counts(Q).await.unwrap();
    assert_eq!(
        (counts.dead, counts.waiting, counts.active, counts.retry),
        (0, 0, 0, 0)
    );
}

#[tokio::test]
async fn handler_concurrency_limit_holds_beside_a_roomy_host() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, Q).await;
    let ids = enqueue_sleeps(&client, 4, 300).await;
    let toml = format!(
        "concurrency = 16\n[handlers.sleep]\npath = {:?}\nconcurrency = 1\n",
        guests::rust("sleep")
    );
    let _host = HostProcess::builder(&redis.url())
        .config(&toml)
        .args(["--queues", Q])
        .start();
    wait_for_count(&client, Q, JobState::Completed, 4, Duration::from_secs(30)).await;
    let spans = sleep_spans(&client, &ids).await;
    assert_eq!(max_overlap(&spans), 1, "{spans:?}");
}

/// An idle fetcher waits on its own connection, which has no response timeout (the server
/// holds the BLPOP); a server that stops answering must not hold the wait past its timeout
/// for good, or the fetcher never fetches again. The wait ends with an error a few seconds
/// past its timeout, and the next one, on a fresh connection, works once the server answers.
#[tokio::test]
async fn a_wake_up_wait_on_a_redis_that_stops_answering_ends_with_an_error() {
    let server = wasmq::local_redis::LocalRedis::start(Default::default()).unwrap();
    let client = Client::connect(&server.url()).await.unwrap();
    let mut waiter = client.waiter();
    assert!(!waiter.wait(Q, Duration::from_millis(50)).await.unwrap());
    let pid = server.pid().expect("the server runs").to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name} {pid}");
    };
    signal("-STOP");
    let started = std::time::Instant::now();
    let waited = tokio::time::timeout(
        Duration::from_secs(30),
        waiter.wait(Q, Duration::from_secs(1)),
    )
    .await;
    let elapsed = started.elapsed();
    signal("-CONT");
    let outcome = waited.expect("the wait ended by itself");
    assert!(outcome.is_err(), "a stopped server answered: {outcome:?}");
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(15),
        "the wait ended after {elapsed:?}"
    );
    assert!(!waiter.wait(Q, Duration::from_millis(50)).await.unwrap());
}
