//! The queue's events stream: one entry per transition, bounded in size.

use std::collections::BTreeMap;

use wasmq::queue::{Completion, Failure, NewJob};

use super::{HOST, LEASE, fetch_one, no_retry_wait, start};

#[tokio::test]
async fn the_events_stream_records_each_transition_with_job_ids_and_attempts() {
    let (_server, client) = start().await;
    client
        .enqueue_bulk(
            "q",
            &[
                NewJob::new("h", vec![]).with_id("a"),
                NewJob::new("h", vec![])
                    .with_id("b")
                    .with_max_attempts(2)
                    .with_backoff(no_retry_wait()),
            ],
        )
        .await
        .unwrap();
    let leased = client.fetch("q", 2, LEASE, HOST).await.unwrap();
    client
        .complete("q", &[Completion::new(&leased[0], vec![])])
        .await
        .unwrap();
    client
        .fail("q", &[Failure::new(&leased[1], "trap", "x")])
        .await
        .unwrap();
    let b = fetch_one(&client, "q").await;
    client
        .fail("q", &[Failure::new(&b, "trap", "x")])
        .await
        .unwrap();
    client.replay("q", &["b".to_string()]).await.unwrap();
    client.cancel("q", &["b".to_string()]).await.unwrap();

    let events = client.events("q", None, 100).await.unwrap();
    let seen: Vec<(&str, Vec<(String, u32)>)> = events
        .iter()
        .map(|e| (e.event.as_str(), e.jobs.clone()))
        .collect();
    let pair = |id: &str, n: u32| (id.to_string(), n);
    assert_eq!(
        seen,
        [
            ("enqueued", vec![pair("a", 0), pair("b", 0)]),
            ("active", vec![pair("a", 1), pair("b", 1)]),
            ("completed", vec![pair("a", 1)]),
            ("retried", vec![pair("b", 1)]),
            ("active", vec![pair("b", 2)]),
            ("dead", vec![pair("b", 2)]),
            ("replayed", vec![pair("b", 0)]),
            ("cancelled", vec![pair("b", 0)]),
        ]
    );
    // Reading on from an entry returns only what came after it.
    let after = client
        .events("q", Some(&events[5].stream_id), 100)
        .await
        .unwrap();
    assert_eq!(after.len(), 2);
}

#[tokio::test]
async fn an_events_entry_lists_at_most_100_jobs_so_maxlen_bounds_the_streams_memory() {
    let (_server, client) = start().await;
    let jobs: Vec<NewJob> = (0..250)
        .map(|n| NewJob::new("h", vec![]).with_id(format!("j{n:03}")))
        .collect();
    client.enqueue_bulk("q", &jobs).await.unwrap();
    let leased = client.fetch("q", 250, LEASE, HOST).await.unwrap();
    let done: Vec<Completion> = leased.iter().map(|j| Completion::new(j, vec![])).collect();
    client.complete("q", &done).await.unwrap();

    let events = client.events("q", None, 100).await.unwrap();
    let mut seen: Vec<(&str, usize)> = Vec::new();
    let mut listed: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for e in &events {
        seen.push((e.event.as_str(), e.jobs.len()));
        listed
            .entry(e.event.as_str())
            .or_default()
            .extend(e.jobs.iter().map(|(id, _)| id.clone()));
    }
    assert_eq!(
        seen,
        [
            ("enqueued", 100),
            ("enqueued", 100),
            ("enqueued", 50),
            ("active", 100),
            ("active", 100),
            ("active", 50),
            ("completed", 100),
            ("completed", 100),
            ("completed", 50),
        ]
    );
    // Every job once per transition, in order.
    let ids: Vec<String> = (0..250).map(|n| format!("j{n:03}")).collect();
    for (event, jobs) in listed {
        assert_eq!(jobs, ids, "{event}");
    }
}
