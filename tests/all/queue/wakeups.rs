//! Waking idle workers: on enqueue, passed on by a full batch, and promotion of due jobs.

use std::time::{Duration, Instant};

use wasmq::queue::{JobState, NewJob};

use super::{HOST, LEASE, eventually, start};

#[tokio::test]
async fn an_idle_worker_waiting_on_the_queue_wakes_when_a_job_is_enqueued() {
    let (_server, client) = start().await;
    let mut waiter = client.waiter();
    assert!(
        !waiter.wait("q", Duration::from_millis(50)).await.unwrap(),
        "no work, no wake-up"
    );
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let woke = waiter.wait("q", Duration::from_secs(10)).await.unwrap();
        (woke, started.elapsed())
    });
    // Give the waiter a moment to block, then enqueue; the wake-up must not depend on it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    client
        .enqueue("q", &NewJob::new("h", vec![]))
        .await
        .unwrap();
    let (woke, waited) = waiting.await.unwrap();
    assert!(woke);
    assert!(waited < Duration::from_secs(5), "woke after {waited:?}");
}

#[tokio::test]
async fn a_full_batch_passes_the_wake_up_on_to_the_next_idle_worker() {
    let (_server, client) = start().await;
    let jobs: Vec<NewJob> = (0..5).map(|_| NewJob::new("h", vec![])).collect();
    client.enqueue_bulk("q", &jobs).await.unwrap();
    let mut first = client.waiter();
    let mut second = client.waiter();
    assert!(first.wait("q", Duration::from_secs(5)).await.unwrap());
    // The enqueue left one token; the first worker took it. Its full batch leaves work behind,
    // so fetch hands a token to the next worker.
    assert_eq!(client.fetch("q", 2, LEASE, HOST).await.unwrap().len(), 2);
    assert!(second.wait("q", Duration::from_secs(5)).await.unwrap());
    // A batch that empties the queue wakes nobody.
    assert_eq!(client.fetch("q", 10, LEASE, HOST).await.unwrap().len(), 3);
    assert!(!second.wait("q", Duration::from_millis(50)).await.unwrap());
}

#[tokio::test]
async fn promote_moves_due_jobs_to_waiting_and_reports_the_next_due_time() {
    let (server, client) = start().await;
    client
        .enqueue_bulk(
            "q",
            &[
                NewJob::new("h", vec![])
                    .with_id("soon")
                    .with_delay(Duration::from_millis(50)),
                NewJob::new("h", vec![])
                    .with_id("later")
                    .with_delay(Duration::from_secs(60)),
            ],
        )
        .await
        .unwrap();
    let later_due = client
        .get("q", "later")
        .await
        .unwrap()
        .unwrap()
        .run_at_ms
        .unwrap();
    let moved = eventually("the short delay to pass", || async {
        let (moved, next_due) = client.promote("q", 100).await.unwrap();
        (moved == 1).then_some(next_due)
    })
    .await;
    assert_eq!(moved, Some(later_due));
    let job = client.get("q", "soon").await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Waiting);
    assert!(server.now_ms().await >= job.run_at_ms.unwrap());
    let counts = client.counts("q").await.unwrap();
    assert_eq!((counts.waiting, counts.delayed), (1, 1));
}
