//! What many suites do to a queue: keep its completed jobs to read them back, set its rate
//! limits, enqueue a batch whose ids the test then follows, wait for its counts or for its
//! expired leases to be recovered, and measure how many starts a rate window held.

use std::time::Duration;

use wasmq::queue::{Client, FailReport, JobState, NewJob, QueueConfig, RetryPolicy};

/// Keeps every completed job of `queue` (no retention count or age), so a test can count and
/// read them all. The queue's other settings go back to their defaults.
pub async fn keep_everything(client: &Client, queue: &str) {
    let config = QueueConfig {
        completed_keep: None,
        ..QueueConfig::default()
    };
    client.set_config(queue, &config).await.unwrap();
}

/// Sets the rate limits of `queue` ("N/duration", e.g. "100/1s") and keeps every completed
/// job, so a test can read them all; checks the config reads back as set. The queue's other
/// settings go back to their defaults.
pub async fn set_limits(
    client: &Client,
    queue: &str,
    rate: Option<&str>,
    group_rate: Option<&str>,
) {
    let config = QueueConfig {
        completed_keep: None,
        rate: rate.map(|r| r.parse().unwrap()),
        group_rate: group_rate.map(|r| r.parse().unwrap()),
        ..QueueConfig::default()
    };
    client.set_config(queue, &config).await.unwrap();
    assert_eq!(client.config(queue).await.unwrap(), config);
}

/// Enqueues `jobs` in one call and returns their ids, in order.
pub async fn enqueue_ids(client: &Client, queue: &str, jobs: &[NewJob]) -> Vec<String> {
    client
        .enqueue_bulk(queue, jobs)
        .await
        .unwrap()
        .into_iter()
        .map(|enqueued| enqueued.id)
        .collect()
}

/// Waits until `queue` counts exactly `n` jobs in `state`, failing the test after `within`.
pub async fn wait_for_count(
    client: &Client,
    queue: &str,
    state: JobState,
    n: u64,
    within: Duration,
) {
    super::eventually(&format!("{n} jobs {state}"), within, || async {
        let counts = client.counts(queue).await.ok()?;
        (counts.get(state) == n).then_some(())
    })
    .await;
}

/// Calls `recover_expired` on `queue` (with the handlers' retry `policies`) until one call
/// recovers at least `at_least` leases, failing the test after 10 s, and returns that call's
/// report: what a test does after leasing jobs with a short lease and letting it run out.
pub async fn recover_expired_leases(
    client: &Client,
    queue: &str,
    policies: &[(String, RetryPolicy)],
    at_least: usize,
) -> FailReport {
    super::eventually(
        &format!("{at_least} expired leases to be recovered"),
        Duration::from_secs(10),
        || async {
            let report = client.recover_expired(queue, 10, policies).await.unwrap();
            (report.outcomes.len() >= at_least).then_some(report)
        },
    )
    .await
}

/// The most starts (times in ms, in any order) that any half-open window `[t, t + window)`
/// holds.
pub fn most_starts_in_a_window(starts: &[u64], window: u64) -> usize {
    let mut sorted = starts.to_vec();
    sorted.sort_unstable();
    let (mut most, mut first) = (0, 0);
    for last in 0..sorted.len() {
        while sorted[last] - sorted[first] >= window {
            first += 1;
        }
        most = most.max(last - first + 1);
    }
    most
}
