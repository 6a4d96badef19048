//! Cancel against real hosts (`wasmq run`): a running job is stopped on whichever host runs it
//! within 100 ms of the cancel (a notification on the queue's cancel channel), with the
//! heartbeat as the fallback when the notification is not heard; a cancel racing a job that
//! finishes leaves exactly one outcome.
//!
//! How a stop is measured: each host runs one job at a time (`--concurrency 1`) and more jobs
//! wait, so the moment a host leases its next job (`started_at`, Redis clock) is a moment its
//! stopped attempt had given its slot back. The latency taken is that minus the cancel's own
//! `finished_at` (Redis clock too): an upper bound of the stop, which also counts the lease of
//! the next job.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use wasmq::queue::{CancelBy, CancelOutcome, Client, JobState, NewJob, QueueKeys};

use crate::support::cli::{ok, wasmq};
use crate::support::eventually;
use crate::support::guests::handler;
use crate::support::host::HostProcess;
use crate::support::redis::RedisServer;

const Q: &str = "cancel";

/// A host that runs one job at a time, leasing nothing ahead.
fn one_at_a_time(redis: &RedisServer, host_id: &str, extra: &[&str]) -> HostProcess {
    let loop_handler = handler("loop", "infinite-loop");
    let sleep_handler = handler("sleep", "sleep");
    let parent = handler("parent", "parent");
    let mut args = vec![
        "--queues",
        Q,
        "--handler",
        &loop_handler,
        "--handler",
        &sleep_handler,
        "--handler",
        &parent,
        "--concurrency",
        "1",
        "--prefetch",
        "0",
        "--host-id",
        host_id,
    ];
    args.extend_from_slice(extra);
    HostProcess::builder(&redis.url()).args(&args).start()
}

/// The active jobs, by host.
async fn active_by_host(client: &Client) -> BTreeMap<String, (String, u64)> {
    let mut out = BTreeMap::new();
    for job in client.list(Q, JobState::Active, 0, 100).await.unwrap() {
        if let (Some(host), Some(started)) = (job.host.clone(), job.started_at_ms) {
            out.insert(host, (job.id.clone(), started));
        }
    }
    out
}

/// Enqueues `n` jobs that never end by themselves: infinite loops and hour-long sleeps, in
/// turn. Returns which handler each id has.
async fn endless_jobs(client: &Client, n: usize) -> BTreeMap<String, &'static str> {
    let mut kinds = BTreeMap::new();
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| {
            let id = format!("e{i:03}");
            let (handler, payload) = if i % 2 == 0 {
                ("loop", Vec::new())
            } else {
                ("sleep", b"3600000".to_vec())
            };
            kinds.insert(id.clone(), handler);
            NewJob::new(handler, payload)
                .with_id(id)
                .with_timeout(Duration::from_secs(600))
        })
        .collect();
    client.enqueue_bulk(Q, &jobs).await.unwrap();
    kinds
}

/// Cancels the job running on `host` and waits for that host's next job to start: the stop
/// latency in ms (see the module docs), the cancelled id and the next one.
async fn cancel_running_on(
    client: &Client,
    host: &str,
    seen: &mut HashSet<String>,
) -> (u64, String) {
    let (id, _) = eventually(
        "a job running on the host",
        Duration::from_secs(60),
        || async { active_by_host(client).await.get(host).cloned() },
    )
    .await;
    seen.insert(id.clone());
    let who = CancelBy::new("test", "latency");
    let outcome = client
        .cancel_by(Q, std::slice::from_ref(&id), &who)
        .await
        .unwrap();
    assert_eq!(outcome, [(id.clone(), CancelOutcome::Cancelled)]);
    let cancelled = client.get(Q, &id).await.unwrap().unwrap();
    let at = cancelled.finished_at_ms.unwrap();
    let next_started = eventually("the host's next job", Duration::from_secs(10), || async {
        active_by_host(client)
            .await
            .get(host)
            .filter(|(next, _)| !seen.contains(next))
            .map(|(_, started)| *started)
    })
    .await;
    (next_started.saturating_sub(at), id)
}

#[tokio::test]
async fn running_loops_and_sleeps_are_stopped_within_100_ms_of_their_cancel_on_two_hosts() {
    const CANCELS: usize = 50;
    let redis = RedisServer::start();
    let client = redis.client().await;
    let kinds = endless_jobs(&client, CANCELS + 2).await;
    let hosts = [
        one_at_a_time(&redis, "host-a", &[]),
        one_at_a_time(&redis, "host-b", &[]),
    ];
    let mut seen = HashSet::new();
    let mut latencies = Vec::new();
    let mut cancelled = Vec::new();
    for i in 0..CANCELS {
        let host = if i % 2 == 0 { "host-a" } else { "host-b" };
        let (ms, id) = cancel_running_on(&client, host, &mut seen).await;
        latencies.push((ms, kinds[&id]));
        cancelled.push(id);
    }
    let mut sorted: Vec<u64> = latencies.iter().map(|(ms, _)| *ms).collect();
    sorted.sort_unstable();
    let p99 = sorted[(sorted.len() * 99).div_ceil(100) - 1];
    let p50 = sorted[sorted.len() / 2];
    eprintln!("cancel to stop, ms: p50 {p50}, p99 {p99}, all {latencies:?}");
    for kind in ["loop", "sleep"] {
        assert!(
            latencies.iter().filter(|(_, k)| *k == kind).count() >= 10,
            "{kind}: {latencies:?}"
        );
    }
    assert!(p99 <= 100, "p99 {p99} ms over 100 ms: {latencies:?}");

    // The last two jobs run now, one of them a loop: its host burns what CPU it gets until
    // the cancel, and then next to none (the loop is stopped, not only its slot given back).
    let running = active_by_host(&client).await;
    let (looping, (loop_id, _)) = running
        .iter()
        .find(|(_, (id, _))| kinds[id] == "loop")
        .expect("one of the last two jobs is a loop");
    let pid = hosts[usize::from(looping == "host-b")].pid();
    let spinning = cpu_ticks_over(pid, Duration::from_secs(2)).await;
    let rest: Vec<String> = kinds
        .keys()
        .filter(|id| !seen.contains(*id))
        .cloned()
        .collect();
    assert!(rest.contains(loop_id), "{rest:?}");
    client
        .cancel_by(Q, &rest, &CancelBy::new("test", "done"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = cpu_ticks_over(pid, Duration::from_secs(2)).await;
    eprintln!("{looping} CPU over 2 s: {spinning} ticks with a loop running, {idle} after");
    assert!(
        spinning >= 10 && idle * 3 < spinning,
        "{spinning} ticks, then {idle}"
    );

    // Each stays cancelled: one history entry, never retried, no outcome from its host.
    for id in &cancelled {
        let job = client.get(Q, id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Dead, "{id}");
        assert_eq!(job.last_outcome.as_deref(), Some("cancelled"), "{id}");
        assert_eq!(job.attempt, 1, "{id}");
        let outcomes: Vec<&str> = job.history.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(outcomes, ["cancelled"], "{id}");
        assert!(job.result.is_none());
    }
    let counts = client.counts(Q).await.unwrap();
    assert_eq!(
        (counts.dead, counts.completed, counts.retry, counts.active),
        (kinds.len() as u64, 0, 0, 0)
    );
    for host in &hosts {
        let log = host.log_text();
        assert_eq!(
            log.matches("job cancelled; its attempt is stopped here")
                .count(),
            CANCELS / 2 + 1,
            "{log}"
        );
        assert!(!log.contains("lease lost"), "{log}");
    }
}

/// The CPU time process `pid` spends over `window`, in clock ticks (100 a second).
async fn cpu_ticks_over(pid: u32, window: Duration) -> u64 {
    let before = cpu_ticks(pid);
    tokio::time::sleep(window).await;
    cpu_ticks(pid).saturating_sub(before)
}

/// User and system CPU time of process `pid` so far, in clock ticks (`/proc/<pid>/stat`).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test]
async fn without_the_notification_the_heartbeat_stops_a_cancelled_job() {
    // A cancel published where no host listens: what a host that missed the message (its
    // subscription down, or a host of an earlier build) sees. Its heartbeat, every third of
    // the 1.5 s lease, is refused (the lease is gone) and stops the attempt.
    let redis = RedisServer::start();
    let client = redis.client().await;
    endless_jobs(&client, 3).await;
    let host = one_at_a_time(&redis, "host-a", &["--lease", "1500ms"]);
    let mut seen = HashSet::new();
    let (id, _) = eventually("a job running", Duration::from_secs(60), || async {
        active_by_host(&client).await.get("host-a").cloned()
    })
    .await;
    seen.insert(id.clone());
    // While the loop runs, the host burns what CPU it gets (a core, less on a busy machine):
    // what the check after the cancel tells apart.
    let spinning = cpu_ticks_over(host.pid(), Duration::from_secs(2)).await;
    assert!(
        spinning >= 10,
        "a running loop spent only {spinning} ticks in 2 s"
    );
    let script = format!(
        "{}\nreturn (function()\n{}\nend)()\n",
        wasmq::queue::LIB_LUA,
        include_str!("../../host/src/queue/scripts/cancel.lua")
    );
    let keys = QueueKeys::new(Q).unwrap();
    let mut conn = redis.connection().await;
    let reply: Vec<(String, String)> = redis::cmd("EVAL")
        .arg(script)
        .arg(12)
        .arg(keys.job_prefix())
        .arg(keys.config())
        .arg(keys.waiting())
        .arg(keys.delayed())
        .arg(keys.retry())
        .arg(keys.events())
        .arg(keys.group_prefix())
        .arg(keys.groups())
        .arg(keys.steps_prefix())
        .arg(keys.active())
        .arg(keys.dead())
        .arg(format!("{}-nobody-listens", keys.cancel_channel()))
        .arg("test")
        .arg("unheard")
        .arg(&id)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(reply, [(id.clone(), "cancelled".to_string())]);
    let at = client
        .get(Q, &id)
        .await
        .unwrap()
        .unwrap()
        .finished_at_ms
        .unwrap();
    let next_started = eventually("the host's next job", Duration::from_secs(10), || async {
        active_by_host(&client)
            .await
            .get("host-a")
            .filter(|(next, _)| !seen.contains(next))
            .map(|(_, started)| *started)
    })
    .await;
    let waited = next_started.saturating_sub(at);
    // At most one heartbeat period (500 ms) and the heartbeat's own time.
    assert!(waited <= 1_000, "stopped {waited} ms after the cancel");
    // The cancelled job was the infinite loop (the first enqueued) and the next one sleeps: the
    // loop is really stopped when the host burns no CPU.
    assert_eq!(id, "e000");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = cpu_ticks_over(host.pid(), Duration::from_secs(2)).await;
    eprintln!("host CPU over 2 s: {spinning} ticks with the loop running, {idle} after");
    assert!(
        idle * 3 < spinning,
        "the host spent {idle} ticks in 2 s after the cancel, {spinning} while the loop ran"
    );
    let log = host.log_text();
    assert!(log.contains("lease lost; stopping the job here"), "{log}");
    assert!(
        !log.contains("job cancelled; its attempt is stopped here"),
        "{log}"
    );
    let job = client.get(Q, &id).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.last_outcome.as_deref(), job.history.len()),
        (JobState::Dead, Some("cancelled"), 1)
    );
}

#[tokio::test]
async fn a_cancel_racing_a_job_that_finishes_leaves_exactly_one_outcome() {
    const JOBS: usize = 124;
    let redis = RedisServer::start();
    let client = redis.client().await;
    let _hosts = [
        one_at_a_time(&redis, "host-a", &[]),
        one_at_a_time(&redis, "host-b", &[]),
    ];
    // A parent job finishes in a few ms, its child riding in its completion (the id
    // `<queue>/<parent id>:c1`, for the handler `parked`, which no host has: it fails as
    // unknown_handler, and stays, whatever becomes of it).
    let mut outcomes = BTreeMap::new();
    for n in 0..JOBS {
        let id = format!("p{n:03}");
        let payload = r#"{"children":1,"handler":"parked"}"#;
        client
            .enqueue(Q, &NewJob::new("parent", payload).with_id(id.clone()))
            .await
            .unwrap();
        // From at once to 15 ms after the enqueue: the cancel lands while the job waits,
        // runs, or is being recorded as completed.
        tokio::time::sleep(Duration::from_micros((n % 31) as u64 * 500)).await;
        let outcome = client
            .cancel_by(Q, std::slice::from_ref(&id), &CancelBy::new("test", "race"))
            .await
            .unwrap();
        outcomes.insert(id, outcome[0].1.clone());
    }
    // Let every completion and outbox delivery that is going to happen happen.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mut completed, mut cancelled, mut while_running) = (0, 0, 0);
    for (id, outcome) in &outcomes {
        let job = client.get(Q, id).await.unwrap().unwrap();
        let history: Vec<&str> = job.history.iter().map(|a| a.outcome.as_str()).collect();
        let kid = client.get(Q, &format!("{Q}/{id}:c1")).await.unwrap();
        match outcome {
            CancelOutcome::Cancelled => {
                cancelled += 1;
                // A running job's cancel entry names the host that ran it.
                if !job.history[0].host.is_empty() {
                    while_running += 1;
                }
                assert_eq!(job.state, JobState::Dead, "{id}");
                assert_eq!(job.last_outcome.as_deref(), Some("cancelled"), "{id}");
                assert_eq!(history, ["cancelled"], "{id}");
                assert!(job.result.is_none(), "{id}");
                assert!(kid.is_none(), "{id}: a cancelled job's child was written");
            }
            CancelOutcome::NotCancellable(JobState::Completed) => {
                completed += 1;
                assert_eq!(job.state, JobState::Completed, "{id}");
                assert_eq!(history, ["ok"], "{id}");
                assert!(job.cancelled_by.is_none(), "{id}");
                assert!(kid.is_some(), "{id}: a completed job's child is missing");
            }
            other => panic!("{id}: {other:?}"),
        }
    }
    eprintln!(
        "{completed} completed first, {cancelled} cancelled first ({while_running} while running)"
    );
    // The sweep makes both sides of the race happen (a machine too slow or too fast for any
    // of them would make this test prove less, so it says so).
    assert!(completed > 0 && while_running > 0, "no race happened");
}

#[tokio::test]
async fn the_cli_cancels_by_id_and_by_handler_recording_cli_and_the_reason() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let jobs: Vec<NewJob> = (0..150)
        .map(|i| {
            let handler = if i % 2 == 0 { "a" } else { "b" };
            NewJob::new(handler, Vec::new()).with_id(format!("c{i:03}"))
        })
        .collect();
    client.enqueue_bulk(Q, &jobs).await.unwrap();

    let out = ok(&wasmq(
        &redis,
        &["cancel", Q, "c001", "c003", "--reason", "by hand"],
    ));
    assert!(
        out.contains("cancelled c001") && out.contains("cancelled c003"),
        "{out}"
    );
    let job = client.get(Q, "c001").await.unwrap().unwrap();
    assert_eq!(
        (
            job.state,
            job.cancelled_by.as_deref(),
            job.cancel_reason.as_deref()
        ),
        (JobState::Dead, Some("cli"), Some("by hand"))
    );
    // A job that is not there, or finished: said so, exit 1, the others cancelled.
    let refused = wasmq(&redis, &["cancel", Q, "c001", "nope", "c005"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("not cancelled c001: it is dead") && stderr.contains("nope"),
        "{stderr}"
    );
    assert_eq!(
        client.get(Q, "c005").await.unwrap().unwrap().state,
        JobState::Dead
    );

    // By handler, 10 ids looked at per call: every job of `a` goes, `b`'s stay.
    let out = ok(&wasmq(
        &redis,
        &["cancel", Q, "--handler", "a", "--page", "10"],
    ));
    assert!(out.contains("cancelled 75 job(s)"), "{out}");
    let counts = client.counts(Q).await.unwrap();
    assert_eq!((counts.waiting, counts.dead), (72, 78));
    let shown = ok(&wasmq(&redis, &["job", Q, "c001"]));
    assert!(shown.contains("cancelled:    by cli: by hand"), "{shown}");
    // Ids and a filter together are refused before anything is done.
    let both = wasmq(&redis, &["cancel", Q, "c007", "--handler", "b"]);
    assert_ne!(both.status.code(), Some(0));
    assert_eq!(client.counts(Q).await.unwrap().waiting, 72);
}
