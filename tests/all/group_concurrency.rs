//! Group concurrency as users run it: real `wasmq run` processes sharing one Redis, a queue
//! whose `group_concurrency` lets at most N jobs of any one group run at once. What is
//! checked is read independently of the slots wasmq keeps: the `active` set and each active
//! job's `group` field, sampled every 10 ms, and the start and end times the `sleep` guest
//! reports.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmq::queue::{Client, JobState, NewJob, QueueConfig, QueueKeys};

use crate::support::cli::{ok, wasmq};
use crate::support::eventually;
use crate::support::guests::handler;
use crate::support::host::HostProcess;
use crate::support::jobs::{enqueue_ids, wait_for_count};
use crate::support::redis::RedisServer;

const Q: &str = "tenants";

async fn limit_groups_to(client: &Client, n: u64) {
    let config = QueueConfig {
        completed_keep: None,
        group_concurrency: Some(n),
        ..QueueConfig::default()
    };
    client.set_config(Q, &config).await.unwrap();
}

fn sleep_host(redis: &RedisServer, concurrency: usize, extra: &[&str]) -> HostProcess {
    let concurrency = concurrency.to_string();
    let sleep = handler("sleep", "sleep");
    let mut args = vec![
        "--queues",
        Q,
        "--handler",
        &sleep,
        "--concurrency",
        &concurrency,
    ];
    args.extend_from_slice(extra);
    HostProcess::builder(&redis.url()).args(args).start()
}

/// `n` jobs of `group` that each sleep `ms`.
fn sleeps(group: &str, n: usize, ms: u64) -> Vec<NewJob> {
    (0..n)
        .map(|_| NewJob::new("sleep", ms.to_string().into_bytes()).with_group(group))
        .collect()
}

/// What the sampler saw: the most active jobs of each group in any one sample, and how many
/// samples it took.
#[derive(Debug, Default)]
struct Seen {
    most: HashMap<String, usize>,
    samples: usize,
}

/// Reads `active` and each active job's `group` every 10 ms until `stop` is set.
async fn sample_active(redis: &RedisServer, stop: Arc<AtomicBool>) -> Seen {
    let keys = QueueKeys::new(Q).unwrap();
    let mut conn = redis.connection().await;
    let mut seen = Seen::default();
    while !stop.load(Ordering::Relaxed) {
        let active: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys.active())
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut pipe = redis::pipe();
        for id in &active {
            pipe.cmd("HGET").arg(keys.job(id)).arg("group");
        }
        let groups: Vec<Option<String>> = if active.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut conn).await.unwrap()
        };
        let mut now: HashMap<String, usize> = HashMap::new();
        for group in groups.into_iter().flatten() {
            *now.entry(group).or_default() += 1;
        }
        for (group, n) in now {
            let most = seen.most.entry(group).or_default();
            *most = (*most).max(n);
        }
        seen.samples += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen
}

/// The most of `spans` (start, end in ms) that overlap at any instant; a span that ends when
/// another starts does not overlap it.
fn max_overlap(spans: &[(u64, u64)]) -> usize {
    let mut edges: Vec<(u64, i32)> = spans.iter().flat_map(|&(s, e)| [(s, 1), (e, -1)]).collect();
    edges.sort_unstable();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}

/// The (start, end) that the sleep guest reported for each of `ids`, by group.
async fn spans_by_group(client: &Client, ids: &[String]) -> BTreeMap<String, Vec<(u64, u64)>> {
    let mut spans: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for id in ids {
        let job = client.get(Q, id).await.unwrap().unwrap();
        let result: serde_json::Value =
            serde_json::from_slice(job.result.as_deref().unwrap()).unwrap();
        spans.entry(job.group.unwrap()).or_default().push((
            result["start_ms"].as_u64().unwrap(),
            result["end_ms"].as_u64().unwrap(),
        ));
    }
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_never_run_more_than_two_jobs_of_one_group_at_once() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    limit_groups_to(&client, 2).await;
    let mut jobs = Vec::new();
    for g in 0..20 {
        jobs.extend(sleeps(&format!("group-{g}"), 12, 200));
    }
    let ids = enqueue_ids(&client, Q, &jobs).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_active(&redis, stop.clone());
    // 3 hosts of 16 slots: 48 in all, more than 20 groups of 2 may take, so the group limit
    // is what binds.
    let _hosts = [
        sleep_host(&redis, 16, &[]),
        sleep_host(&redis, 16, &[]),
        sleep_host(&redis, 16, &[]),
    ];
    let done = async {
        wait_for_count(
            &client,
            Q,
            JobState::Completed,
            240,
            Duration::from_secs(60),
        )
        .await;
        stop.store(true, Ordering::Relaxed);
    };
    let (seen, ()) = tokio::join!(sampler, done);

    // 12 jobs of 200 ms, 2 at a time: 1.2 s at least.
    assert!(seen.samples >= 30, "only {} samples", seen.samples);
    assert_eq!(
        seen.most.len(),
        20,
        "every group was seen running: {seen:?}"
    );
    let over: Vec<_> = seen.most.iter().filter(|(_, n)| **n > 2).collect();
    assert!(over.is_empty(), "groups over their limit: {over:?}");
    let at_limit = seen.most.values().filter(|n| **n == 2).count();
    assert!(at_limit >= 10, "the limit hardly bound: {seen:?}");
    // The guests' own clocks agree: no three jobs of a group ran at the same instant.
    for (group, spans) in spans_by_group(&client, &ids).await {
        assert_eq!(spans.len(), 12);
        assert!(max_overlap(&spans) <= 2, "{group}: {spans:?}");
    }
    let keys = QueueKeys::new(Q).unwrap();
    for g in 0..20 {
        assert!(!redis.exists(&keys.group_slots(&format!("group-{g}"))).await);
    }
}

/// How long, from now on the Redis clock, the jobs `ids` take to complete: the last one's
/// finish time less the start.
async fn time_to_complete(redis: &RedisServer, client: &Client, ids: &[String]) -> u64 {
    let start = redis.now_ms().await;
    eventually(
        "the small groups' jobs",
        Duration::from_secs(60),
        || async {
            let mut last = 0;
            for id in ids {
                let job = client.get(Q, id).await.ok()??;
                if job.state != JobState::Completed {
                    return None;
                }
                last = last.max(job.finished_at_ms?);
            }
            Some(last - start)
        },
    )
    .await
}

fn small_groups(round: usize) -> Vec<NewJob> {
    let mut jobs = Vec::new();
    for g in 0..19 {
        jobs.extend(sleeps(&format!("small-{round}-{g}"), 6, 200));
    }
    jobs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_with_10000_waiting_jobs_does_not_slow_the_other_groups() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    limit_groups_to(&client, 2).await;
    // 40 slots: the 19 small groups at their limit of 2, and the big one's 2.
    let _hosts = [sleep_host(&redis, 20, &[]), sleep_host(&redis, 20, &[])];
    // The hosts are up (the handler compiled) before anything is timed.
    let warm = enqueue_ids(&client, Q, &sleeps("warm", 2, 1)).await;
    time_to_complete(&redis, &client, &warm).await;

    let ids = enqueue_ids(&client, Q, &small_groups(0)).await;
    let alone = time_to_complete(&redis, &client, &ids).await;

    for chunk in sleeps("big", 10_000, 200).chunks(5_000) {
        client.enqueue_bulk(Q, chunk).await.unwrap();
    }
    let keys = QueueKeys::new(Q).unwrap();
    wait_for_count(&client, Q, JobState::Active, 2, Duration::from_secs(10)).await;
    let ids = enqueue_ids(&client, Q, &small_groups(1)).await;
    let beside_big = time_to_complete(&redis, &client, &ids).await;

    // 6 jobs of 200 ms, 2 at a time: 600 ms at best, either way.
    assert!(alone >= 600, "{alone} ms");
    assert!(
        beside_big < alone * 2,
        "with the big backlog {beside_big} ms, without {alone} ms"
    );
    // The big group kept to its limit all along.
    let mut conn = redis.connection().await;
    let held: u64 = redis::cmd("ZCARD")
        .arg(keys.group_slots("big"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(held <= 2, "{held}");
    let waiting: u64 = redis::cmd("ZCARD")
        .arg(keys.group_waiting("big"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        waiting > 9_900,
        "{waiting} of the big group's jobs still wait"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_hosts_group_slot_comes_back_when_its_lease_is_recovered() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    limit_groups_to(&client, 1).await;
    let stuck = enqueue_ids(
        &client,
        Q,
        &[NewJob::new("sleep", b"60000".to_vec())
            .with_group("g")
            .with_max_attempts(1)],
    )
    .await
    .remove(0);
    let mut first = sleep_host(&redis, 4, &["--lease", "1s"]);
    wait_for_count(&client, Q, JobState::Active, 1, Duration::from_secs(20)).await;
    let next = enqueue_ids(&client, Q, &sleeps("g", 1, 10)).await.remove(0);
    // The slot is taken: the next job of the group waits, though the host has room.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let waiting = client.get(Q, &next).await.unwrap().unwrap();
    assert_eq!(waiting.state, JobState::Waiting);

    first.sigkill();
    let _second = sleep_host(&redis, 4, &["--lease", "1s"]);
    let done = eventually("the group's next job", Duration::from_secs(20), || async {
        let job = client.get(Q, &next).await.ok()??;
        (job.state == JobState::Completed).then_some(job)
    })
    .await;
    let dead = client.get(Q, &stuck).await.unwrap().unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.last_outcome.as_deref(), Some("lease_expired"));
    // It ran only once the killed host's lease was recovered.
    let recovered_at = dead.finished_at_ms.unwrap();
    let started_at = done.history.last().unwrap().started_at;
    assert!(
        started_at >= recovered_at,
        "started {started_at}, slot given back {recovered_at}"
    );
    let keys = QueueKeys::new(Q).unwrap();
    assert!(!redis.exists(&keys.group_slots("g")).await);
}

#[tokio::test]
async fn the_cli_sets_shows_and_removes_the_group_concurrency() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let out = ok(&wasmq(
        &redis,
        &["queue", "limit", Q, "--group-concurrency", "3"],
    ));
    assert!(out.contains("group concurrency 3"), "{out}");
    assert_eq!(client.config(Q).await.unwrap().group_concurrency, Some(3));
    let out = ok(&wasmq(&redis, &["queue", "limit", Q]));
    assert!(out.contains("group concurrency 3"), "{out}");
    let out = ok(&wasmq(
        &redis,
        &["queue", "limit", Q, "--group-concurrency", "0"],
    ));
    assert!(out.contains("group concurrency unlimited"), "{out}");
    assert_eq!(client.config(Q).await.unwrap().group_concurrency, None);
    ok(&wasmq(
        &redis,
        &["queue", "limit", Q, "--group-concurrency", "2"],
    ));
    ok(&wasmq(&redis, &["queue", "limit", Q, "--clear"]));
    assert_eq!(client.config(Q).await.unwrap().group_concurrency, None);
    let bad = wasmq(&redis, &["queue", "limit", Q, "--group-concurrency=-1"]);
    assert!(!bad.status.success());
    let why = String::from_utf8_lossy(&bad.stderr);
    assert!(
        why.contains("invalid value '-1' for '--group-concurrency"),
        "{why}"
    );
}
