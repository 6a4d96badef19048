//! What many suites do to a queue before a host runs it: keep its completed jobs to read them
//! back, and enqueue a batch whose ids the test then follows.

use wasmq::queue::{Client, NewJob, QueueConfig};

/// Keeps every completed job of `queue` (no retention count or age), so a test can count and
/// read them all. The queue's other settings go back to their defaults.
pub async fn keep_everything(client: &Client, queue: &str) {
    let config = QueueConfig {
        completed_keep: None,
        ..QueueConfig::default()
    };
    client.set_config(queue, &config).await.unwrap();
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
