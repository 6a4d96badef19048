//! Dedupe (throttle) keys, debounce keys and expiry, set at enqueue (enqueue.lua; the lease
//! side in lib.lua's lease_jobs). Real redis-server; the expiry of a paused queue with a real
//! `wasmq run` host.
//!
//! The two property tests run random interleavings of enqueues, fetches, completions and
//! clock advances (real sleeps: Redis TIME cannot be faked) against a model, and check what
//! must hold whatever the exact timing. Their seed is printed (`WASMQ_DEDUPE_SEED=<n>` replays
//! a run); `WASMQ_DEDUPE_STEPS` (default 100) makes a longer run, out of CI:
//! `WASMQ_DEDUPE_STEPS=2000 cargo test -p wasmq --test all -- queue::dedupe::`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use redis::AsyncCommands;
use wasmq::connection::RedisConnection;
use wasmq::queue::{Completion, EnqueueOutcome, Expiry, Failure, JobState, NewJob, QueueConfig};

use crate::support::cli::{ok, wasmq};
use crate::support::eventually;
use crate::support::guests::handler;
use crate::support::host::HostProcess;
use crate::support::jobs::{keep_everything, wait_for_count};
use crate::support::redis::RedisServer;

const LEASE: Duration = Duration::from_secs(60);
const HOST: &str = "host-a";

/// A small seeded generator (SplitMix64), so that a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The seed (`WASMQ_DEDUPE_SEED`, else one from the clock: each run explores other
/// interleavings) and the number of steps (`WASMQ_DEDUPE_STEPS`, default 100), printed.
fn seed_and_steps(test: &str) -> (u64, usize) {
    let seed = std::env::var("WASMQ_DEDUPE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let steps = std::env::var("WASMQ_DEDUPE_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    eprintln!("{test}: WASMQ_DEDUPE_SEED={seed} WASMQ_DEDUPE_STEPS={steps}");
    (seed, steps)
}

async fn fields(conn: &mut RedisConnection, queue: &str, id: &str) -> HashMap<String, String> {
    conn.hgetall(format!("wasmq:{{{queue}}}:job:{id}"))
        .await
        .unwrap()
}

fn num(f: &HashMap<String, String>, name: &str) -> u64 {
    f.get(name)
        .unwrap_or_else(|| panic!("no field {name} in {f:?}"))
        .parse()
        .unwrap()
}

/// The debounce key's pending job, as the model knows it.
#[derive(Debug)]
struct Pending {
    id: String,
    /// Redis clock just before and just after the enqueue that created it.
    first: (u64, u64),
    /// Redis clock just before the last enqueue that debounced into it.
    last_before: u64,
    payload: String,
}

/// Random enqueues of 3 debounce keys (window 120 ms, max wait 300 ms), fetches that lease
/// what is due, completions and sleeps. Whatever the timing: every enqueue of a key with a
/// pending job debounces into it (same id) and no other job is created; at most one job per
/// key is pending (not started); the pending job's payload is the last one enqueued; its
/// start is the last enqueue + window, never later than its first enqueue + max wait; a
/// leased job carries the last payload and was due; a running job is never touched (its
/// payload stays what it started with).
#[tokio::test]
async fn debounce_keeps_one_pending_job_per_key_with_the_last_payload() {
    let (seed, steps) = seed_and_steps("debounce");
    let mut rng = Rng(seed);
    const Q: &str = "deb";
    const WINDOW: u64 = 120;
    const MAX_WAIT: u64 = 300;
    let server = RedisServer::start();
    let client = server.client().await;
    keep_everything(&client, Q).await;
    let mut conn = server.connection().await;
    let keys = ["k0", "k1", "k2"];
    let mut pending: HashMap<&str, Pending> = HashMap::new();
    let mut key_of: HashMap<String, &str> = HashMap::new();
    // Running jobs and the payload they started with.
    let mut running: HashMap<String, (wasmq::queue::LeasedJob, String)> = HashMap::new();
    for step in 0..steps {
        let ctx = format!("seed {seed}, step {step}");
        match rng.below(10) {
            0..=4 => {
                let key = keys[rng.below(3) as usize];
                let payload = format!("{key}-{step}");
                let job = NewJob::new("h", payload.clone().into_bytes()).with_debounce(
                    key,
                    Duration::from_millis(WINDOW),
                    Some(Duration::from_millis(MAX_WAIT)),
                );
                let before = server.now_ms().await;
                let r = client.enqueue(Q, &job).await.unwrap();
                let after = server.now_ms().await;
                match pending.get_mut(key) {
                    Some(p) => {
                        assert_eq!(r.outcome, EnqueueOutcome::Debounced, "{ctx}");
                        assert_eq!(r.id, p.id, "{ctx}: debounced into its pending job");
                        assert!(!r.created, "{ctx}");
                        p.payload = payload;
                        p.last_before = before;
                    }
                    None => {
                        assert_eq!(r.outcome, EnqueueOutcome::Created, "{ctx}");
                        assert_eq!(r.state, Some(JobState::Delayed), "{ctx}");
                        key_of.insert(r.id.clone(), key);
                        pending.insert(
                            key,
                            Pending {
                                id: r.id,
                                first: (before, after),
                                last_before: before,
                                payload,
                            },
                        );
                    }
                }
            }
            5..=6 => {
                let jobs = client.fetch(Q, 10, LEASE, HOST).await.unwrap();
                for job in jobs {
                    let key = key_of[&job.id];
                    let p = pending
                        .remove(key)
                        .unwrap_or_else(|| panic!("{ctx}: leased {} not pending", job.id));
                    assert_eq!(p.id, job.id, "{ctx}");
                    assert_eq!(job.payload, p.payload.as_bytes(), "{ctx}: the last payload");
                    let f = fields(&mut conn, Q, &job.id).await;
                    assert!(
                        num(&f, "started_at") >= num(&f, "run_at"),
                        "{ctx}: started before due: {f:?}"
                    );
                    running.insert(job.id.clone(), (job, p.payload));
                }
            }
            7 => {
                let done: Vec<Completion> = running
                    .drain()
                    .map(|(_, (job, _))| Completion::new(&job, vec![]))
                    .collect();
                let report = client.complete(Q, &done).await.unwrap();
                assert_eq!(report.completed.len(), done.len(), "{ctx}");
            }
            _ => tokio::time::sleep(Duration::from_millis(rng.below(WINDOW))).await,
        }
        // The invariants, read back from Redis.
        let mut pending_per_key: HashMap<&str, usize> = HashMap::new();
        for (id, key) in &key_of {
            let f = fields(&mut conn, Q, id).await;
            let state = f["state"].as_str();
            if (state == "delayed" || state == "waiting") && f["attempt"] == "0" {
                *pending_per_key.entry(key).or_default() += 1;
                let p = pending
                    .get(key)
                    .unwrap_or_else(|| panic!("{ctx}: {id} pending, the model has none"));
                assert_eq!(&p.id, id, "{ctx}: a second pending job for {key}");
                assert_eq!(f["payload"], p.payload, "{ctx}: the last payload");
                let run_at = num(&f, "run_at");
                assert!(
                    run_at <= p.first.1 + MAX_WAIT,
                    "{ctx}: start {run_at} past the first enqueue + max wait ({:?})",
                    p.first
                );
                assert!(
                    run_at >= (p.last_before + WINDOW).min(p.first.0 + MAX_WAIT),
                    "{ctx}: start {run_at} not pushed back ({p:?})"
                );
                assert_eq!(num(&f, "debounce_until"), num(&f, "created_at") + MAX_WAIT);
            } else if let Some((_, payload)) = running.get(id) {
                assert_eq!(state, "active", "{ctx}");
                assert_eq!(&f["payload"], payload, "{ctx}: a running job was touched");
            }
        }
        for key in keys {
            assert_eq!(
                pending_per_key.get(key).copied().unwrap_or(0),
                usize::from(pending.contains_key(key)),
                "{ctx}: pending jobs of {key}"
            );
        }
    }
    // Nothing but the jobs the replies named was created.
    let counts = client.counts(Q).await.unwrap();
    assert_eq!(
        counts.waiting + counts.delayed + counts.active + counts.completed,
        key_of.len() as u64,
        "seed {seed}"
    );
}

/// Who holds a dedupe key in the model.
#[derive(Debug)]
struct Holder {
    id: String,
    /// Redis clock just before and just after the enqueue that created it.
    created: (u64, u64),
    /// The state the reply of a deduplicated enqueue must name (None: no longer kept).
    state: Option<JobState>,
}

/// Random enqueues of 3 dedupe keys (TTL 200 ms) in two queues (one keeps completed jobs, one
/// deletes them at once), fetches, completions and sleeps. Whatever the timing: while a key's
/// TTL surely lives, an enqueue is deduplicated and names the first job and its current state
/// (or none once it is no longer kept), whatever became of it; once the TTL has surely passed,
/// a new job is created; no two jobs of a key are created less than a TTL apart (Redis clock);
/// nothing else is created.
#[tokio::test]
async fn dedupe_creates_one_job_per_key_per_ttl() {
    let (seed, steps) = seed_and_steps("dedupe");
    let mut rng = Rng(seed);
    const TTL: u64 = 200;
    let server = RedisServer::start();
    let client = server.client().await;
    let queues = ["keep", "drop"];
    keep_everything(&client, "keep").await;
    let drop_all = QueueConfig {
        completed_keep: Some(0),
        ..QueueConfig::default()
    };
    client.set_config("drop", &drop_all).await.unwrap();
    let keys = ["d0", "d1", "d2"];
    let mut holders: HashMap<(&str, &str), Holder> = HashMap::new();
    let mut owner: HashMap<String, (&str, &str)> = HashMap::new();
    let mut created = HashMap::from([("keep", 0u64), ("drop", 0u64)]);
    let mut running: Vec<(&str, wasmq::queue::LeasedJob)> = Vec::new();
    for step in 0..steps {
        let ctx = format!("seed {seed}, step {step}");
        let q = queues[rng.below(2) as usize];
        match rng.below(10) {
            0..=4 => {
                let key = keys[rng.below(3) as usize];
                let job = NewJob::new("h", format!("{step}").into_bytes())
                    .with_dedupe(key, Duration::from_millis(TTL));
                let before = server.now_ms().await;
                let r = client.enqueue(q, &job).await.unwrap();
                let after = server.now_ms().await;
                let held = holders.get(&(q, key));
                let surely_live = held.is_some_and(|h| after < h.created.0 + TTL);
                let surely_gone = held.is_none_or(|h| before > h.created.1 + TTL + 1);
                if surely_live {
                    let h = held.unwrap();
                    assert_eq!(r.outcome, EnqueueOutcome::Deduplicated, "{ctx}");
                    assert_eq!((&r.id, r.state), (&h.id, h.state), "{ctx}");
                } else if surely_gone {
                    assert_eq!(r.outcome, EnqueueOutcome::Created, "{ctx}: {held:?}");
                }
                match r.outcome {
                    EnqueueOutcome::Created => {
                        assert_eq!(r.state, Some(JobState::Waiting), "{ctx}");
                        if let Some(h) = held {
                            assert!(
                                after >= h.created.0 + TTL,
                                "{ctx}: a second job within the TTL of {h:?}"
                            );
                        }
                        *created.get_mut(q).unwrap() += 1;
                        owner.insert(r.id.clone(), (q, key));
                        holders.insert(
                            (q, key),
                            Holder {
                                id: r.id,
                                created: (before, after),
                                state: Some(JobState::Waiting),
                            },
                        );
                    }
                    EnqueueOutcome::Deduplicated => {
                        let h = held.unwrap_or_else(|| panic!("{ctx}: deduplicated, no holder"));
                        assert_eq!((&r.id, r.state), (&h.id, h.state), "{ctx}");
                    }
                    other => panic!("{ctx}: {other:?}"),
                }
            }
            5..=6 => {
                for job in client.fetch(q, 10, LEASE, HOST).await.unwrap() {
                    if let Some(h) = holders.get_mut(&owner[&job.id])
                        && h.id == job.id
                    {
                        h.state = Some(JobState::Active);
                    }
                    running.push((q, job));
                }
            }
            7 => {
                for (q, job) in running.drain(..) {
                    let report = client
                        .complete(q, &[Completion::new(&job, vec![])])
                        .await
                        .unwrap();
                    assert_eq!(report.completed, vec![job.id.clone()], "{ctx}");
                    if let Some(h) = holders.get_mut(&owner[&job.id])
                        && h.id == job.id
                    {
                        h.state = (q == "keep").then_some(JobState::Completed);
                    }
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(rng.below(TTL))).await,
        }
    }
    for q in queues {
        let c = client.counts(q).await.unwrap();
        let kept = c.waiting + c.active + c.completed;
        if q == "keep" {
            assert_eq!(kept, created[q], "seed {seed}: jobs in {q}");
        } else {
            assert!(kept <= created[q], "seed {seed}: jobs in {q}");
        }
    }
}

/// One call can hold several jobs of one key: the first takes it, the later ones are
/// deduplicated or debounced into it, and the replies name the state at the call's end.
#[tokio::test]
async fn a_batch_dedupes_and_debounces_within_itself() {
    let server = RedisServer::start();
    let client = server.client().await;
    let window = Duration::from_millis(500);
    let jobs = [
        NewJob::new("h", b"a1".to_vec()).with_debounce("a", window, None),
        NewJob::new("h", b"d1".to_vec()).with_dedupe("d", Duration::from_secs(10)),
        NewJob::new("h", b"a2".to_vec()).with_debounce("a", window, None),
        NewJob::new("h", b"d2".to_vec()).with_dedupe("d", Duration::from_secs(10)),
        NewJob::new("h", b"plain".to_vec()),
    ];
    let r = client.enqueue_bulk("q", &jobs).await.unwrap();
    let outcomes: Vec<EnqueueOutcome> = r.iter().map(|e| e.outcome).collect();
    use EnqueueOutcome::*;
    assert_eq!(
        outcomes,
        [Created, Created, Debounced, Deduplicated, Created]
    );
    assert_eq!(r[2].id, r[0].id);
    assert_eq!(r[3].id, r[1].id);
    assert_eq!(r[2].state, Some(JobState::Delayed));
    assert_eq!(r[3].state, Some(JobState::Waiting));
    let a = client.get("q", &r[0].id).await.unwrap().unwrap();
    assert_eq!(a.payload, b"a2");
    assert_eq!(a.state, JobState::Delayed);
    let d = client.get("q", &r[1].id).await.unwrap().unwrap();
    assert_eq!(d.payload, b"d1");
    let counts = client.counts("q").await.unwrap();
    assert_eq!((counts.waiting, counts.delayed), (2, 1));
}

/// A debounce key's pending job that became due (waiting, not leased yet) is still pending:
/// an enqueue replaces its payload and moves it back to delayed; once leased, the key is
/// released and the next enqueue creates a new job; a job that took no max wait is pushed
/// back on every enqueue.
#[tokio::test]
async fn a_due_pending_job_is_pushed_back_and_a_leased_one_releases_its_key() {
    let server = RedisServer::start();
    let client = server.client().await;
    let mut conn = server.connection().await;
    let window = Duration::from_millis(100);
    let first = client
        .enqueue(
            "q",
            &NewJob::new("h", b"1".to_vec()).with_debounce("k", window, None),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Due: a promote moves it to waiting.
    assert_eq!(client.promote("q", 100).await.unwrap().0, 1);
    assert_eq!(
        client.get("q", &first.id).await.unwrap().unwrap().state,
        JobState::Waiting
    );
    let again = client
        .enqueue(
            "q",
            &NewJob::new("h", b"2".to_vec()).with_debounce("k", window, None),
        )
        .await
        .unwrap();
    assert_eq!(
        (again.outcome, again.id.as_str(), again.state),
        (
            EnqueueOutcome::Debounced,
            first.id.as_str(),
            Some(JobState::Delayed)
        )
    );
    let job = client.get("q", &first.id).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.payload.as_slice()),
        (JobState::Delayed, &b"2"[..])
    );
    assert_eq!(client.counts("q").await.unwrap().waiting, 0);
    assert!(client.fetch("q", 10, LEASE, HOST).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let leased = client.fetch("q", 10, LEASE, HOST).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].payload, b"2");
    let key: Option<String> = conn.get("wasmq:{q}:debounce:k").await.unwrap();
    assert_eq!(key, None, "the lease released the key");
    let third = client
        .enqueue(
            "q",
            &NewJob::new("h", b"3".to_vec()).with_debounce("k", window, None),
        )
        .await
        .unwrap();
    assert_eq!(third.outcome, EnqueueOutcome::Created);
    assert_ne!(third.id, first.id);
    let running = client.get("q", &first.id).await.unwrap().unwrap();
    assert_eq!(
        (running.state, running.payload.as_slice()),
        (JobState::Active, &b"2"[..])
    );
}

/// Bad flow fields are refused with nothing written, and a producer with the 9 keys of
/// before gets a clear error for a dedupe key.
#[tokio::test]
async fn bad_flow_fields_are_refused_and_write_nothing() {
    let server = RedisServer::start();
    let client = server.client().await;
    client
        .enqueue("q", &NewJob::new("h", vec![]).with_id("seed"))
        .await
        .unwrap();
    let before = server.snapshot().await;
    let keys9: Vec<String> = [
        "job:", "config", "waiting", "delayed", "seq", "events", "wake", "g:", "groups",
    ]
    .iter()
    .map(|k| format!("wasmq:{{q}}:{k}"))
    .collect();
    let mut keys11 = keys9.clone();
    keys11.push("wasmq:{q}:dedupe:".into());
    keys11.push("wasmq:{q}:debounce:".into());
    let cases: &[(&[String], &[&str], &str)] = &[
        (
            &keys9,
            &["dedupe_key", "k", "dedupe_ttl_ms", "5"],
            "needs 11 keys",
        ),
        (
            &keys11,
            &["dedupe_key", "k"],
            "dedupe_key and dedupe_ttl_ms go together",
        ),
        (
            &keys11,
            &["dedupe_key", "k", "dedupe_ttl_ms", "0"],
            "dedupe_ttl_ms must be",
        ),
        (
            &keys11,
            &["debounce_key", "a b", "debounce_ms", "5"],
            "debounce_key must be",
        ),
        (
            &keys11,
            &["debounce_key", "k", "debounce_ms", "5", "delay_ms", "1"],
            "takes no delay_ms",
        ),
        (
            &keys11,
            &["debounce_max_wait_ms", "5"],
            "needs a debounce_key",
        ),
        (
            &keys11,
            &["expires_in_ms", "5", "expires_at_ms", "5"],
            "give expires_in_ms or expires_at_ms",
        ),
        (&keys11, &["expires_in_ms", "-5"], "expires_in_ms must be"),
    ];
    for (keys, fields, expected) in cases {
        let mut args = vec!["1", "j1"];
        let n = (fields.len() / 2 + 1).to_string();
        args.push(&n);
        args.extend(["handler", "h"]);
        args.extend(fields.iter());
        let mut conn = server.connection().await;
        let err = redis::cmd("EVAL")
            .arg(wasmq::queue::ENQUEUE_LUA)
            .arg(keys.len())
            .arg(*keys)
            .arg(&args)
            .query_async::<redis::Value>(&mut conn)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{fields:?}: {err}");
        assert_eq!(
            server.snapshot().await,
            before,
            "{fields:?} wrote something"
        );
    }
    // A dedupe key of another type: WRONGTYPE, nothing written.
    let mut conn = server.connection().await;
    let () = conn.lpush("wasmq:{q}:dedupe:k", "x").await.unwrap();
    let before = server.snapshot().await;
    let err = client
        .enqueue(
            "q",
            &NewJob::new("h", vec![]).with_dedupe("k", Duration::from_secs(1)),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("wasmq:{q}:dedupe:k holds a list"), "{err}");
    assert_eq!(server.snapshot().await, before);

    // A call that debounces a stored job and creates another, with `seq` damaged: refused
    // before the debounced job is written.
    let window = Duration::from_secs(60);
    client
        .enqueue(
            "q",
            &NewJob::new("h", b"1".to_vec()).with_debounce("d", window, None),
        )
        .await
        .unwrap();
    let () = conn.set("wasmq:{q}:seq", "x").await.unwrap();
    let before = server.snapshot().await;
    let err = client
        .enqueue_bulk(
            "q",
            &[
                NewJob::new("h", b"2".to_vec()).with_debounce("d", window, None),
                NewJob::new("h", b"new".to_vec()),
            ],
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("wasmq:{q}:seq"), "{err}");
    assert_eq!(server.snapshot().await, before, "nothing written");
}

/// A job not started by its expiry is dead-lettered as `expired` when a fetch would lease it:
/// state dead, in the dead set, outcome and history `expired`, a `dead` event; a retry due
/// after the expiry too; a job within its expiry runs.
#[tokio::test]
async fn an_expired_job_is_dead_lettered_instead_of_leased() {
    let server = RedisServer::start();
    let client = server.client().await;
    keep_everything(&client, "q").await;
    let soon = Expiry::In(Duration::from_millis(100));
    let expiring = client
        .enqueue("q", &NewJob::new("h", b"late".to_vec()).with_expiry(soon))
        .await
        .unwrap();
    let later = SystemTime::now() + Duration::from_secs(60);
    let fine = client
        .enqueue(
            "q",
            &NewJob::new("h", b"fine".to_vec()).with_expiry(Expiry::At(later)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let leased = client.fetch("q", 10, LEASE, HOST).await.unwrap();
    assert_eq!(
        leased.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        [fine.id.as_str()]
    );
    let dead = client.get("q", &expiring.id).await.unwrap().unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.attempt, 0);
    assert_eq!(dead.started_at_ms, None);
    assert_eq!(dead.last_outcome.as_deref(), Some("expired"));
    assert_eq!(dead.history.len(), 1);
    assert_eq!(dead.history[0].outcome, "expired");
    let dlq = client.dead_letters("q", 0, 10).await.unwrap();
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].id, expiring.id);
    let events = client.events("q", None, 100).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.event == "dead" && e.jobs == [(expiring.id.clone(), 0)]),
        "{events:?}"
    );
    // A replay clears the expiry: the job runs.
    client
        .replay("q", std::slice::from_ref(&expiring.id))
        .await
        .unwrap();
    let replayed = client.fetch("q", 10, LEASE, HOST).await.unwrap();
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].id, expiring.id);
    client
        .complete("q", &[Completion::new(&replayed[0], vec![])])
        .await
        .unwrap();

    // A retry due after the expiry: dead-lettered too, its history keeps the attempt.
    let retried = client
        .enqueue(
            "q",
            &NewJob::new("h", b"retry".to_vec())
                .with_expiry(Expiry::In(Duration::from_millis(300)))
                .with_backoff(wasmq::queue::Backoff::fixed(Duration::from_millis(400))),
        )
        .await
        .unwrap();
    let job = client.fetch("q", 10, LEASE, HOST).await.unwrap().remove(0);
    assert_eq!(job.id, retried.id);
    client
        .fail("q", &[Failure::new(&job, "fail", "boom")])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(client.fetch("q", 10, LEASE, HOST).await.unwrap().is_empty());
    let dead = client.get("q", &retried.id).await.unwrap().unwrap();
    assert_eq!((dead.state, dead.attempt), (JobState::Dead, 1));
    let outcomes: Vec<&str> = dead.history.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["fail", "expired"]);
}

/// A paused queue with an expired job: a real host leases nothing while paused; on resume it
/// runs the job within its expiry and dead-letters the expired one, which never runs.
#[tokio::test]
async fn a_paused_queue_dead_letters_its_expired_job_on_resume() {
    const Q: &str = "paused";
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, Q).await;
    client.pause(Q).await.unwrap();
    let expiring = client
        .enqueue(
            Q,
            &NewJob::new("echo", b"late".to_vec())
                .with_expiry(Expiry::In(Duration::from_millis(300))),
        )
        .await
        .unwrap();
    let plain = client
        .enqueue(Q, &NewJob::new("echo", b"on time".to_vec()))
        .await
        .unwrap();
    let _host = HostProcess::builder(&redis.url())
        .args(["--queues", Q, "--handler", &handler("echo", "echo")])
        .start();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        client.counts(Q).await.unwrap().waiting,
        2,
        "paused: nothing ran"
    );
    client.resume(Q).await.unwrap();
    wait_for_count(&client, Q, JobState::Completed, 1, Duration::from_secs(20)).await;
    let done = client.get(Q, &plain.id).await.unwrap().unwrap();
    assert_eq!(done.result.as_deref(), Some(&b"on time"[..]));
    let dead = eventually(
        "the expired job dead-lettered",
        Duration::from_secs(10),
        || async {
            let job = client.get(Q, &expiring.id).await.unwrap().unwrap();
            (job.state == JobState::Dead).then_some(job)
        },
    )
    .await;
    assert_eq!(dead.last_outcome.as_deref(), Some("expired"));
    assert_eq!((dead.attempt, dead.result, dead.host), (0, None, None));
    assert_eq!(dead.history.len(), 1);
    assert_eq!(client.counts(Q).await.unwrap().completed, 1);
}

/// `wasmq enqueue` with the flags: a second enqueue with the dedupe key prints the first job's
/// id and says so; a debounced one prints the pending job's; an expiry is stored.
#[tokio::test]
async fn the_cli_enqueues_with_dedupe_debounce_and_expiry() {
    let server = RedisServer::start();
    let client = server.client().await;
    let run = |args: &[&str]| {
        let out = wasmq(&server, args);
        let stdout = ok(&out);
        (
            stdout.trim().to_string(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let dedupe = ["--dedupe-key", "order-7", "--dedupe-ttl", "1m"];
    let (first, _) = run(&[&["enqueue", "cli", "h", "--payload", "1"][..], &dedupe].concat());
    let (again, said) = run(&[&["enqueue", "cli", "h", "--payload", "2"][..], &dedupe].concat());
    assert_eq!(again, first);
    assert!(said.contains("dedupe key is taken"), "{said}");
    let debounce = [
        "--debounce-key",
        "u1",
        "--debounce",
        "1m",
        "--debounce-max-wait",
        "5m",
    ];
    let (pending, _) = run(&[&["enqueue", "cli", "h", "--payload", "a"][..], &debounce].concat());
    let (debounced, said) =
        run(&[&["enqueue", "cli", "h", "--payload", "b"][..], &debounce].concat());
    assert_eq!(debounced, pending);
    assert!(said.contains("debounced into the pending job"), "{said}");
    let job = client.get("cli", &pending).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.payload.as_slice()),
        (JobState::Delayed, &b"b"[..])
    );
    let (expiring, _) = run(&["enqueue", "cli", "h", "--expires-in", "30s"]);
    let mut conn = server.connection().await;
    let f = fields(&mut conn, "cli", &expiring).await;
    assert_eq!(num(&f, "expires_at"), num(&f, "created_at") + 30_000);
    let refused = wasmq(
        &server,
        &[
            "enqueue",
            "cli",
            "h",
            "--debounce-key",
            "k",
            "--debounce",
            "1s",
            "--delay",
            "1s",
        ],
    );
    assert!(!refused.status.success());
    assert_eq!(client.counts("cli").await.unwrap().delayed, 1);
    assert_eq!(client.counts("cli").await.unwrap().waiting, 2);
}

/// The data commands Redis runs for one batch of `n` jobs through enqueue, fetch and complete,
/// each phase counted apart.
async fn phase_commands(server: &RedisServer, queue: &str, jobs: &[NewJob]) -> [u64; 3] {
    let client = server.client().await;
    let mut counts = [0; 3];
    let before = server.data_commands().await;
    client.enqueue_bulk(queue, jobs).await.unwrap();
    let after_enqueue = server.data_commands().await;
    let leased = client.fetch(queue, jobs.len(), LEASE, HOST).await.unwrap();
    assert_eq!(leased.len(), jobs.len());
    let after_fetch = server.data_commands().await;
    let done: Vec<Completion> = leased.iter().map(|j| Completion::new(j, vec![])).collect();
    client.complete(queue, &done).await.unwrap();
    let after_complete = server.data_commands().await;
    counts[0] = after_enqueue - before;
    counts[1] = after_fetch - after_enqueue;
    counts[2] = after_complete - after_fetch;
    counts
}

/// A job that uses none of the new fields costs what it did, per job: enqueue an `HGET` (the
/// id check) and an `HSET`, fetch an `HMGET` and an `HSET`, complete the same. An expiry that
/// has not passed costs nothing more either (fetch reads it in its `HMGET`). Measured as the
/// difference between batches of 20 and 40 (Redis `INFO commandstats`), so what each call
/// costs once cancels out.
#[tokio::test]
async fn plain_jobs_cost_no_extra_command_per_job() {
    let server = RedisServer::start();
    let plain = |n: usize| -> Vec<NewJob> {
        (0..n)
            .map(|i| NewJob::new("h", i.to_string().into_bytes()))
            .collect()
    };
    let expiring = |n: usize| -> Vec<NewJob> {
        plain(n)
            .into_iter()
            .map(|j| j.with_expiry(Expiry::In(Duration::from_secs(60))))
            .collect()
    };
    for (what, make) in [
        ("plain", &plain as &dyn Fn(usize) -> Vec<NewJob>),
        ("expiring", &expiring),
    ] {
        let small = phase_commands(&server, &format!("{what}-20"), &make(20)).await;
        let big = phase_commands(&server, &format!("{what}-40"), &make(40)).await;
        let per_job: Vec<u64> = (0..3).map(|i| (big[i] - small[i]) / 20).collect();
        let rest: Vec<u64> = (0..3).map(|i| (big[i] - small[i]) % 20).collect();
        assert_eq!(
            (per_job, rest),
            (vec![2, 2, 2], vec![0, 0, 0]),
            "{what}: commands per job in enqueue, fetch, complete ({small:?}, {big:?})"
        );
    }
}

/// A grouped pending job that became due (in its group's waiting set) goes back to delayed when
/// debounced, and its group leaves the round-robin with its last waiting job; when due again it
/// is promoted into its group and leased with the last payload.
#[tokio::test]
async fn a_grouped_pending_job_moves_back_with_its_group_kept_in_step() {
    let server = RedisServer::start();
    let client = server.client().await;
    let window = Duration::from_millis(100);
    let job = |payload: &[u8]| {
        NewJob::new("h", payload.to_vec())
            .with_group("tenant-1")
            .with_debounce("k", window, None)
    };
    let first = client.enqueue("q", &job(b"1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(client.promote("q", 100).await.unwrap().0, 1);
    assert!(server.exists("wasmq:{q}:g:tenant-1:waiting").await);
    let again = client.enqueue("q", &job(b"2")).await.unwrap();
    assert_eq!(
        (again.outcome, again.id.as_str()),
        (EnqueueOutcome::Debounced, first.id.as_str())
    );
    assert!(!server.exists("wasmq:{q}:g:tenant-1:waiting").await);
    assert!(
        !server.exists("wasmq:{q}:groups").await,
        "the group left the round-robin"
    );
    let report = client.check("q", false).await.unwrap();
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let leased = client.fetch("q", 10, LEASE, HOST).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(
        (leased[0].id.as_str(), leased[0].payload.as_slice()),
        (first.id.as_str(), &b"2"[..])
    );
}
