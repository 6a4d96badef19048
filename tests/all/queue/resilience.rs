//! Redis forgetting scripts, being killed (with AOF), and batch sizes bounded so no call blocks it
//! for long.

use std::time::{Duration, Instant};

use wasmq::queue::{NewJob, QueueError};

use crate::support::redis::RedisServer;

use super::{HOST, LEASE, eventually, fetch_one, start};

#[tokio::test]
async fn scripts_are_reloaded_when_redis_forgets_them() {
    let (server, client) = start().await;
    client
        .enqueue("q", &NewJob::new("h", vec![]))
        .await
        .unwrap();
    assert_eq!(client.fetch("q", 1, LEASE, HOST).await.unwrap().len(), 1);
    // As after a restart without persistence: no scripts, no function library.
    let mut conn = server.connection().await;
    for flush in ["SCRIPT", "FUNCTION"] {
        let () = redis::cmd(flush)
            .arg("FLUSH")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    client
        .enqueue("q", &NewJob::new("h", vec![]))
        .await
        .unwrap();
    assert_eq!(client.fetch("q", 10, LEASE, HOST).await.unwrap().len(), 1);
    let libraries: redis::Value = redis::cmd("FUNCTION")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        format!("{libraries:?}").contains("wasmq_"),
        "the library is loaded again: {libraries:?}"
    );
}

#[tokio::test]
async fn with_aof_a_job_survives_redis_being_killed_and_the_client_reconnects() {
    let mut server = RedisServer::start_with_aof();
    let client = server.client().await;
    let id = client
        .enqueue("q", &NewJob::new("h", b"durable".to_vec()))
        .await
        .unwrap()
        .id;
    server.kill();
    // An outage longer than the client's reconnect retries: every call fails meanwhile.
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(1) {
        assert!(client.counts("q").await.is_err(), "Redis is down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.restart();
    // The shared connection reconnects by itself; calls fail until it has.
    let job = eventually("the client to reconnect", || async {
        client.get("q", &id).await.ok().flatten()
    })
    .await;
    assert_eq!(job.payload, b"durable");
    assert_eq!(fetch_one(&client, "q").await.id, id);
}

#[tokio::test]
async fn batch_sizes_are_bounded_so_no_call_blocks_redis_for_long() {
    let (_server, client) = start().await;
    for result in [
        client
            .fetch("q", wasmq::queue::MAX_BULK + 1, LEASE, HOST)
            .await
            .map(|_| ()),
        client.recover_expired("q", 0, &[]).await.map(|_| ()),
        client
            .enqueue_bulk(
                "q",
                &vec![NewJob::new("h", vec![]); wasmq::queue::MAX_BULK + 1],
            )
            .await
            .map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(QueueError::InvalidArgument(_))),
            "{result:?}"
        );
    }
}
