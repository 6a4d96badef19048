//! The dead-letter queue: how jobs get there (attempts used up, a permanent failure, a result over
//! the limit), replay and purge.

use redis::AsyncCommands;
use wasmq::queue::{Completion, FailOutcome, Failure, JobState, NewJob, QueueConfig};

use super::{HOST, LEASE, fetch_one, no_retry_wait, start};

#[tokio::test]
async fn a_job_out_of_attempts_is_dead_lettered_with_every_attempt_kept() {
    let (_server, client) = start().await;
    let id = client
        .enqueue(
            "q",
            &NewJob::new("h", b"payload".to_vec())
                .with_max_attempts(3)
                .with_backoff(no_retry_wait()),
        )
        .await
        .unwrap()
        .id;
    let classes = ["timeout", "trap", "guest_fail"];
    for (n, class) in classes.iter().enumerate() {
        let leased = fetch_one(&client, "q").await;
        assert_eq!(leased.attempt as usize, n + 1);
        let report = client
            .fail(
                "q",
                &[Failure::new(&leased, *class, format!("failure {}", n + 1))],
            )
            .await
            .unwrap();
        let expected = if n + 1 < 3 { "retry" } else { "dead" };
        let got = match report.outcomes[0].1 {
            FailOutcome::Retry { .. } => "retry",
            FailOutcome::Dead => "dead",
        };
        assert_eq!(got, expected, "after attempt {}", n + 1);
    }
    let job = client.get("q", &id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.payload, b"payload");
    assert_eq!(job.last_error.as_deref(), Some("failure 3"));
    let history: Vec<(u32, &str, &str)> = job
        .history
        .iter()
        .map(|a| (a.attempt, a.outcome.as_str(), a.error.as_str()))
        .collect();
    assert_eq!(
        history,
        [
            (1, "timeout", "failure 1"),
            (2, "trap", "failure 2"),
            (3, "guest_fail", "failure 3")
        ]
    );
    for attempt in &job.history {
        assert_eq!(attempt.host, HOST);
        assert!(attempt.started_at > 0 && attempt.finished_at >= attempt.started_at);
    }
    let dlq = client.dead_letters("q", 0, 10).await.unwrap();
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].id, id);
    assert!(client.fetch("q", 10, LEASE, HOST).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_permanent_failure_dead_letters_at_once() {
    let (_server, client) = start().await;
    client
        .enqueue("q", &NewJob::new("h", vec![]).with_max_attempts(10))
        .await
        .unwrap();
    let leased = fetch_one(&client, "q").await;
    let report = client
        .fail(
            "q",
            &[Failure::new(&leased, "guest_fail", "bad input").permanent()],
        )
        .await
        .unwrap();
    assert_eq!(report.outcomes[0].1, FailOutcome::Dead);
    let counts = client.counts("q").await.unwrap();
    assert_eq!((counts.dead, counts.retry, counts.active), (1, 0, 0));
}

#[tokio::test]
async fn a_result_over_the_limit_dead_letters_its_job() {
    let (_server, client) = start().await;
    client
        .set_config(
            "q",
            &QueueConfig {
                max_result_bytes: 4,
                ..QueueConfig::default()
            },
        )
        .await
        .unwrap();
    client
        .enqueue_bulk(
            "q",
            &[
                NewJob::new("h", vec![]).with_id("ok"),
                NewJob::new("h", vec![]).with_id("big"),
            ],
        )
        .await
        .unwrap();
    let leased = client.fetch("q", 2, LEASE, HOST).await.unwrap();
    let report = client
        .complete(
            "q",
            &[
                Completion::new(&leased[0], b"1234".to_vec()),
                Completion::new(&leased[1], b"12345".to_vec()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(report.completed, ["ok"]);
    assert_eq!(report.result_too_large, ["big"]);
    let big = client.get("q", "big").await.unwrap().unwrap();
    assert_eq!(
        (big.state, big.last_outcome.as_deref()),
        (JobState::Dead, Some("result_too_large"))
    );
    assert_eq!(client.counts("q").await.unwrap().active, 0);
}

#[tokio::test]
async fn replay_returns_dead_jobs_to_waiting_with_fresh_attempts_and_history_kept() {
    let (_server, client) = start().await;
    let id = client
        .enqueue("q", &NewJob::new("h", vec![]).with_max_attempts(1))
        .await
        .unwrap()
        .id;
    let leased = fetch_one(&client, "q").await;
    client
        .fail("q", &[Failure::new(&leased, "trap", "boom")])
        .await
        .unwrap();
    let report = client
        .replay("q", &[id.clone(), "missing".to_string()])
        .await
        .unwrap();
    assert_eq!(report.done, [id.as_str()]);
    assert_eq!(
        report.skipped,
        [("missing".to_string(), "not_found".to_string())]
    );

    let job = client.get("q", &id).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.attempt, job.replays),
        (JobState::Waiting, 0, 1)
    );
    assert_eq!(job.history.len(), 1, "history survives a replay");
    // Due since the replay, not since its first enqueue.
    let replayed_at = job.run_at_ms.unwrap();
    assert!(replayed_at >= job.history[0].finished_at, "{job:?}");
    let again = fetch_one(&client, "q").await;
    assert_eq!(again.attempt, 1);

    // Replaying the oldest without naming ids works the same way.
    client
        .fail("q", &[Failure::new(&again, "trap", "boom")])
        .await
        .unwrap();
    assert_eq!(
        client.replay_oldest("q", 10).await.unwrap().done,
        [id.as_str()]
    );
    assert_eq!(client.counts("q").await.unwrap().dead, 0);
}

#[tokio::test]
async fn purge_deletes_dead_jobs_and_nothing_else() {
    let (server, client) = start().await;
    let jobs: Vec<NewJob> = ["d1", "d2", "alive"]
        .iter()
        .map(|id| NewJob::new("h", vec![]).with_id(*id).with_max_attempts(1))
        .collect();
    client.enqueue_bulk("q", &jobs).await.unwrap();
    let leased = client.fetch("q", 2, LEASE, HOST).await.unwrap();
    let failures: Vec<Failure> = leased
        .iter()
        .map(|j| Failure::new(j, "trap", "x"))
        .collect();
    client.fail("q", &failures).await.unwrap();

    let report = client
        .purge("q", &["d1".to_string(), "alive".to_string()])
        .await
        .unwrap();
    assert_eq!(report.done, ["d1"]);
    assert_eq!(
        report.skipped,
        [("alive".to_string(), "waiting".to_string())]
    );
    assert_eq!(client.purge_oldest("q", 10).await.unwrap().done, ["d2"]);
    let mut conn = server.connection().await;
    let exists: bool = conn.exists("wasmq:{q}:job:d1").await.unwrap();
    assert!(!exists);
    let counts = client.counts("q").await.unwrap();
    assert_eq!((counts.dead, counts.waiting), (0, 1));
}
