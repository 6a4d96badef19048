//! Nothing lost to one bad key: a job key or field that a producer or a person wrote wrongly is
//! moved into the dead-letter queue as `malformed` (its key kept as `<q>malformed:<id>`), and
//! every other job of the same script call goes on; `wasmq queue check` finds what is out of
//! step and `--repair` puts it right. Real redis-server processes, real hosts.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use redis::AsyncCommands;
use wasmq::connection::RedisConnection;
use wasmq::queue::{
    Backoff, Client, Completion, FailOutcome, Failure, Job, JobState, LeaseRejection, LeasedJob,
    NewJob, Suspension,
};

use crate::support::cli::{ok, wasmq};
use crate::support::eventually;
use crate::support::guests::handler;
use crate::support::host::HostProcess;
use crate::support::jobs::{enqueue_ids, keep_everything};
use crate::support::redis::RedisServer;

const LEASE: Duration = Duration::from_secs(60);
const HOST: &str = "host-a";

fn job_key(queue: &str, id: &str) -> String {
    format!("wasmq:{{{queue}}}:job:{id}")
}

fn set_key(queue: &str, set: &str) -> String {
    format!("wasmq:{{{queue}}}:{set}")
}

fn jobs(n: usize) -> Vec<NewJob> {
    (0..n)
        .map(|i| NewJob::new("h", format!("payload {i}").into_bytes()))
        .collect()
}

fn sorted(ids: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut ids: Vec<String> = ids.into_iter().collect();
    ids.sort();
    ids
}

fn leased_ids(jobs: &[LeasedJob]) -> Vec<String> {
    sorted(jobs.iter().map(|job| job.id.clone()))
}

/// The job, which must exist and be in the dead-letter queue as `malformed`, with a reason
/// that contains `reason`.
async fn assert_buried(client: &Client, queue: &str, id: &str, reason: &str) -> Job {
    let job = client.get(queue, id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Dead, "{id}");
    assert_eq!(job.last_outcome.as_deref(), Some("malformed"), "{id}");
    let error = job.last_error.clone().unwrap_or_default();
    assert!(error.contains(reason), "{id}: {error:?} lacks {reason:?}");
    assert_eq!(job.history.last().unwrap().outcome, "malformed");
    job
}

/// A check that finds nothing out of step.
async fn assert_consistent(client: &Client, queue: &str) {
    let report = client.check(queue, false).await.unwrap();
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
}

/// Replaces a job's hash with a list holding the same id: a key no HMGET can read.
async fn make_list(conn: &mut RedisConnection, queue: &str, id: &str) {
    let key = job_key(queue, id);
    let () = conn.del(&key).await.unwrap();
    let () = conn.rpush(&key, "not a hash").await.unwrap();
}

#[tokio::test]
async fn a_string_job_key_among_ten_valid_jobs_is_dead_lettered_and_the_ten_are_leased() {
    let server = RedisServer::start();
    let client = server.client().await;
    let ids = enqueue_ids(&client, "q", &jobs(10)).await;
    // A producer that used SET instead of HSET, its id in line among the others.
    let mut conn = server.connection().await;
    let score: f64 = conn.zscore(set_key("q", "waiting"), &ids[4]).await.unwrap();
    let () = conn
        .set(job_key("q", "bad"), "handler h payload x")
        .await
        .unwrap();
    let () = conn
        .zadd(set_key("q", "waiting"), "bad", score)
        .await
        .unwrap();

    let fetched = client.fetch_batch("q", 20, LEASE, HOST).await.unwrap();
    assert_eq!(leased_ids(&fetched.jobs), sorted(ids.clone()));
    assert_eq!(fetched.dropped, 0);
    let counts = client.counts("q").await.unwrap();
    assert_eq!((counts.waiting, counts.active, counts.dead), (0, 10, 1));
    assert_buried(&client, "q", "bad", "holds a string").await;
    // What the key held is kept, exactly, beside the dead-letter record.
    let kept: String = conn.get("wasmq:{q}:malformed:bad").await.unwrap();
    assert_eq!(kept, "handler h payload x");

    // The ten run to completion, and nothing is left out of step.
    let done: Vec<Completion> = fetched
        .jobs
        .iter()
        .map(|job| Completion::new(job, b"ok".to_vec()))
        .collect();
    let report = client.complete("q", &done).await.unwrap();
    assert_eq!(sorted(report.completed), sorted(ids));
    assert_consistent(&client, "q").await;

    // Purging the malformed job deletes what its key held with it.
    let purged = client.purge("q", &["bad".to_string()]).await.unwrap();
    assert_eq!(purged.done, ["bad"]);
    let left: bool = conn.exists("wasmq:{q}:malformed:bad").await.unwrap();
    assert!(!left);
}

#[tokio::test]
async fn a_nan_jitter_on_one_of_ten_failing_jobs_dead_letters_it_and_the_nine_retry() {
    let server = RedisServer::start();
    let client = server.client().await;
    let ids = enqueue_ids(&client, "q", &jobs(10)).await;
    let fetched = client.fetch("q", 10, LEASE, HOST).await.unwrap();
    assert_eq!(fetched.len(), 10);
    let mut conn = server.connection().await;
    let () = conn
        .hset(job_key("q", &ids[3]), "backoff_jitter", "nan")
        .await
        .unwrap();

    let failures: Vec<Failure> = fetched
        .iter()
        .map(|job| Failure::new(job, "guest_fail", "boom"))
        .collect();
    let report = client.fail("q", &failures).await.unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert_eq!(report.outcomes.len(), 10);
    for (id, outcome) in &report.outcomes {
        if *id == ids[3] {
            assert_eq!(*outcome, FailOutcome::Dead, "{id}");
        } else {
            assert!(
                matches!(outcome, FailOutcome::Retry { .. }),
                "{id}: {outcome:?}"
            );
        }
    }
    let counts = client.counts("q").await.unwrap();
    assert_eq!((counts.active, counts.retry, counts.dead), (0, 9, 1));
    let dead = assert_buried(&client, "q", &ids[3], "backoff_jitter").await;
    assert_eq!(dead.payload, b"payload 3");
    assert_eq!(dead.handler, "h");

    // A host that sends the same call again (it cannot know the first one was recorded)
    // changes nothing: every job is rejected, none is lost.
    let again = client.fail("q", &failures).await.unwrap();
    assert!(again.outcomes.is_empty());
    assert_eq!(again.rejected.len(), 10);
    assert_consistent(&client, "q").await;
}

/// Three jobs taken to where `transition` acts on them, the middle one's key made a list, then
/// the transition: the other two go on, the middle one is buried. One queue per transition.
#[tokio::test]
async fn every_worker_transition_buries_an_unreadable_job_and_serves_the_rest() {
    let server = RedisServer::start();
    let client = server.client().await;
    let mut conn = server.connection().await;
    let short = Duration::from_millis(1);

    for transition in [
        "fetch", "complete", "fail", "release", "recover", "promote", "suspend",
    ] {
        let q = format!("t-{transition}");
        let mut new = jobs(3);
        if transition == "promote" {
            new = new.into_iter().map(|job| job.with_delay(short)).collect();
        }
        let ids = enqueue_ids(&client, &q, &new).await;
        let bad = ids[1].clone();
        let good = sorted([ids[0].clone(), ids[2].clone()]);
        let lease = if transition == "recover" {
            short
        } else {
            LEASE
        };
        let leased = if matches!(transition, "fetch" | "promote") {
            Vec::new()
        } else {
            client.fetch(&q, 3, lease, HOST).await.unwrap()
        };
        make_list(&mut conn, &q, &bad).await;
        tokio::time::sleep(Duration::from_millis(5)).await;

        match transition {
            "fetch" => {
                let fetched = client.fetch(&q, 3, LEASE, HOST).await.unwrap();
                assert_eq!(leased_ids(&fetched), good, "{transition}");
            }
            "complete" => {
                let done: Vec<Completion> = leased
                    .iter()
                    .map(|job| Completion::new(job, b"r".to_vec()))
                    .collect();
                let report = client.complete(&q, &done).await.unwrap();
                assert_eq!(sorted(report.completed), good);
                assert_eq!(
                    report.rejected,
                    [(bad.clone(), LeaseRejection::NotActive("dead".into()))]
                );
            }
            "fail" => {
                let failed: Vec<Failure> = leased
                    .iter()
                    .map(|job| Failure::new(job, "trap", "x"))
                    .collect();
                let report = client.fail(&q, &failed).await.unwrap();
                let dead: Vec<&String> = report
                    .outcomes
                    .iter()
                    .filter(|(_, o)| *o == FailOutcome::Dead)
                    .map(|(id, _)| id)
                    .collect();
                assert_eq!(dead, [&bad]);
                assert_eq!(report.outcomes.len(), 3);
            }
            "release" => {
                let leases: Vec<_> = leased.iter().map(LeasedJob::lease).collect();
                let report = client.release(&q, &leases).await.unwrap();
                assert_eq!(sorted(report.released), good);
            }
            "recover" => {
                let report = client.recover_expired(&q, 10, &[]).await.unwrap();
                assert_eq!(report.outcomes.len(), 3);
            }
            "promote" => {
                let (moved, _) = client.promote(&q, 10).await.unwrap();
                assert_eq!(moved, 2);
            }
            "suspend" => {
                let sleeps: Vec<Suspension> = leased
                    .iter()
                    .map(|job| Suspension::new(job, "sleep:nap", Duration::from_secs(60)))
                    .collect();
                let report = client.suspend(&q, &sleeps).await.unwrap();
                assert_eq!(sorted(report.suspended.into_iter().map(|(id, _)| id)), good);
            }
            other => unreachable!("{other}"),
        }
        assert_buried(&client, &q, &bad, "holds a list").await;
        let counts = client.counts(&q).await.unwrap();
        assert_eq!(counts.dead, 1, "{transition}");
        let kept: Vec<String> = conn
            .lrange(format!("wasmq:{{{q}}}:malformed:{bad}"), 0, -1)
            .await
            .unwrap();
        assert_eq!(kept, ["not a hash"], "{transition}");
        assert_consistent(&client, &q).await;
    }
}

/// A field that the host could not read back, one per job: fetch leases the valid jobs and
/// buries each of these with the field named.
#[tokio::test]
async fn fetch_buries_jobs_whose_fields_the_host_cannot_read() {
    let server = RedisServer::start();
    let client = server.client().await;
    let mut conn = server.connection().await;
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("priority", Some("nan"), "field priority"),
        ("attempt", Some("1e3"), "field attempt"),
        ("max_attempts", Some("-1"), "field max_attempts"),
        ("timeout_ms", Some("inf"), "field timeout_ms"),
        ("created_at", Some("yesterday"), "field created_at"),
        ("handler", Some("has space"), "field handler"),
        ("handler", None, "field handler is missing"),
        ("state", None, "field state is missing"),
        ("state", Some("sleeping"), "not a job state"),
        // A state that contradicts the set the job is in, and no other set holds it.
        ("state", Some("retry"), "state retry but found in waiting"),
    ];
    let ids = enqueue_ids(&client, "q", &jobs(cases.len() + 5)).await;
    for ((field, value, _), id) in cases.iter().zip(&ids) {
        let key = job_key("q", id);
        let () = match value {
            Some(value) => conn.hset(&key, *field, *value).await.unwrap(),
            None => conn.hdel(&key, *field).await.unwrap(),
        };
    }
    let fetched = client.fetch_batch("q", 100, LEASE, HOST).await.unwrap();
    assert_eq!(
        leased_ids(&fetched.jobs),
        sorted(ids[cases.len()..].iter().cloned())
    );
    for ((_, _, reason), id) in cases.iter().zip(&ids) {
        assert_buried(&client, "q", id, reason).await;
    }
    assert_consistent(&client, "q").await;
}

#[tokio::test]
async fn queue_check_reports_each_inconsistency_and_repair_puts_each_right_once() {
    let server = RedisServer::start();
    let client = server.client().await;
    let mut conn = server.connection().await;
    let ids = enqueue_ids(&client, "q", &jobs(6)).await;
    let grouped = enqueue_ids(
        &client,
        "q",
        &[NewJob::new("h", Vec::new()).with_group("g1")],
    )
    .await;
    let waiting = set_key("q", "waiting");
    // A dangling id; a job in two sets; one in none; one in another state's set only; one
    // malformed; a group left out of `groups`, and an empty group still in it.
    let () = conn.zadd(set_key("q", "dead"), "ghost", 1).await.unwrap();
    let () = conn
        .zadd(set_key("q", "delayed"), &ids[0], 1)
        .await
        .unwrap();
    let () = conn.zrem(&waiting, &ids[1]).await.unwrap();
    let () = conn.zrem(&waiting, &ids[2]).await.unwrap();
    let () = conn.zadd(set_key("q", "retry"), &ids[2], 1).await.unwrap();
    let () = conn
        .hset(job_key("q", &ids[3]), "priority", "high")
        .await
        .unwrap();
    let () = conn.zrem(set_key("q", "groups"), "g1").await.unwrap();
    let () = conn.zadd(set_key("q", "groups"), "g2", 1).await.unwrap();
    let () = conn.set(set_key("q", "active"), "oops").await.unwrap();

    let expected: BTreeSet<(String, String)> = [
        ("dangling", "ghost"),
        ("in_two_sets", ids[0].as_str()),
        ("in_no_set", ids[1].as_str()),
        ("contradicts_set", ids[2].as_str()),
        ("malformed", ids[3].as_str()),
        ("group_not_listed", "g1"),
        ("group_listed_empty", "g2"),
        ("wrong_type", "wasmq:{q}:active"),
    ]
    .iter()
    .map(|(k, s)| (k.to_string(), s.to_string()))
    .collect();

    // Without --repair: reported, nothing written, exit 1.
    let before = server.snapshot().await;
    let out = wasmq(&server, &["queue", "check", "q", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed: BTreeSet<(String, String)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(f["repaired"], false);
            (
                f["kind"].as_str().unwrap().to_string(),
                f["subject"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(listed, expected);
    assert_eq!(server.snapshot().await, before);

    // With --repair: each put right (the wrong-typed key aside: a person decides), exit 1
    // for that one.
    let out = wasmq(&server, &["queue", "check", "q", "--repair"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("8 found, 7 repaired, 1 left"), "{text}");
    let () = conn.del(set_key("q", "active")).await.unwrap();
    let again = client.check("q", true).await.unwrap();
    assert!(again.findings.is_empty(), "{:#?}", again.findings);
    ok(&wasmq(&server, &["queue", "check", "q"]));

    // Every valid job is where its state says, and runs; the malformed one is dead.
    let counts = client.counts("q").await.unwrap();
    assert_eq!((counts.waiting, counts.dead, counts.delayed), (6, 1, 0));
    assert_buried(&client, "q", &ids[3], "field priority").await;
    let fetched = client.fetch("q", 10, LEASE, HOST).await.unwrap();
    let mut expected_ids: Vec<String> = ids.clone();
    expected_ids.remove(3);
    expected_ids.extend(grouped);
    assert_eq!(leased_ids(&fetched), sorted(expected_ids));
}

#[tokio::test]
async fn the_check_hosts_run_repairs_dangling_and_malformed_ids_in_active() {
    let server = RedisServer::start();
    let client = server.client().await;
    let mut conn = server.connection().await;
    let ids = enqueue_ids(&client, "q", &jobs(3)).await;
    let leased = client.fetch("q", 3, LEASE, HOST).await.unwrap();
    make_list(&mut conn, "q", &ids[1]).await;
    let () = conn.zadd(set_key("q", "active"), "ghost", 1).await.unwrap();

    let report = client.check_active("q", 100).await.unwrap();
    let found: BTreeSet<(String, String, bool)> = report
        .findings
        .iter()
        .map(|f| (f.kind.clone(), f.subject.clone(), f.repaired))
        .collect();
    let expected: BTreeSet<(String, String, bool)> = [
        ("dangling".to_string(), "ghost".to_string(), true),
        ("malformed".to_string(), ids[1].clone(), true),
    ]
    .into_iter()
    .collect();
    assert_eq!(found, expected);
    assert_buried(&client, "q", &ids[1], "holds a list").await;
    // The jobs still leased are untouched, and their holder completes them.
    let done: Vec<Completion> = leased
        .iter()
        .filter(|job| job.id != ids[1])
        .map(|job| Completion::new(job, b"r".to_vec()))
        .collect();
    assert_eq!(
        client.complete("q", &done).await.unwrap().completed.len(),
        2
    );
    assert!(
        client
            .check_active("q", 100)
            .await
            .unwrap()
            .findings
            .is_empty()
    );
    assert_consistent(&client, "q").await;
}

#[tokio::test]
async fn a_listed_key_that_is_not_a_hash_is_named_and_repair_makes_the_list_readable() {
    let server = RedisServer::start();
    let client = server.client().await;
    let mut conn = server.connection().await;
    let ids = enqueue_ids(&client, "q", &jobs(2)).await;
    let leased = client.fetch("q", 2, LEASE, HOST).await.unwrap();
    let dead: Vec<Failure> = leased
        .iter()
        .map(|job| Failure::new(job, "fail", "x").permanent())
        .collect();
    client.fail("q", &dead).await.unwrap();
    let () = conn.set(job_key("q", &ids[0]), "by hand").await.unwrap();

    let err = client.dead_letters("q", 0, 10).await.unwrap_err();
    assert!(
        matches!(err, wasmq::queue::QueueError::MalformedJob { ref id, .. } if *id == ids[0]),
        "{err:?}"
    );
    client.check("q", true).await.unwrap();
    let listed = client.dead_letters("q", 0, 10).await.unwrap();
    assert_eq!(
        sorted(listed.iter().map(|job| job.id.clone())),
        sorted(ids.clone())
    );
    assert_buried(&client, "q", &ids[0], "holds a string").await;
}

#[tokio::test]
async fn a_seq_events_or_wake_key_of_the_wrong_type_does_not_stop_a_call_half_way() {
    let server = RedisServer::start();
    let client = server.client().await;
    let mut conn = server.connection().await;
    let new: Vec<NewJob> = jobs(3)
        .into_iter()
        .map(|job| job.with_backoff(Backoff::fixed(Duration::ZERO)))
        .collect();
    let ids = enqueue_ids(&client, "q", &new).await;
    let leased = client.fetch("q", 3, LEASE, HOST).await.unwrap();
    let () = conn
        .set(set_key("q", "seq"), "not a counter")
        .await
        .unwrap();
    let () = conn
        .set(set_key("q", "events"), "not a stream")
        .await
        .unwrap();
    let () = conn.del(set_key("q", "wake")).await.unwrap();
    let () = conn
        .hset(set_key("q", "wake"), "not", "a list")
        .await
        .unwrap();

    // Each failed job goes straight back to waiting: that takes a sequence number, writes an
    // event and wakes a worker, after the jobs were written.
    let failed: Vec<Failure> = leased
        .iter()
        .map(|job| Failure::new(job, "trap", "x"))
        .collect();
    let report = client.fail("q", &failed).await.unwrap();
    assert_eq!(report.outcomes.len(), 3);
    assert_eq!(client.counts("q").await.unwrap().waiting, 3);
    let seq: u64 = conn.get(set_key("q", "seq")).await.unwrap();
    assert!(
        seq > 1_000_000_000_000,
        "the counter restarts from the clock: {seq}"
    );
    let again = client.fetch("q", 3, LEASE, HOST).await.unwrap();
    assert_eq!(leased_ids(&again), sorted(ids));

    let report = client.check("q", true).await.unwrap();
    let wrong: BTreeSet<String> = report
        .findings
        .iter()
        .filter(|f| f.kind == "wrong_type" && !f.repaired)
        .map(|f| f.subject.clone())
        .collect();
    assert_eq!(
        wrong,
        BTreeSet::from([set_key("q", "events"), set_key("q", "wake")])
    );
    assert_eq!(report.findings.len(), 2, "{:#?}", report.findings);
}

/// A small seeded generator, so that a failing run can be replayed with its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // SplitMix64.
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// What the test does to a job key (or, for `Ghost`, to a set).
#[derive(Debug, Clone, Copy)]
enum Corruption {
    StringKey,
    ListKey,
    Field(&'static str, &'static str),
    Missing(&'static str),
}

const CORRUPTIONS: &[Corruption] = &[
    Corruption::StringKey,
    Corruption::ListKey,
    Corruption::Field("priority", "nan"),
    Corruption::Field("attempt", "two"),
    Corruption::Field("max_attempts", "1.5"),
    Corruption::Field("backoff_jitter", "nan"),
    Corruption::Field("backoff_ms", "inf"),
    Corruption::Field("created_at", "-1"),
    Corruption::Field("state", "sleeping"),
    // States that contradict the set the job is in.
    Corruption::Field("state", "completed"),
    Corruption::Field("state", "waiting"),
    Corruption::Missing("state"),
    Corruption::Missing("handler"),
];

async fn corrupt(conn: &mut RedisConnection, queue: &str, id: &str, corruption: Corruption) {
    let key = job_key(queue, id);
    match corruption {
        Corruption::StringKey => {
            let () = conn.set(&key, "a string").await.unwrap();
        }
        Corruption::ListKey => make_list(conn, queue, id).await,
        Corruption::Field(field, value) => {
            let () = conn.hset(&key, field, value).await.unwrap();
        }
        Corruption::Missing(field) => {
            let () = conn.hdel(&key, field).await.unwrap();
        }
    }
}

/// Queues of valid jobs in every state, random corruptions in some of their keys and dangling
/// ids in the sets, then two hosts run through it all. Every valid job ends completed or
/// dead-lettered by its own outcome, each exactly once; every corrupted one ends in the
/// dead-letter queue as `malformed` or is reported by `queue check`, and a repair leaves a
/// check with nothing to find; no host exits. The seed is `WASMQ_CORRUPTION_SEED` (printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_run_every_valid_job_once_through_random_corruption() {
    let seed = std::env::var("WASMQ_CORRUPTION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(19);
    eprintln!("WASMQ_CORRUPTION_SEED={seed}");
    let mut rng = Rng(seed);
    let q = "corrupt";
    let server = RedisServer::start();
    let client = server.client().await;
    keep_everything(&client, q).await;
    let mut conn = server.connection().await;

    // Per state, 8 jobs: echo (completes) or fail (dead-letters itself, outcome `fail`).
    let mut planned: BTreeMap<String, (JobState, &str)> = BTreeMap::new();
    // Those set up by a fetch first, so that each fetch takes its own jobs.
    let order = [
        JobState::Completed,
        JobState::Dead,
        JobState::Active,
        JobState::Retry,
        JobState::Delayed,
        JobState::Waiting,
    ];
    for state in order {
        let handlers: Vec<&str> = (0..8)
            .map(|_| if rng.below(4) == 0 { "fail" } else { "echo" })
            .collect();
        let new: Vec<NewJob> = handlers
            .iter()
            .map(|h| {
                let job = NewJob::new(*h, b"x".to_vec())
                    .with_backoff(Backoff::fixed(Duration::from_millis(200)));
                if state == JobState::Delayed {
                    job.with_delay(Duration::from_millis(300))
                } else {
                    job
                }
            })
            .collect();
        let ids = enqueue_ids(&client, q, &new).await;
        let lease = Duration::from_millis(if state == JobState::Active {
            300
        } else {
            60_000
        });
        let leased = match state {
            JobState::Waiting | JobState::Delayed => Vec::new(),
            _ => client.fetch(q, ids.len(), lease, HOST).await.unwrap(),
        };
        if !leased.is_empty() {
            assert_eq!(leased_ids(&leased), sorted(ids.clone()), "{state}");
        }
        match state {
            JobState::Retry => {
                let failed: Vec<Failure> = leased
                    .iter()
                    .map(|j| Failure::new(j, "trap", "setup"))
                    .collect();
                client.fail(q, &failed).await.unwrap();
            }
            JobState::Completed => {
                let done: Vec<Completion> = leased
                    .iter()
                    .map(|j| Completion::new(j, b"setup".to_vec()))
                    .collect();
                client.complete(q, &done).await.unwrap();
            }
            JobState::Dead => {
                let failed: Vec<Failure> = leased
                    .iter()
                    .map(|j| Failure::new(j, "setup_dead", "setup"))
                    .collect();
                client.dead_letter(q, &failed).await.unwrap();
            }
            _ => {}
        }
        for (id, h) in ids.into_iter().zip(handlers) {
            planned.insert(id, (state, h));
        }
    }
    let all: Vec<String> = planned.keys().cloned().collect();
    let mut corrupted: BTreeMap<String, Corruption> = BTreeMap::new();
    while corrupted.len() < all.len() / 4 {
        let id = &all[rng.below(all.len())];
        let corruption = CORRUPTIONS[rng.below(CORRUPTIONS.len())];
        // Writing the state a job already has is no corruption.
        let same =
            matches!(corruption, Corruption::Field("state", s) if s == planned[id].0.as_str());
        if !same && !corrupted.contains_key(id) {
            corrupt(&mut conn, q, id, corruption).await;
            corrupted.insert(id.clone(), corruption);
        }
    }
    let mut ghosts = Vec::new();
    for i in 0..6 {
        let ghost = format!("ghost-{i}");
        let set = JobState::ALL[rng.below(JobState::ALL.len())].as_str();
        let () = conn.zadd(set_key(q, set), &ghost, 1).await.unwrap();
        ghosts.push(ghost);
    }
    eprintln!("corrupted: {corrupted:?}");

    let args = [
        "--queues",
        q,
        "--lease",
        "2s",
        "--handler",
        &handler("echo", "echo"),
        "--handler",
        &handler("fail", "fail"),
    ];
    let mut hosts = [
        HostProcess::builder(&server.url()).args(args).start(),
        HostProcess::builder(&server.url()).args(args).start(),
    ];

    // A second wave while the hosts run: new jobs, some corrupted at once, racing the hosts
    // (only corruptions that are never a job's own state, whatever it reached meanwhile).
    let handlers: Vec<&str> = (0..24)
        .map(|_| if rng.below(4) == 0 { "fail" } else { "echo" })
        .collect();
    let new: Vec<NewJob> = handlers
        .iter()
        .map(|h| NewJob::new(*h, b"y".to_vec()).with_backoff(Backoff::fixed(Duration::ZERO)))
        .collect();
    let wave = enqueue_ids(&client, q, &new).await;
    for (id, h) in wave.iter().zip(handlers) {
        planned.insert(id.clone(), (JobState::Waiting, h));
    }
    let racing: Vec<Corruption> = CORRUPTIONS
        .iter()
        .copied()
        .filter(|c| !matches!(c, Corruption::Field("state", "completed" | "waiting")))
        .collect();
    for _ in 0..6 {
        let id = &wave[rng.below(wave.len())];
        if !corrupted.contains_key(id) {
            let corruption = racing[rng.below(racing.len())];
            corrupt(&mut conn, q, id, corruption).await;
            corrupted.insert(id.clone(), corruption);
        }
    }

    eventually("no job left to run", Duration::from_secs(60), || async {
        let counts = client.counts(q).await.ok()?;
        (counts.waiting + counts.delayed + counts.active + counts.retry == 0).then_some(())
    })
    .await;
    for host in &mut hosts {
        assert!(host.is_running(), "a host exited:\n{}", host.log_text());
    }

    let report = client.check(q, false).await.unwrap();
    let reported: BTreeSet<&str> = report.findings.iter().map(|f| f.subject.as_str()).collect();
    for (id, (state, handler)) in &planned {
        if let Some(corruption) = corrupted.get(id) {
            let buried = match client.get(q, id).await {
                Ok(Some(job)) => {
                    job.state == JobState::Dead && job.last_outcome.as_deref() == Some("malformed")
                }
                _ => false,
            };
            assert!(
                buried || reported.contains(id.as_str()),
                "{id} ({state}, {corruption:?}) is neither dead as malformed nor reported"
            );
            continue;
        }
        let job = client.get(q, id).await.unwrap().unwrap();
        let ok_runs = job.history.iter().filter(|a| a.outcome == "ok").count();
        match (*state, *handler) {
            (JobState::Completed, _) => {
                assert_eq!(job.state, JobState::Completed, "{id}");
                assert_eq!(job.result.as_deref(), Some(&b"setup"[..]));
                assert_eq!(ok_runs, 1, "{id}");
            }
            (JobState::Dead, _) => {
                assert_eq!(job.state, JobState::Dead, "{id}");
                assert_eq!(job.last_outcome.as_deref(), Some("setup_dead"), "{id}");
            }
            (_, "echo") => {
                assert_eq!(job.state, JobState::Completed, "{id} {state}");
                assert_eq!(ok_runs, 1, "{id}: {:?}", job.history);
            }
            _ => {
                assert_eq!(job.state, JobState::Dead, "{id} {state}");
                assert_eq!(job.last_outcome.as_deref(), Some("fail"), "{id}");
                assert_eq!(ok_runs, 0, "{id}");
            }
        }
        assert!(
            !reported.contains(id.as_str()),
            "{id} is valid but reported"
        );
    }
    for ghost in &ghosts {
        let mut held = false;
        for state in JobState::ALL {
            let score: Option<f64> = conn
                .zscore(set_key(q, state.as_str()), ghost)
                .await
                .unwrap();
            held |= score.is_some();
        }
        assert!(
            !held || reported.contains(ghost.as_str()),
            "{ghost} is still in a set and not reported"
        );
    }

    // A repair leaves nothing for the next check to find, and the hosts run on.
    let repaired = client.check(q, true).await.unwrap();
    assert_eq!(repaired.unrepaired(), 0, "{:#?}", repaired.findings);
    assert_consistent(&client, q).await;
    for host in &mut hosts {
        assert!(host.is_running(), "a host exited:\n{}", host.log_text());
    }
}

/// The transitions driven with one queue key of another type (`refused_*` tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Enqueue,
    Fetch,
    Complete,
    CompleteFetch,
    Fail,
    DeadLetter,
    Extend,
    Release,
    Recover,
    Promote,
    Replay,
    Purge,
    Cancel,
    /// Cancel by handler (`cancel_filter.lua`), page by page.
    CancelHandler,
    Pause,
    Resume,
    Save,
    Suspend,
}

/// Each transition with each queue key it writes in the scene `scene` sets up (its config
/// too, which all read first). `steps` is the first leased job's step hash.
const REFUSALS: &[(Step, &str)] = &[
    (Step::Enqueue, "waiting"),
    (Step::Enqueue, "g:t:waiting"),
    (Step::Fetch, "config"),
    (Step::Fetch, "waiting"),
    (Step::Fetch, "delayed"),
    (Step::Fetch, "active"),
    (Step::Fetch, "seq"),
    (Step::Fetch, "groups"),
    (Step::Fetch, "g:t:waiting"),
    // With rate limits on (see the test): the start logs.
    (Step::Fetch, "rate"),
    (Step::Fetch, "g:t:rate"),
    (Step::CompleteFetch, "rate"),
    (Step::Complete, "config"),
    (Step::Complete, "active"),
    (Step::Complete, "completed"),
    (Step::CompleteFetch, "completed"),
    (Step::CompleteFetch, "active"),
    (Step::CompleteFetch, "waiting"),
    (Step::CompleteFetch, "g:t:waiting"),
    (Step::Fail, "config"),
    (Step::Fail, "active"),
    (Step::Fail, "retry"),
    (Step::Fail, "waiting"),
    (Step::Fail, "seq"),
    (Step::Fail, "groups"),
    (Step::Fail, "g:t:waiting"),
    (Step::DeadLetter, "active"),
    (Step::DeadLetter, "dead"),
    (Step::Extend, "active"),
    (Step::Release, "active"),
    (Step::Release, "waiting"),
    (Step::Release, "groups"),
    (Step::Release, "g:t:waiting"),
    (Step::Recover, "config"),
    (Step::Recover, "active"),
    (Step::Recover, "retry"),
    (Step::Recover, "waiting"),
    (Step::Recover, "seq"),
    (Step::Recover, "g:t:waiting"),
    (Step::Promote, "config"),
    (Step::Promote, "delayed"),
    (Step::Promote, "waiting"),
    (Step::Promote, "seq"),
    (Step::Promote, "groups"),
    (Step::Promote, "g:t:waiting"),
    (Step::Replay, "config"),
    (Step::Replay, "dead"),
    (Step::Replay, "waiting"),
    (Step::Replay, "seq"),
    (Step::Replay, "g:t:waiting"),
    (Step::Purge, "dead"),
    (Step::Cancel, "waiting"),
    (Step::Cancel, "delayed"),
    (Step::Cancel, "groups"),
    (Step::Cancel, "g:t:waiting"),
    (Step::Cancel, "active"),
    (Step::Cancel, "dead"),
    (Step::CancelHandler, "config"),
    (Step::CancelHandler, "waiting"),
    (Step::CancelHandler, "delayed"),
    (Step::CancelHandler, "retry"),
    (Step::CancelHandler, "groups"),
    (Step::CancelHandler, "dead"),
    (Step::Pause, "config"),
    (Step::Resume, "config"),
    (Step::Save, "steps"),
    (Step::Suspend, "active"),
    (Step::Suspend, "delayed"),
];

/// Six jobs, each a way into a set: plain and grouped (group `t`), due now or due after 1 ms
/// (delayed), retrying at once (straight back to waiting) or after 30 ms (`retry`). With
/// `leased`, all six are leased (`lease`), and with `dead` dead-lettered; a complete_fetch
/// scene leases two, so that it has jobs left to lease. Returns the ids and the leases.
async fn scene(client: &Client, q: &str, step: Step) -> (Vec<String>, Vec<LeasedJob>) {
    let at_once = Backoff::fixed(Duration::ZERO);
    let soon = Backoff::fixed(Duration::from_millis(30));
    let new = vec![
        NewJob::new("h", b"p0".to_vec()).with_backoff(at_once),
        NewJob::new("h", b"p1".to_vec()).with_backoff(soon),
        NewJob::new("h", b"g0".to_vec())
            .with_group("t")
            .with_backoff(at_once),
        NewJob::new("h", b"g1".to_vec())
            .with_group("t")
            .with_backoff(at_once),
        NewJob::new("h", b"d0".to_vec())
            .with_delay(Duration::from_millis(1))
            .with_backoff(soon),
        NewJob::new("h", b"d1".to_vec())
            .with_group("t")
            .with_delay(Duration::from_millis(1))
            .with_backoff(at_once),
    ];
    let ids = enqueue_ids(client, q, &new).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let lease = if step == Step::Recover {
        Duration::from_millis(1)
    } else {
        LEASE
    };
    let leased = match step {
        Step::Enqueue
        | Step::Fetch
        | Step::Promote
        | Step::Cancel
        | Step::CancelHandler
        | Step::Pause
        | Step::Resume => Vec::new(),
        Step::CompleteFetch => client.fetch(q, 2, lease, HOST).await.unwrap(),
        _ => {
            let leased = client.fetch(q, 10, lease, HOST).await.unwrap();
            assert_eq!(leased_ids(&leased), sorted(ids.clone()), "{step:?}");
            leased
        }
    };
    if matches!(step, Step::Replay | Step::Purge) {
        let dead: Vec<Failure> = leased
            .iter()
            .map(|job| Failure::new(job, "fail", "x").permanent())
            .collect();
        client.dead_letter(q, &dead).await.unwrap();
    }
    if step == Step::Recover {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if step == Step::Resume {
        client.pause(q).await.unwrap();
    }
    (ids, leased)
}

/// Runs `step` on the scene; returns the jobs it leaves leased (for `finish` to complete).
async fn drive(
    client: &Client,
    q: &str,
    step: Step,
    ids: &[String],
    leased: &[LeasedJob],
) -> Result<Vec<LeasedJob>, wasmq::queue::QueueError> {
    let leases: Vec<wasmq::queue::Lease> = leased.iter().map(LeasedJob::lease).collect();
    let done: Vec<Completion> = leased
        .iter()
        .map(|job| Completion::new(job, b"ok".to_vec()))
        .collect();
    let failed: Vec<Failure> = leased
        .iter()
        .map(|job| Failure::new(job, "trap", "x"))
        .collect();
    Ok(match step {
        Step::Enqueue => {
            let new = [
                NewJob::new("h", b"e0".to_vec()).with_id("e0"),
                NewJob::new("h", b"e1".to_vec())
                    .with_id("e1")
                    .with_group("t"),
            ];
            client.enqueue_bulk(q, &new).await?;
            Vec::new()
        }
        Step::Fetch => client.fetch_batch(q, 10, LEASE, HOST).await?.jobs,
        Step::Complete => {
            client.complete(q, &done).await?;
            Vec::new()
        }
        Step::CompleteFetch => {
            let (report, fetched) = client.complete_and_fetch(q, &done, 10, LEASE, HOST).await?;
            assert_eq!(report.completed.len(), 2);
            assert_eq!(fetched.jobs.len(), 4);
            fetched.jobs
        }
        Step::Fail => {
            client.fail(q, &failed).await?;
            Vec::new()
        }
        Step::DeadLetter => {
            let dead: Vec<Failure> = failed.into_iter().map(Failure::permanent).collect();
            client.dead_letter(q, &dead).await?;
            Vec::new()
        }
        Step::Extend => {
            client.extend(q, &leases, LEASE).await?;
            leased.to_vec()
        }
        Step::Release => {
            client.release(q, &leases).await?;
            Vec::new()
        }
        Step::Recover => {
            let report = client.recover_expired(q, 100, &[]).await?;
            assert_eq!(report.outcomes.len(), 6);
            Vec::new()
        }
        Step::Promote => {
            let (moved, _) = client.promote(q, 100).await?;
            assert_eq!(moved, 2);
            Vec::new()
        }
        Step::Replay => {
            client.replay(q, ids).await?;
            Vec::new()
        }
        Step::Purge => {
            client.purge(q, ids).await?;
            Vec::new()
        }
        Step::Cancel => {
            client.cancel(q, ids).await?;
            Vec::new()
        }
        Step::CancelHandler => {
            let filter = wasmq::queue::CancelFilter::Handler("h".to_string());
            let by = wasmq::queue::CancelBy::new("test", "");
            let mut cursor = None;
            loop {
                let page = client
                    .cancel_matching(q, &filter, &by, cursor.as_deref(), 2)
                    .await?;
                match page.cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            Vec::new()
        }
        Step::Pause => {
            client.pause(q).await?;
            client.resume(q).await.unwrap();
            Vec::new()
        }
        Step::Resume => {
            client.resume(q).await?;
            Vec::new()
        }
        Step::Save => {
            let job = &leased[0];
            client
                .save_step(q, &job.id, &job.token, "run:a", b"v")
                .await?;
            leased.to_vec()
        }
        Step::Suspend => {
            let sleeps: Vec<Suspension> = leased
                .iter()
                .map(|job| Suspension::new(job, "sleep:a", Duration::from_millis(5)))
                .collect();
            client.suspend(q, &sleeps).await?;
            Vec::new()
        }
    })
}

/// Runs the queue dry: completes `held` and whatever becomes due, until nothing is left to
/// run (dead jobs stay dead).
async fn finish(client: &Client, q: &str, held: Vec<LeasedJob>) {
    let mut leased = held;
    for _ in 0..500 {
        if !leased.is_empty() {
            let done: Vec<Completion> = leased
                .iter()
                .map(|job| Completion::new(job, b"ok".to_vec()))
                .collect();
            let report = client.complete(q, &done).await.unwrap();
            assert!(report.rejected.is_empty(), "{:?}", report.rejected);
        }
        client.recover_expired(q, 100, &[]).await.unwrap();
        leased = client.fetch(q, 100, LEASE, HOST).await.unwrap();
        let counts = client.counts(q).await.unwrap();
        if leased.is_empty() && counts.waiting + counts.delayed + counts.active + counts.retry == 0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("queue {q} never ran dry: {:?}", client.counts(q).await);
}

// Redis keeps a call's writes when a later command fails. Every transition checks the type of
// each queue key it writes before its first write: with one of another type it is refused
// (WASMQ_WRONGTYPE naming the key) and the keyspace is as it was; once the key is put back,
// the same call goes through and every job ends exactly once.
#[tokio::test]
async fn a_queue_key_of_another_type_refuses_each_transition_before_it_writes_anything() {
    let server = RedisServer::start();
    let client = server.client().await;
    let mut conn = server.connection().await;
    for (n, (step, key)) in REFUSALS.iter().enumerate() {
        let q = format!("r{n}");
        keep_everything(&client, &q).await;
        if key.ends_with("rate") {
            // Limits that hold nothing back, so that every start is logged.
            let limit = wasmq::queue::RateLimit::new(1000, Duration::from_secs(60)).unwrap();
            let config = wasmq::queue::QueueConfig {
                completed_keep: None,
                rate: Some(limit),
                group_rate: Some(limit),
                ..wasmq::queue::QueueConfig::default()
            };
            client.set_config(&q, &config).await.unwrap();
        }
        let (ids, leased) = scene(&client, &q, *step).await;
        let full = if *key == "steps" {
            format!("wasmq:{{{q}}}:steps:{}", leased[0].id)
        } else {
            set_key(&q, key)
        };
        let saved: Option<Vec<u8>> = redis::cmd("DUMP")
            .arg(&full)
            .query_async(&mut conn)
            .await
            .unwrap();
        let () = conn.del(&full).await.unwrap();
        // A `seq` that holds text is a counter restarted (next_seq); a hash is no counter.
        let () = if *key == "seq" {
            conn.hset(&full, "by", "hand").await.unwrap()
        } else {
            conn.set(&full, "by hand").await.unwrap()
        };
        let before = server.snapshot().await;

        let err = drive(&client, &q, *step, &ids, &leased).await.unwrap_err();
        assert!(
            matches!(&err, wasmq::queue::QueueError::WrongType { key, found }
                if *key == full && found.starts_with(if full.ends_with("seq") { "hash" } else { "string" })),
            "{step:?} with {full} of another type: {err:?}"
        );
        assert!(err.to_string().contains(&full), "{err}");
        assert_eq!(
            server.snapshot().await,
            before,
            "{step:?} refused for {full} wrote something"
        );

        let () = conn.del(&full).await.unwrap();
        if let Some(dump) = saved {
            let () = redis::cmd("RESTORE")
                .arg(&full)
                .arg(0)
                .arg(dump)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        let held = drive(&client, &q, *step, &ids, &leased)
            .await
            .unwrap_or_else(|err| panic!("{step:?} after {full} was fixed: {err:?}"));
        finish(&client, &q, held).await;

        let mut all = ids.clone();
        if *step == Step::Enqueue {
            all.extend(["e0".to_string(), "e1".to_string()]);
        }
        for id in &all {
            let job = client.get(&q, id).await.unwrap();
            let Some(job) = job else {
                assert_eq!(step, &Step::Purge, "{step:?} {full}: job {id} is gone");
                continue;
            };
            let ok_runs = job.history.iter().filter(|a| a.outcome == "ok").count();
            match job.state {
                JobState::Completed => {
                    // A cancel (of jobs that had not started) leaves none to complete.
                    assert!(
                        !matches!(step, Step::Cancel | Step::CancelHandler),
                        "{step:?} {full}: {id} completed"
                    );
                    assert_eq!(ok_runs, 1, "{step:?} {full} {id}");
                }
                JobState::Dead if matches!(step, Step::Cancel | Step::CancelHandler) => {
                    assert_eq!(
                        job.last_outcome.as_deref(),
                        Some("cancelled"),
                        "{full} {id}"
                    );
                }
                JobState::Dead => {
                    assert_eq!(step, &Step::DeadLetter, "{step:?} {full}: {id} dead");
                    assert_eq!(ok_runs, 0, "{step:?} {full} {id}");
                }
                other => panic!("{step:?} {full}: job {id} ended {other}"),
            }
        }
        let report = client.check(&q, false).await.unwrap();
        assert!(
            report.findings.is_empty(),
            "{step:?} {full}: {:#?}",
            report.findings
        );
    }
}

/// Replaces `key` with a string, returning what it held (its `DUMP`, none if absent).
async fn replace_with_string(conn: &mut RedisConnection, key: &str) -> Option<Vec<u8>> {
    let saved: Option<Vec<u8>> = redis::cmd("DUMP").arg(key).query_async(conn).await.unwrap();
    let () = conn.del(key).await.unwrap();
    let () = conn.set(key, "by hand").await.unwrap();
    saved
}

/// Puts back what `replace_with_string` took: `DEL`, then `RESTORE`.
async fn restore(conn: &mut RedisConnection, key: &str, saved: Option<Vec<u8>>) {
    let () = conn.del(key).await.unwrap();
    if let Some(dump) = saved {
        let () = redis::cmd("RESTORE")
            .arg(key)
            .arg(0)
            .arg(dump)
            .query_async(conn)
            .await
            .unwrap();
    }
}

/// The state field of each job (read from its hash: the queue's sets may be unreadable).
async fn states(conn: &mut RedisConnection, queue: &str, ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids {
        let state: Option<String> = conn.hget(job_key(queue, id), "state").await.unwrap();
        out.push(state.unwrap_or_default());
    }
    out
}

/// Every job completed, by exactly one successful attempt.
async fn assert_completed_once(client: &Client, queue: &str, ids: &[String]) {
    for id in ids {
        let job = client.get(queue, id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Completed, "{queue} {id}");
        let ok_runs = job.history.iter().filter(|a| a.outcome == "ok").count();
        assert_eq!(ok_runs, 1, "{queue} {id}: {:?}", job.history);
    }
}

// A host serving two queues, one of which has a key of another type: the calls on that queue
// are refused with nothing written, the host says so once per key (not "redis unavailable" in
// a loop), serves the other queue meanwhile, keeps the outcomes it could not record, and once
// the key is put back every job of both queues completes exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_serves_its_other_queue_while_one_has_a_key_of_another_type_and_loses_nothing() {
    let server = RedisServer::start();
    let client = server.client().await;
    let mut conn = server.connection().await;
    keep_everything(&client, "a").await;
    keep_everything(&client, "b").await;
    let echo = |n: usize| -> Vec<NewJob> {
        (0..n)
            .map(|i| NewJob::new("echo", format!("{i}").into_bytes()))
            .collect()
    };
    let a_ids = enqueue_ids(&client, "a", &echo(5)).await;
    let a_waiting = set_key("a", "waiting");
    let a_saved = replace_with_string(&mut conn, &a_waiting).await;

    // `queue check` names the key, says how to look at it, and repairs nothing.
    let out = wasmq(&server, &["queue", "check", "a", "--repair"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("wrong_type") && text.contains("wasmq:{a}:waiting"),
        "{text}"
    );
    assert!(text.contains("TYPE wasmq:{a}:waiting"), "{text}");
    let kept: String = conn.get(&a_waiting).await.unwrap();
    assert_eq!(kept, "by hand", "check --repair must not touch it");

    let mut host = HostProcess::builder(&server.url())
        .args([
            "--queues",
            "a,b",
            "--lease",
            "2s",
            "--handler",
            &handler("echo", "echo"),
            "--handler",
            &handler("sleep", "sleep"),
        ])
        .start();
    // Queue b is served while a's fetches are refused.
    let b_ids = enqueue_ids(&client, "b", &echo(5)).await;
    eventually("b's jobs completed", Duration::from_secs(20), || async {
        (client.counts("b").await.ok()?.completed == 5).then_some(())
    })
    .await;
    assert_completed_once(&client, "b", &b_ids).await;
    assert_eq!(
        states(&mut conn, "a", &a_ids).await,
        vec!["waiting"; 5],
        "a's jobs wait, untouched"
    );

    // Outcomes that cannot be recorded are kept: b's `completed` of another type while three
    // of b's jobs run. Their completions are refused, and stay active (heartbeated), not lost.
    let sleepers: Vec<NewJob> = (0..3)
        .map(|_| NewJob::new("sleep", b"800".to_vec()))
        .collect();
    let slow_ids = enqueue_ids(&client, "b", &sleepers).await;
    eventually("b's sleepers running", Duration::from_secs(20), || async {
        (client.counts("b").await.ok()?.active == 3).then_some(())
    })
    .await;
    let b_completed = set_key("b", "completed");
    let b_saved = replace_with_string(&mut conn, &b_completed).await;
    // The sleeps end (800 ms), their completions are refused and retried; the leases (2 s)
    // are kept alive meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        states(&mut conn, "b", &slow_ids).await,
        vec!["active"; 3],
        "completions refused, jobs held"
    );
    assert!(host.is_running(), "{}", host.log_text());

    restore(&mut conn, &a_waiting, a_saved).await;
    restore(&mut conn, &b_completed, b_saved).await;
    eventually("every job completed", Duration::from_secs(20), || async {
        let a = client.counts("a").await.ok()?;
        let b = client.counts("b").await.ok()?;
        (a.completed == 5 && b.completed == 8).then_some(())
    })
    .await;
    assert_completed_once(&client, "a", &a_ids).await;
    assert_completed_once(&client, "b", &b_ids).await;
    assert_completed_once(&client, "b", &slow_ids).await;
    for id in &slow_ids {
        let job = client.get("b", id).await.unwrap().unwrap();
        assert_eq!(
            job.attempt, 1,
            "{id} ran once: its completion was kept, not redone"
        );
    }
    assert_consistent(&client, "a").await;
    assert_consistent(&client, "b").await;

    // One clear error per key, never a Redis outage.
    let log = host.log_text();
    assert!(host.is_running(), "{log}");
    assert!(!log.contains("redis unavailable"), "{log}");
    for key in ["wasmq:{a}:waiting", "wasmq:{b}:completed"] {
        let said = log
            .lines()
            .filter(|line| line.contains("refused") && line.contains(key))
            .count();
        assert_eq!(said, 1, "{key} should be logged once:\n{log}");
    }
}

// A group that has no waiting job yet, only a job due in `delayed`, joins the round robin
// during the fetch that promotes it: its rate log (with a group limit) and its slots (with
// group concurrency) are written by that fetch too, so they are checked before it writes
// anything, with the due jobs' groups, not only with the groups ready when it starts.
#[tokio::test]
async fn a_due_jobs_group_limit_keys_of_another_type_refuse_the_fetch_before_it_writes() {
    let server = RedisServer::start();
    let client = server.client().await;
    let mut conn = server.connection().await;
    let limit = wasmq::queue::RateLimit::new(1000, Duration::from_secs(60)).unwrap();
    for (q, config, key) in [
        (
            "rated",
            wasmq::queue::QueueConfig {
                group_rate: Some(limit),
                ..wasmq::queue::QueueConfig::default()
            },
            "g:u:rate",
        ),
        (
            "slotted",
            wasmq::queue::QueueConfig {
                group_concurrency: Some(2),
                ..wasmq::queue::QueueConfig::default()
            },
            "g:u:active",
        ),
    ] {
        client.set_config(q, &config).await.unwrap();
        let due = NewJob::new("h", b"d".to_vec())
            .with_group("u")
            .with_delay(Duration::from_millis(1));
        let ids = enqueue_ids(&client, q, &[due]).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let full = set_key(q, key);
        let () = conn.set(&full, "by hand").await.unwrap();
        let before = server.snapshot().await;

        let err = client.fetch_batch(q, 10, LEASE, HOST).await.unwrap_err();
        assert!(
            matches!(&err, wasmq::queue::QueueError::WrongType { key, .. } if *key == full),
            "{q}: {err:?}"
        );
        assert_eq!(
            server.snapshot().await,
            before,
            "{q}: the refused fetch wrote"
        );

        let () = conn.del(&full).await.unwrap();
        let fetched = client.fetch_batch(q, 10, LEASE, HOST).await.unwrap();
        assert_eq!(leased_ids(&fetched.jobs), ids, "{q}");
    }
}
