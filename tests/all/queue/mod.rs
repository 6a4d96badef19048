//! The queue protocol against real redis-server processes: every transition and option, lease
//! checks, bad input, crash recovery and concurrent fetchers. Each test starts its own server.
//!
//! One file per topic; the helpers here are shared by several of them.

#![allow(clippy::unwrap_used)]

mod call_records;
mod cancel;
mod complete_and_fetch;
mod control;
mod dead_letters;
mod dedupe;
mod enqueue;
mod event_stream;
mod group_concurrency;
mod leases;
mod limits_and_groups;
mod producers;
mod resilience;
mod retention;
mod retries;
mod search;
mod wakeups;

use std::future::Future;
use std::time::Duration;

use wasmq::queue::{Backoff, Client, LeasedJob, NewJob};

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

fn grouped(group: &str, n: usize) -> Vec<NewJob> {
    (0..n)
        .map(|i| NewJob::new("h", i.to_string().into_bytes()).with_group(group))
        .collect()
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
