//! Redis memory under retention (issue #11): jobs pushed through enqueue -> fetch -> complete
//! in big batches leave Redis holding what the queue's retention keeps, and nothing that grows
//! with the number of jobs. The queue client alone does the work (no WASM): this measures
//! Redis, with `INFO memory` and `MEMORY USAGE`.
//!
//! Size: `WASMQ_MEMORY_JOBS` jobs (default [`CI_JOBS`]). The full run of the issue:
//! `WASMQ_MEMORY_JOBS=1000000 cargo test --test all memory:: -- --nocapture`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use wasmq::connection::RedisConnection;
use wasmq::queue::{
    Backoff, Child, Client, Completion, Failure, LeasedJob, MAX_BULK, NewJob, QueueConfig,
    RateLimit, RecordsAttempt as _, StepSave,
};

use crate::support::redis::{RedisServer, now_ms};

/// Jobs in CI. Each round of [`BATCH`] jobs costs the same whatever the total, so this many
/// is enough for the checks (the quarter-mark checkpoint comes well after the warm-up); the
/// 1M run is the same test with `WASMQ_MEMORY_JOBS=1000000`.
const CI_JOBS: usize = 200_000;
const QUEUE: &str = "mem";
const LEASE: Duration = Duration::from_secs(600);
const HOST: &str = "memory-test";
/// Jobs per call: the most one call takes.
const BATCH: usize = MAX_BULK;
/// Completed jobs kept (`completed_keep`).
const KEEP: u64 = 1_000;
/// Entries in the events stream (`events_maxlen`): small, so that the stream is at its cap
/// within the first round (a round writes over 300: one per 100 jobs per call and kind of
/// transition, and one per step saved).
const EVENTS_MAXLEN: u64 = 50;
/// `XADD MAXLEN ~` trims whole stream nodes only, so the stream may hold up to one node more
/// than asked: redis-server's `stream-node-max-entries` (100 by default).
const STREAM_NODE_ENTRIES: u64 = 100;
/// The most an events entry takes: 100 jobs of about 30 bytes (docs/protocol.md, Events).
const EVENT_ENTRY_BYTES: u64 = 3 * 1024;
/// Dead-lettered jobs, before the run: they must all still be there, untouched, at the end.
const DEAD: usize = 20;
/// Every job whose number is a multiple of `GROUPED` goes to one of `GROUPS` groups.
const GROUPED: usize = 4;
const GROUPS: usize = 8;
/// One job in `RETRIED` fails its first attempt (retried at once, no backoff); one in
/// `STEPPED` saves a durable step before it completes; one in `PARENT` completes with a child.
const RETRIED: usize = 5_000;
const STEPPED: usize = 1_250;
const PARENT: usize = BATCH;
/// The rate limits: never reached (a call leases at most one batch, and calls are further
/// apart than the window), but their start logs are written and trimmed at every fetch.
const RATE_MAX: u64 = 3 * BATCH as u64;
const RATE_WINDOW: Duration = Duration::from_millis(10);

fn jobs_to_run() -> usize {
    match std::env::var("WASMQ_MEMORY_JOBS") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("WASMQ_MEMORY_JOBS must be a number of jobs, got {text}")),
        Err(_) => CI_JOBS,
    }
}

fn key(suffix: &str) -> String {
    format!("wasmq:{{{QUEUE}}}:{suffix}")
}

/// Producer-chosen ids, so enqueueing one again is deduplicated while the job exists. Of one
/// width, so that the jobs kept at the end are no bigger than those kept at the start.
fn job_id(n: usize) -> String {
    format!("order-{n:08}")
}

fn number(id: &str) -> Option<usize> {
    id.strip_prefix("order-")?.parse().ok()
}

fn new_job(n: usize) -> NewJob {
    // About what a real job carries: a JSON payload of ~100 bytes.
    let payload = format!(
        r#"{{"order":{n:08},"customer":"c-{:06}","sku":"SKU-{:05}","qty":{},"note":"deliver"}}"#,
        n % 999_983,
        n % 97_003,
        n % 7 + 1
    );
    let mut job = NewJob::new("process-order", payload).with_id(job_id(n));
    if n.is_multiple_of(GROUPED) {
        job = job.with_group(format!("tenant-{}", (n / GROUPED) % GROUPS));
    }
    if n % RETRIED == 1 {
        job = job.with_backoff(Backoff::fixed(Duration::ZERO));
    }
    job
}

fn completion(job: &LeasedJob) -> Completion {
    let mut done = Completion::new(job, format!(r#"{{"ok":true,"id":"{}"}}"#, job.id))
        .with_version("3:9f86d081884c")
        .with_logs("stdout: processed\n", Some(100));
    if number(&job.id).is_some_and(|n| n % PARENT == 3) {
        done = done.with_children(vec![Child {
            queue: QUEUE.to_string(),
            job: NewJob::new("notify", b"{}".to_vec()).with_id(format!("child-of-{}", job.id)),
        }]);
    }
    done
}

/// `INFO memory` fields, in bytes.
async fn info_memory(conn: &mut RedisConnection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, value) = line.trim().split_once(':')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// What Redis holds, in bytes: `used_memory` less the clients' buffers. Those belong to the
/// calls in progress (a bulk enqueue's arguments, a fetch's reply) and are freed or shrunk
/// when the connection idles, not kept for jobs. Redis's slow log is emptied first: it keeps
/// the arguments of the last 128 calls that took over 10 ms (`slowlog-max-len`,
/// `slowlog-log-slower-than`), which batches of this size do, so it fills by about 1.6 KB a
/// round until it holds 128 (a bounded 200 KB that is Redis's own, not the queue's).
async fn held(conn: &mut RedisConnection) -> u64 {
    let () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(conn)
        .await
        .unwrap();
    let info = info_memory(conn).await;
    info["used_memory"] - info.get("mem_clients_normal").copied().unwrap_or(0)
}

async fn memory_usage(conn: &mut RedisConnection, key: &str) -> u64 {
    // SAMPLES 0: every element of an aggregate, not an estimate from a sample.
    let bytes: Option<u64> = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query_async(conn)
        .await
        .unwrap();
    bytes.unwrap_or(0)
}

async fn every_key(conn: &mut RedisConnection) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// Runs jobs `first..first + n` through enqueue -> fetch -> complete, in calls of up to
/// [`BATCH`], with the retries, steps and children their numbers ask for, until every one of
/// them and every child has completed. Returns the Redis time of the call that completed most
/// of them (the first), and of the last.
async fn run_round(client: &Client, first: usize, n: usize) -> (u64, u64) {
    let jobs: Vec<NewJob> = (first..first + n).map(new_job).collect();
    let enqueued = client.enqueue_bulk(QUEUE, &jobs).await.unwrap();
    assert!(enqueued.iter().all(|e| e.created), "ids are new");
    let mut expected = n;
    let mut done = 0;
    let (mut first_now, mut last_now) = (0, 0);
    let mut leased = client
        .fetch_batch(QUEUE, BATCH, LEASE, HOST)
        .await
        .unwrap()
        .jobs;
    while done < expected {
        let mut completions = Vec::with_capacity(leased.len());
        let mut failures = Vec::new();
        for job in &leased {
            let n = number(&job.id);
            if n.is_some_and(|n| n % RETRIED == 1) && job.attempt == 1 {
                failures.push(Failure::new(job, "retry", "the first attempt fails"));
                continue;
            }
            if n.is_some_and(|n| n % STEPPED == 2) {
                let saved = client
                    .save_step(QUEUE, &job.id, &job.token, "run:charge", b"charge-ok")
                    .await
                    .unwrap();
                assert_eq!(saved, StepSave::Saved);
            }
            completions.push(completion(job));
        }
        if !failures.is_empty() {
            let report = client.fail(QUEUE, &failures).await.unwrap();
            assert!(report.rejected.is_empty(), "{:?}", report.rejected);
        }
        let (report, fetched) = client
            .complete_and_fetch(QUEUE, &completions, BATCH, LEASE, HOST)
            .await
            .unwrap();
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
        assert_eq!(report.completed.len(), completions.len());
        done += report.completed.len();
        last_now = fetched.now_ms;
        if first_now == 0 && done > 0 {
            first_now = last_now;
        }
        let parents: Vec<String> = completions
            .iter()
            .filter(|c| !c.children.is_empty())
            .map(|c| c.record.id.clone())
            .collect();
        if !parents.is_empty() {
            let delivered = client.deliver_outbox(QUEUE, &parents).await.unwrap();
            expected += usize::try_from(delivered.created).unwrap();
        }
        leased = fetched.jobs;
        if leased.is_empty() && fetched.rate_limited {
            tokio::time::sleep(RATE_WINDOW).await;
        }
    }
    assert!(leased.is_empty(), "every job of the round has completed");
    (first_now, last_now)
}

/// The part of Redis's memory retention allows, measured on what is there: the completed jobs
/// kept (`kept` of them, each counted at the size of the largest one found), the events stream
/// (at most `EVENTS_MAXLEN` + one node), the dead-letter queue, the rate logs (trimmed to one
/// window) and the queue's few fixed keys.
struct Allowed {
    completed: u64,
    per_completed_job: u64,
    events: u64,
    dead: u64,
    rate_logs: u64,
    fixed: u64,
}

impl Allowed {
    fn total(&self) -> u64 {
        self.completed + self.events + self.dead + self.rate_logs + self.fixed
    }
}

/// Checks every key of the server against what retention allows, and measures the allowed
/// ones. A key that is none of these (a job's steps, an outbox entry, a group's set, a job
/// hash of a deleted job) fails the test by name: that is a key that grows with the jobs.
async fn allowed_keys(conn: &mut RedisConnection, dead_ids: &[String]) -> Allowed {
    let completed: Vec<String> = redis::cmd("ZRANGE")
        .arg(key("completed"))
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await
        .unwrap();
    let keep: std::collections::HashSet<String> = completed
        .iter()
        .chain(dead_ids)
        .map(|id| key(&format!("job:{id}")))
        .collect();
    let mut largest_job = 0;
    let mut job_keys = 0;
    let mut rate_logs = 0;
    let mut dead = 0;
    let mut fixed = 0;
    let mut unexpected = Vec::new();
    for name in every_key(conn).await {
        let Some(suffix) = name.strip_prefix(&key("")) else {
            unexpected.push(name);
            continue;
        };
        if suffix.starts_with("job:") {
            if !keep.contains(&name) {
                unexpected.push(name);
                continue;
            }
            job_keys += 1;
            let bytes = memory_usage(conn, &name).await;
            if dead_ids.iter().any(|id| suffix == format!("job:{id}")) {
                dead += bytes;
            } else {
                largest_job = largest_job.max(bytes);
            }
            continue;
        }
        match suffix {
            "events" | "completed" => {}
            "dead" => dead += memory_usage(conn, &name).await,
            "rate" => {
                let starts: u64 = redis::cmd("ZCARD")
                    .arg(&name)
                    .query_async(conn)
                    .await
                    .unwrap();
                assert!(starts <= RATE_MAX, "the queue's rate log holds {starts}");
                rate_logs += memory_usage(conn, &name).await;
            }
            "config" | "seq" | "wake" => fixed += memory_usage(conn, &name).await,
            group_log if group_log.starts_with("g:") && group_log.ends_with(":rate") => {
                // Expires one window after the group's last start.
                let ttl: i64 = redis::cmd("PTTL")
                    .arg(&name)
                    .query_async(conn)
                    .await
                    .unwrap();
                assert!(ttl > 0, "{name} has no expiry");
                rate_logs += memory_usage(conn, &name).await;
            }
            _ => unexpected.push(name),
        }
    }
    assert!(
        unexpected.is_empty(),
        "keys that retention does not account for (they grow with the jobs): {unexpected:?}"
    );
    assert_eq!(
        job_keys,
        completed.len() + dead_ids.len(),
        "a job hash for every kept job"
    );
    let events_len: u64 = redis::cmd("XLEN")
        .arg(key("events"))
        .query_async(conn)
        .await
        .unwrap();
    assert!(
        events_len <= EVENTS_MAXLEN + STREAM_NODE_ENTRIES,
        "the events stream holds {events_len} entries"
    );
    // An entry lists at most 100 jobs, about 30 bytes each as JSON (docs/protocol.md, Events):
    // the stream's size follows its length, not the batch sizes.
    let events = memory_usage(conn, &key("events")).await;
    assert!(
        events <= (EVENTS_MAXLEN + STREAM_NODE_ENTRIES) * EVENT_ENTRY_BYTES,
        "the events stream takes {events} B for {events_len} entries"
    );
    let kept = completed.len() as u64;
    // A completed job costs its hash and its member in `completed` (the set's size per member).
    let per_completed_job = largest_job + memory_usage(conn, &key("completed")).await / kept.max(1);
    Allowed {
        completed: kept * per_completed_job,
        per_completed_job,
        events,
        dead,
        rate_logs,
        fixed,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_completed_jobs_leave_redis_holding_only_what_retention_keeps() {
    let total = jobs_to_run();
    assert!(
        total >= 8 * BATCH,
        "WASMQ_MEMORY_JOBS must be at least {} (eight rounds)",
        8 * BATCH
    );
    let server = RedisServer::start();
    let client = server.client().await;
    let mut conn = server.connection().await;
    let config = QueueConfig {
        completed_keep: Some(KEEP),
        events_maxlen: EVENTS_MAXLEN,
        rate: Some(RateLimit::new(RATE_MAX, RATE_WINDOW).unwrap()),
        group_rate: Some(RateLimit::new(RATE_MAX, RATE_WINDOW).unwrap()),
        ..QueueConfig::default()
    };
    client.set_config(QUEUE, &config).await.unwrap();

    // Baseline: an empty queue, once one job went through (so that the enqueue script and the
    // function library are loaded).
    run_round(&client, 0, 1).await;
    let baseline = held(&mut conn).await;

    // The dead-letter queue: a few jobs failed for good before the run. Retention never
    // touches them.
    let dead_jobs: Vec<NewJob> = (0..DEAD)
        .map(|i| NewJob::new("process-order", vec![b'x'; 100]).with_id(format!("dead-{i}")))
        .collect();
    client.enqueue_bulk(QUEUE, &dead_jobs).await.unwrap();
    let leased = client.fetch(QUEUE, DEAD, LEASE, HOST).await.unwrap();
    let failures: Vec<Failure> = leased
        .iter()
        .map(|job| Failure::new(job, "fail", "the card was declined").permanent())
        .collect();
    client.dead_letter(QUEUE, &failures).await.unwrap();
    let dead_ids: Vec<String> = (0..DEAD).map(|i| format!("dead-{i}")).collect();
    let mut dead_dumps = BTreeMap::new();
    for id in &dead_ids {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(key(&format!("job:{id}")))
            .query_async(&mut conn)
            .await
            .unwrap();
        dead_dumps.insert(id.clone(), dump);
    }

    // The run: rounds of BATCH jobs, Redis's memory measured after each. The warm-up ends
    // when every structure retention bounds is at its cap: KEEP completed jobs, and the events
    // stream at its length.
    let started = Instant::now();
    let mut next = 1;
    let mut marks = Vec::new();
    let mut warm_after = None;
    while next < total {
        let n = BATCH.min(total - next);
        run_round(&client, next, n).await;
        next += n;
        let held_now = held(&mut conn).await;
        let lua = info_memory(&mut conn).await["used_memory_vm_total"];
        marks.push((next, held_now, lua));
        if warm_after.is_none() {
            let events: u64 = redis::cmd("XLEN")
                .arg(key("events"))
                .query_async(&mut conn)
                .await
                .unwrap();
            let completed = client.counts(QUEUE).await.unwrap().completed;
            if events >= EVENTS_MAXLEN && completed == KEEP {
                warm_after = Some(next);
            }
        }
    }
    let took = started.elapsed();
    let end = marks.last().unwrap().1;
    // The Lua heaps (`used_memory_vm_total`) are reported, not checked: Redis 7.0 counts them
    // outside `used_memory`, and their size follows the garbage collector and the largest
    // batch, not what is stored.
    eprintln!(
        "memory: {total} jobs in {took:.1?} ({:.0} jobs/s); Redis held {baseline} B before, \
         then (jobs done, held B, Lua heaps B): {marks:?}",
        total as f64 / took.as_secs_f64()
    );

    // 1. Nothing is left behind but what retention allows, and each part is within its cap
    // (`allowed_keys` names any other key).
    let counts = client.counts(QUEUE).await.unwrap();
    assert_eq!(counts.completed, KEEP);
    assert_eq!(counts.dead, DEAD as u64);
    assert_eq!(
        (counts.waiting, counts.active, counts.retry, counts.delayed),
        (0, 0, 0, 0)
    );
    let allowed = allowed_keys(&mut conn, &dead_ids).await;
    for (id, dump) in &dead_dumps {
        let now: Vec<u8> = redis::cmd("DUMP")
            .arg(key(&format!("job:{id}")))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(&now, dump, "dead job {id} was changed");
    }

    // 2. Redis holds at most the baseline plus what retention allows: KEEP completed jobs at
    // the size of the largest, the events stream, the dead jobs, the rate logs, the config.
    // The slack is the main keyspace's hash table (8 bytes a bucket, twice while it rehashes),
    // which Redis grew for the busiest moment of a round (a batch of job hashes at once) and
    // shrinks in its own time.
    let slack = 2 * 8 * (BATCH as u64 + KEEP + DEAD as u64).next_power_of_two();
    let bound = baseline + allowed.total() + slack;
    eprintln!(
        "memory: at the end {end} B <= bound {bound} B = baseline {baseline} + kept completed \
         {} ({KEEP} x {} B) + events {} + dead {} + rate logs {} + fixed keys {} + slack {slack}",
        allowed.completed,
        allowed.per_completed_job,
        allowed.events,
        allowed.dead,
        allowed.rate_logs,
        allowed.fixed,
    );
    assert!(
        end <= bound,
        "Redis holds {end} B, over the bound of {bound} B"
    );

    // 3. No growth after the warm-up: from the first quarter of the jobs (or the warm-up's
    // end, if later) to the last, what Redis holds differs by noise only. Each level is the
    // least of three rounds in a row: now and then a round ends while the keyspace's hash
    // table is being resized (the slack above, ~130-260 KB for a moment), and a leak only
    // grows, so the least of three is the level. The noise allowed is one completed job's
    // worth per 1,000 jobs run, about 2 bytes a job; anything Redis kept for every job (a key,
    // a sorted-set member, a stream entry) costs tens of bytes a job or more, and rarer keys
    // (one per 1,250 jobs for steps) are named by check 1.
    let warm_after = warm_after.expect("retention reached its caps during the run");
    let at = marks
        .iter()
        .position(|(done, _, _)| *done >= (total / 4).max(warm_after))
        .unwrap();
    let from_done = marks[at].0;
    assert!(
        total - from_done >= total / 2 && marks.len() - at >= 6,
        "the warm-up took {warm_after} of {total} jobs: too few left to see growth"
    );
    let level = |rounds: &[(usize, u64, u64)]| rounds.iter().map(|m| m.1).min().unwrap();
    let from = level(&marks[at..at + 3]);
    let end = level(&marks[marks.len() - 3..]);
    let noise = allowed.per_completed_job * ((total - from_done) as u64 / 1_000);
    eprintln!(
        "memory: level {from} B from {from_done} jobs, {end} B at {total}: growth {} B, \
         noise allowed {noise} B",
        end as i64 - from as i64
    );
    assert!(
        end <= from + noise,
        "Redis grew from {from} B to {end} B between {from_done} and {total} jobs"
    );

    // 4. Retention by age (`completed_max_age`, with every completed job kept otherwise):
    // each round waits until the jobs before it are older than the age, and the call that
    // completes a round's batch then deletes all of them, however many.
    let age = Duration::from_millis(100);
    client
        .set_config(
            QUEUE,
            &QueueConfig {
                completed_keep: None,
                completed_max_age: Some(age),
                ..config
            },
        )
        .await
        .unwrap();
    let age_ms = u64::try_from(age.as_millis()).unwrap();
    let mut last_now = now_ms(&mut conn).await;
    let mut batch_now = 0;
    for round in 0..3 {
        let after = last_now + age_ms;
        crate::support::eventually("the jobs before to age", Duration::from_secs(10), || {
            let mut conn = conn.clone();
            async move { (now_ms(&mut conn).await > after).then_some(()) }
        })
        .await;
        (batch_now, last_now) = run_round(&client, total + round * BATCH, BATCH).await;
    }
    let too_old: u64 = redis::cmd("ZCOUNT")
        .arg(key("completed"))
        .arg("-inf")
        .arg(batch_now - age_ms)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(too_old, 0, "completed jobs older than {age:?} are kept");
    let kept = client.counts(QUEUE).await.unwrap().completed;
    assert!(
        (1..=BATCH as u64 + 1).contains(&kept),
        "{kept} completed jobs kept: the last round's at most"
    );
    let by_age = allowed_keys(&mut conn, &dead_ids).await;
    let held_by_age = held(&mut conn).await;
    let bound = baseline + by_age.total() + slack;
    eprintln!("memory: {kept} completed jobs kept by age, {held_by_age} B <= bound {bound} B");
    assert!(
        held_by_age <= bound,
        "Redis holds {held_by_age} B, over {bound} B"
    );

    // 5. A deleted job's id is free again (enqueue deduplicates by id while the job exists and
    // keeps nothing of it once deleted); a kept one's is still taken.
    let newest: Vec<String> = redis::cmd("ZRANGE")
        .arg(key("completed"))
        .arg(-1)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let again = client
        .enqueue_bulk(
            QUEUE,
            &[
                new_job(1),
                NewJob::new("h", vec![]).with_id(&newest[0]),
                NewJob::new("h", vec![]).with_id("dead-0"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        again.iter().map(|e| e.created).collect::<Vec<_>>(),
        [true, false, false]
    );
}
