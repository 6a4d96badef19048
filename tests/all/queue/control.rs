//! Pausing, cancelling and reading a queue: counts and pages by state, and a malformed job hash
//! read as an error.

use std::time::Duration;

use redis::AsyncCommands;
use wasmq::queue::{JobState, NewJob, QueueError};

use super::{HOST, LEASE, fetch_one, start};

#[tokio::test]
async fn a_paused_queue_leases_nothing_until_resumed() {
    let (_server, client) = start().await;
    client
        .enqueue("q", &NewJob::new("h", vec![]))
        .await
        .unwrap();
    assert!(client.pause("q").await.unwrap());
    assert!(
        !client.pause("q").await.unwrap(),
        "pausing twice is a no-op"
    );
    assert!(client.counts("q").await.unwrap().paused);
    // Enqueue still works while paused.
    client
        .enqueue("q", &NewJob::new("h", vec![]))
        .await
        .unwrap();
    assert!(client.fetch("q", 10, LEASE, HOST).await.unwrap().is_empty());
    assert!(client.resume("q").await.unwrap());
    assert_eq!(client.fetch("q", 10, LEASE, HOST).await.unwrap().len(), 2);
}

#[tokio::test]
async fn counts_and_lists_page_through_each_state() {
    let (_server, client) = start().await;
    let jobs: Vec<NewJob> = (0..7)
        .map(|n| NewJob::new("h", vec![]).with_id(format!("w{n}")))
        .collect();
    client.enqueue_bulk("q", &jobs).await.unwrap();
    client
        .enqueue(
            "q",
            &NewJob::new("h", vec![])
                .with_id("later")
                .with_delay(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    fetch_one(&client, "q").await;
    let counts = client.counts("q").await.unwrap();
    assert_eq!((counts.waiting, counts.delayed, counts.active), (6, 1, 1));
    let page1 = client.list("q", JobState::Waiting, 0, 4).await.unwrap();
    let page2 = client.list("q", JobState::Waiting, 4, 4).await.unwrap();
    let listed: Vec<String> = page1.iter().chain(&page2).map(|j| j.id.clone()).collect();
    assert_eq!(listed, ["w1", "w2", "w3", "w4", "w5", "w6"]);
    let active = client.list("q", JobState::Active, 0, 10).await.unwrap();
    assert_eq!(active[0].id, "w0");
    assert!(active[0].lease_expires_at_ms.is_some());
    assert_eq!(
        client.list("q", JobState::Delayed, 0, 10).await.unwrap()[0].id,
        "later"
    );
}

#[tokio::test]
async fn a_malformed_job_hash_in_redis_is_an_error_not_a_panic() {
    let (server, client) = start().await;
    let mut conn = server.connection().await;
    let () = conn
        .hset_multiple(
            "wasmq:{q}:job:weird",
            &[("state", "sleeping"), ("handler", "h")],
        )
        .await
        .unwrap();
    let err = client.get("q", "weird").await.unwrap_err();
    assert!(
        matches!(err, QueueError::MalformedJob { ref id, .. } if id == "weird"),
        "{err:?}"
    );

    // A waiting id with no hash behind it is dropped by fetch, which reports it.
    let () = conn.zadd("wasmq:{q}:waiting", "ghost", 1).await.unwrap();
    let fetched = client.fetch_batch("q", 10, LEASE, HOST).await.unwrap();
    assert!(fetched.jobs.is_empty());
    assert_eq!(fetched.dropped, 1);
    // A dead-letter entry without a hash makes listing fail with an error naming it.
    let () = conn.zadd("wasmq:{q}:dead", "ghost", 1).await.unwrap();
    let err = client.dead_letters("q", 0, 10).await.unwrap_err();
    assert!(
        matches!(err, QueueError::MalformedJob { ref id, .. } if id == "ghost"),
        "{err:?}"
    );
}
