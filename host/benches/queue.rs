//! Run with `cargo bench -p wasmq --bench queue` (needs `redis-server` on PATH).
//!
//! The cost of the queue protocol for a worker: Redis commands and round trips per job for a
//! fetch + complete cycle at batch 64, counted by Redis itself (`INFO commandstats` after
//! `CONFIG RESETSTAT`, which counts the commands scripts run as well as the EVALSHA calls), at
//! 1k and 1M waiting jobs, with the events stream on (the default) and off; then, at 1k, with a
//! queue rate limit on (high enough never to bind: the cost of the bookkeeping), with jobs
//! spread over 16 groups, and with 16 groups and a group limit; then, at 1k, a worker running
//! one job at a time (batch 1) and the steady state of a worker whose finished jobs make room
//! for the next (`complete_and_fetch`, one call per cycle) at batch 1 and 64. Prints a
//! markdown table. Starts its own redis-server on a free loopback port.

#![allow(clippy::unwrap_used)]

#[path = "../../tests/all/support/redis.rs"]
#[allow(dead_code)]
mod redis_support;
// `redis_support` can stand a Redis Cluster in for its server (`super::cluster`).
#[path = "../../tests/all/support/cluster.rs"]
#[allow(dead_code)]
mod cluster;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use redis_support::RedisServer;
use wasmq::queue::{Client, Completion, LeasedJob, MAX_BULK, NewJob, QueueConfig, RateLimit};

const BATCH: usize = 64;
const QUEUE: &str = "bench";

/// How a measured worker cycles: fetch then complete (two calls), or complete the last batch
/// and fetch the next in one call.
#[derive(Clone, Copy, PartialEq)]
enum Cycle {
    FetchThenComplete,
    CompleteAndFetch,
}

struct Row {
    mode: &'static str,
    batch: usize,
    cycle: Cycle,
    depth: u64,
    events: bool,
    jobs: u64,
    commands: u64,
    script_calls: u64,
    by_command: BTreeMap<String, u64>,
    /// Redis's own time running the scripts (EVALSHA `usec`, which includes the commands the
    /// scripts call), in µs.
    script_us: u64,
    fetch_us: f64,
    complete_us: f64,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let server = RedisServer::start();
    let client = server.client().await;
    let mut conn = server.connection().await;
    let mut rows = Vec::new();
    // Limits and groups, at 1k waiting jobs with events on (first: flushing 1M keys is slow).
    let limit = RateLimit::new(1_000_000, Duration::from_secs(1)).unwrap();
    for (mode, groups, rate, group_rate) in [
        ("queue limit", 0, Some(limit), None),
        ("16 groups", 16, None, None),
        ("16 groups, group limit", 16, None, Some(limit)),
    ] {
        let () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
        let config = QueueConfig {
            completed_keep: Some(100),
            rate,
            group_rate,
            ..QueueConfig::default()
        };
        client.set_config(QUEUE, &config).await.unwrap();
        fill_groups(&client, 1_000, groups).await;
        let cycle = Cycle::FetchThenComplete;
        rows.push(measure(&client, &mut conn, mode, 1_000, true, 8, BATCH, cycle).await);
    }
    // One job at a time, and a worker that completes and fetches in one call.
    for (mode, batch, cycle, cycles) in [
        ("batch 1", 1, Cycle::FetchThenComplete, 200),
        ("batch 1, complete+fetch", 1, Cycle::CompleteAndFetch, 200),
        ("complete+fetch", BATCH, Cycle::CompleteAndFetch, 8),
    ] {
        let () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
        let config = QueueConfig {
            completed_keep: Some(100),
            ..QueueConfig::default()
        };
        client.set_config(QUEUE, &config).await.unwrap();
        fill(&client, 1_000).await;
        rows.push(measure(&client, &mut conn, mode, 1_000, true, cycles, batch, cycle).await);
    }
    for depth in [1_000u64, 1_000_000] {
        let () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
        let started = Instant::now();
        fill(&client, depth).await;
        eprintln!(
            "enqueued {depth} jobs in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        for events in [true, false] {
            // Retention at 100 completed jobs, so every complete call also trims: the steady
            // state of a long-running queue.
            let config = QueueConfig {
                events_maxlen: if events { 10_000 } else { 0 },
                completed_keep: Some(100),
                ..QueueConfig::default()
            };
            client.set_config(QUEUE, &config).await.unwrap();
            // Keep the depth constant while measuring: enqueue back what the cycles consume.
            let cycles = 8;
            let cycle = Cycle::FetchThenComplete;
            rows.push(
                measure(
                    &client, &mut conn, "plain", depth, events, cycles, BATCH, cycle,
                )
                .await,
            );
            fill(&client, ((cycles + 2) * BATCH) as u64).await;
        }
    }

    println!(
        "| mode | batch | waiting jobs | events | jobs measured | Redis commands / job | round trips / job | script µs / job | fetch call | complete call |"
    );
    println!("|---|---:|---:|:---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        let (fetch, complete) = match row.cycle {
            Cycle::FetchThenComplete => (
                format!("{:.0} µs", row.fetch_us),
                format!("{:.0} µs", row.complete_us),
            ),
            Cycle::CompleteAndFetch => (format!("{:.0} µs (both)", row.fetch_us), "-".to_string()),
        };
        println!(
            "| {} | {} | {} | {} | {} | {:.2} | {:.3} | {:.1} | {fetch} | {complete} |",
            row.mode,
            row.batch,
            row.depth,
            if row.events { "on" } else { "off" },
            row.jobs,
            row.commands as f64 / row.jobs as f64,
            row.script_calls as f64 / row.jobs as f64,
            row.script_us as f64 / row.jobs as f64,
        );
    }
    println!();
    println!("Commands per job by name:");
    println!();
    let mut names: Vec<&String> = rows.iter().flat_map(|r| r.by_command.keys()).collect();
    names.sort();
    names.dedup();
    let header: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{}, {} waiting, events {}",
                r.mode,
                r.depth,
                if r.events { "on" } else { "off" }
            )
        })
        .collect();
    println!("| command | {} |", header.join(" | "));
    println!("|---|{}", "---:|".repeat(rows.len()));
    for name in names {
        let cells: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{:.3}",
                    r.by_command.get(name).copied().unwrap_or(0) as f64 / r.jobs as f64
                )
            })
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
}

/// Enqueues `count` small jobs spread round-robin over `groups` groups (0: ungrouped).
async fn fill_groups(client: &Client, count: u64, groups: u64) {
    let jobs: Vec<NewJob> = (0..count)
        .map(|i| {
            let job = NewJob::new("bench", i.to_le_bytes().to_vec());
            if groups == 0 {
                job
            } else {
                job.with_group(format!("tenant-{}", i % groups))
            }
        })
        .collect();
    for chunk in jobs.chunks(MAX_BULK) {
        client.enqueue_bulk(QUEUE, chunk).await.unwrap();
    }
}

/// Enqueues `count` small jobs in bulk calls, a few in flight at once.
async fn fill(client: &Client, count: u64) {
    let mut remaining = count;
    let mut tasks = tokio::task::JoinSet::new();
    while remaining > 0 {
        let n = remaining.min(MAX_BULK as u64);
        remaining -= n;
        let client = client.clone();
        tasks.spawn(async move {
            let jobs: Vec<NewJob> = (0..n)
                .map(|i| NewJob::new("bench", i.to_le_bytes().to_vec()))
                .collect();
            client.enqueue_bulk(QUEUE, &jobs).await.unwrap();
        });
        if tasks.len() >= 4 {
            tasks.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    client: &Client,
    conn: &mut wasmq::connection::RedisConnection,
    mode: &'static str,
    depth: u64,
    events: bool,
    cycles: usize,
    batch: usize,
    kind: Cycle,
) -> Row {
    // Warm up (script load, completed set at its retention size; for complete+fetch, the first
    // batch in hand) before counting.
    let mut held = Vec::new();
    for _ in 0..2 {
        cycle(client, batch, kind, &mut held).await;
    }
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(conn)
        .await
        .unwrap();
    let mut jobs = 0u64;
    let (mut fetch_time, mut complete_time) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..cycles {
        let (n, f, c) = cycle(client, batch, kind, &mut held).await;
        jobs += n;
        fetch_time += f;
        complete_time += c;
    }
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    let mut by_command = BTreeMap::new();
    let mut script_us = 0;
    for line in info.lines() {
        let Some(rest) = line.strip_prefix("cmdstat_") else {
            continue;
        };
        let Some((name, stats)) = rest.split_once(':') else {
            continue;
        };
        let calls = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if matches!(name, "evalsha" | "eval" | "fcall") {
            script_us += stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("usec="))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        // INFO and CONFIG RESETSTAT are the measurement, not part of the cycle.
        if name != "info" && !name.starts_with("config") {
            by_command.insert(name.to_string(), calls);
        }
    }
    let script_calls = ["evalsha", "eval", "fcall"]
        .iter()
        .map(|name| by_command.get(*name).copied().unwrap_or(0))
        .sum();
    Row {
        mode,
        batch,
        cycle: kind,
        depth,
        events,
        jobs,
        commands: by_command.values().sum(),
        script_calls,
        by_command,
        script_us,
        fetch_us: fetch_time.as_secs_f64() * 1e6 / cycles as f64,
        complete_us: complete_time.as_secs_f64() * 1e6 / cycles as f64,
    }
}

/// One worker cycle. Fetch then complete: lease a batch, complete it in a second call. Complete
/// and fetch: complete the batch in hand (`held`) and lease the next in one call (the first
/// cycle only fetches).
async fn cycle(
    client: &Client,
    batch: usize,
    kind: Cycle,
    held: &mut Vec<LeasedJob>,
) -> (u64, Duration, Duration) {
    let lease = Duration::from_secs(60);
    let started = Instant::now();
    if kind == Cycle::CompleteAndFetch && !held.is_empty() {
        let done: Vec<Completion> = held
            .iter()
            .map(|job| Completion::new(job, b"ok".to_vec()))
            .collect();
        let (report, fetched) = client
            .complete_and_fetch(QUEUE, &done, batch, lease, "bench-host")
            .await
            .unwrap();
        assert_eq!(report.completed.len(), done.len());
        assert_eq!(fetched.jobs.len(), batch, "the queue ran dry");
        *held = fetched.jobs;
        return (batch as u64, started.elapsed(), Duration::ZERO);
    }
    let jobs = client
        .fetch(QUEUE, batch, lease, "bench-host")
        .await
        .unwrap();
    let fetched = started.elapsed();
    assert_eq!(jobs.len(), batch, "the queue ran dry");
    if kind == Cycle::CompleteAndFetch {
        *held = jobs;
        return (batch as u64, fetched, Duration::ZERO);
    }
    let done: Vec<Completion> = jobs
        .iter()
        .map(|job| Completion::new(job, b"ok".to_vec()))
        .collect();
    let started = Instant::now();
    let report = client.complete(QUEUE, &done).await.unwrap();
    assert_eq!(report.completed.len(), batch);
    (batch as u64, fetched, started.elapsed())
}
