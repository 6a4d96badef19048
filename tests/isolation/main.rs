//! Tests that measure latency and need the machine to themselves: their own test binary,
//! which cargo runs after the main suite has finished, never beside it. Real `wasmq run`
//! processes, real Redis, real components.

#![allow(clippy::unwrap_used)]

#[path = "../all/support/mod.rs"]
mod support;

use std::time::Duration;

use wasmq::queue::{Client, NewJob, QueueConfig};

use support::eventually;
use support::guests;
use support::host::HostProcess;
use support::redis::RedisServer;

/// p99 of (finished - created) over `ids`, in ms, on the Redis clock.
async fn p99_latency_ms(client: &Client, queue: &str, ids: &[String]) -> u64 {
    let mut latencies = Vec::new();
    for id in ids {
        let job = client.get(queue, id).await.unwrap().unwrap();
        latencies.push(job.finished_at_ms.unwrap() - job.created_at_ms);
    }
    latencies.sort_unstable();
    latencies[(latencies.len() * 99).div_ceil(100) - 1]
}

/// Enqueues `n` echo jobs one at a time, open loop at 200/s, and waits for them all.
async fn echo_stream(client: &Client, queue: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    for i in 0..n {
        tick.tick().await;
        let job = NewJob::new("echo", format!("{i}").into_bytes());
        ids.push(client.enqueue(queue, &job).await.unwrap().id);
    }
    eventually("echo jobs done", Duration::from_secs(30), || async {
        let c = client.counts(queue).await.ok()?;
        (c.active + c.waiting == 0).then_some(())
    })
    .await;
    ids
}

#[tokio::test]
async fn hostile_queue_leaves_the_echo_queue_latency_within_twice_its_baseline() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    for q in ["echo", "hostile"] {
        let config = QueueConfig {
            completed_keep: None,
            ..QueueConfig::default()
        };
        client.set_config(q, &config).await.unwrap();
    }
    let toml = format!(
        "queues = [\"echo\", \"hostile\"]\nconcurrency = 32\n\
             [handlers.echo]\npath = {:?}\n\
             [handlers.loop]\npath = {:?}\ntimeout = \"1s\"\n\
             [handlers.bomb]\npath = {:?}\nmemory = \"32MiB\"\n\
             [queue.hostile]\nconcurrency = 8\n",
        guests::rust("echo"),
        guests::rust("infinite-loop"),
        guests::rust("memory-bomb"),
    );
    let _host = HostProcess::start_with_config(&redis.url(), &toml, &[]);

    // Warm up (first instantiations, connections), then the baseline.
    echo_stream(&client, "echo", 50).await;
    let baseline_ids = echo_stream(&client, "echo", 200).await;
    let baseline = p99_latency_ms(&client, "echo", &baseline_ids).await;

    // Enough hostile jobs to keep the hostile queue saturated for the whole measurement.
    let hostile: Vec<NewJob> = (0..100)
        .map(|i| {
            let job = if i % 4 == 0 {
                NewJob::new("bomb", Vec::new())
            } else {
                NewJob::new("loop", Vec::new())
            };
            job.with_max_attempts(1)
        })
        .collect();
    client.enqueue_bulk("hostile", &hostile).await.unwrap();
    eventually("hostile jobs running", Duration::from_secs(10), || async {
        let c = client.counts("hostile").await.ok()?;
        (c.active >= 8).then_some(())
    })
    .await;
    let loaded_ids = echo_stream(&client, "echo", 200).await;
    let loaded = p99_latency_ms(&client, "echo", &loaded_ids).await;
    let still_hostile = client.counts("hostile").await.unwrap();
    assert!(
        still_hostile.waiting > 0,
        "the hostile queue drained before the measurement ended: {still_hostile:?}"
    );
    // Each latency is the difference of two Redis timestamps in whole milliseconds, so each
    // p99 carries up to 2 ms of rounding: "within 2x" is checked to that resolution.
    const RESOLUTION_MS: u64 = 2;
    assert!(
        loaded <= 2 * baseline + RESOLUTION_MS,
        "echo p99 {loaded} ms under hostile load vs {baseline} ms baseline"
    );
}
