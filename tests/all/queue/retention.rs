//! Completed jobs kept by count and by age.

use std::time::Duration;

use redis::AsyncCommands;
use wasmq::queue::{Completion, JobState, NewJob, QueueConfig};

use super::{HOST, LEASE, eventually, fetch_one, start};

#[tokio::test]
async fn completed_jobs_beyond_the_retention_count_are_deleted_oldest_first() {
    let (server, client) = start().await;
    let config = QueueConfig {
        completed_keep: Some(3),
        ..QueueConfig::default()
    };
    client.set_config("q", &config).await.unwrap();
    assert_eq!(client.config("q").await.unwrap(), config);
    let jobs: Vec<NewJob> = (1..=5)
        .map(|n| NewJob::new("h", vec![]).with_id(format!("j{n}")))
        .collect();
    client.enqueue_bulk("q", &jobs).await.unwrap();
    // One at a time, so completion order (and so age) is j1..j5.
    for _ in 0..5 {
        let leased = fetch_one(&client, "q").await;
        client
            .complete("q", &[Completion::new(&leased, leased.id.clone())])
            .await
            .unwrap();
    }
    let completed = client.list("q", JobState::Completed, 0, 10).await.unwrap();
    let kept: Vec<&str> = completed.iter().map(|job| job.id.as_str()).collect();
    assert_eq!(kept, ["j3", "j4", "j5"]);
    assert_eq!(completed[2].result.as_deref(), Some(&b"j5"[..]));
    let mut conn = server.connection().await;
    for gone in ["j1", "j2"] {
        let exists: bool = conn
            .exists(format!("wasmq:{{q}}:job:{gone}"))
            .await
            .unwrap();
        assert!(!exists, "{gone} should have been deleted");
    }
}

#[tokio::test]
async fn a_completion_batch_of_any_size_leaves_only_completed_keep_jobs() {
    let (server, client) = start().await;
    let config = QueueConfig {
        completed_keep: Some(10),
        ..QueueConfig::default()
    };
    client.set_config("q", &config).await.unwrap();
    // Over the 1000 deletions a call may make beyond the jobs it completes.
    let jobs = vec![NewJob::new("h", vec![]); 2500];
    client.enqueue_bulk("q", &jobs).await.unwrap();
    let leased = client.fetch("q", 2500, LEASE, HOST).await.unwrap();
    let done: Vec<Completion> = leased.iter().map(|j| Completion::new(j, vec![])).collect();
    let report = client.complete("q", &done).await.unwrap();
    assert_eq!(report.completed.len(), 2500);
    assert_eq!(client.counts("q").await.unwrap().completed, 10);
    let mut conn = server.connection().await;
    let hashes: Vec<String> = conn.keys("wasmq:{q}:job:*").await.unwrap();
    assert_eq!(hashes.len(), 10);
}

#[tokio::test]
async fn keep_zero_deletes_on_completion_and_max_age_deletes_old_completions() {
    let (server, client) = start().await;
    client
        .set_config(
            "none",
            &QueueConfig {
                completed_keep: Some(0),
                ..QueueConfig::default()
            },
        )
        .await
        .unwrap();
    let id = client
        .enqueue("none", &NewJob::new("h", vec![]))
        .await
        .unwrap()
        .id;
    let leased = fetch_one(&client, "none").await;
    assert_eq!(
        client
            .complete("none", &[Completion::new(&leased, vec![])])
            .await
            .unwrap()
            .completed,
        [id.as_str()]
    );
    assert!(client.get("none", &id).await.unwrap().is_none());
    assert_eq!(client.counts("none").await.unwrap().completed, 0);

    client
        .set_config(
            "aged",
            &QueueConfig {
                completed_keep: None,
                completed_max_age: Some(Duration::from_millis(100)),
                ..QueueConfig::default()
            },
        )
        .await
        .unwrap();
    client
        .enqueue_bulk(
            "aged",
            &[
                NewJob::new("h", vec![]).with_id("old"),
                NewJob::new("h", vec![]).with_id("new"),
            ],
        )
        .await
        .unwrap();
    let old = fetch_one(&client, "aged").await;
    client
        .complete("aged", &[Completion::new(&old, vec![])])
        .await
        .unwrap();
    let start = server.now_ms().await;
    eventually("the first completion to age", || async {
        (server.now_ms().await > start + 150).then_some(())
    })
    .await;
    let new = fetch_one(&client, "aged").await;
    client
        .complete("aged", &[Completion::new(&new, vec![])])
        .await
        .unwrap();
    let kept = client
        .list("aged", JobState::Completed, 0, 10)
        .await
        .unwrap();
    assert_eq!(
        kept.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        ["new"]
    );
}
