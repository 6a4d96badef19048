//! Call records (docs/protocol.md, "Call records"): what complete, complete_fetch, fail and
//! suspend write of an attempt's `calls` argument into its history entry, and that no text a
//! caller sends there makes a script fail or lose the rest of the batch.

use std::time::Duration;

use redis::AsyncCommands;
use wasmq::queue::{Completion, Failure, JobState, NewJob, RecordsAttempt, Suspension};

use super::{HOST, LEASE, fetch_one, no_retry_wait, start};

const CALLS: &str = r#"[{"k":"http","at":3,"ms":12,"m":"GET","t":"http://127.0.0.1:80","s":200},{"k":"sql","at":20,"ms":2,"op":"SELECT","db":"app"}]"#;

/// The raw `history` field of job `id` of queue `q`, decoded as JSON.
async fn raw_history(server: &crate::support::redis::RedisServer, id: &str) -> serde_json::Value {
    let mut conn = server.connection().await;
    let text: String = conn
        .hget(format!("wasmq:{{q}}:job:{id}"), "history")
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn each_attempt_end_writes_its_calls_as_a_nested_array_with_the_count_dropped() {
    let (server, client) = start().await;
    client
        .enqueue(
            "q",
            &NewJob::new("h", b"x".to_vec())
                .with_id("j")
                .with_max_attempts(3)
                .with_backoff(no_retry_wait()),
        )
        .await
        .unwrap();
    // A sleep, a failure whose calls past the bound were counted, then a success.
    let first = fetch_one(&client, "q").await;
    let report = client
        .suspend(
            "q",
            &[Suspension::new(&first, "sleep:nap", Duration::ZERO).with_calls(CALLS)],
        )
        .await
        .unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let second = fetch_one(&client, "q").await;
    let dropped = format!("{},7]", &CALLS[..CALLS.len() - 1]);
    client
        .fail(
            "q",
            &[Failure::new(&second, "retry", "boom").with_calls(dropped)],
        )
        .await
        .unwrap();
    let third = fetch_one(&client, "q").await;
    let (report, _) = client
        .complete_and_fetch(
            "q",
            &[Completion::new(&third, b"ok".to_vec()).with_calls(CALLS)],
            0,
            LEASE,
            HOST,
        )
        .await
        .unwrap();
    assert_eq!(report.completed, ["j"]);

    let history = raw_history(&server, "j").await;
    let expected: serde_json::Value = serde_json::from_str(CALLS).unwrap();
    for entry in history.as_array().unwrap() {
        assert_eq!(entry["calls"], expected, "{entry}");
    }
    assert_eq!(history[0]["sleep"], "nap");
    assert_eq!(history[0]["sleep_ms"], 0);
    assert!(history[0].get("calls_dropped").is_none());
    assert_eq!(history[1]["calls_dropped"], 7);
    assert!(history[2].get("calls_dropped").is_none());
    assert!(history[1].get("sleep").is_none());

    // As the Rust client reads it.
    let job = client.get("q", "j").await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Completed);
    let calls = job.history[1].calls.as_ref().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        (calls[0].kind.as_str(), calls[0].at_ms, calls[0].duration_ms),
        ("http", 3, 12)
    );
    assert_eq!(calls[0].target.as_deref(), Some("http://127.0.0.1:80"));
    assert_eq!(calls[0].status, Some(200));
    assert_eq!(calls[1].op.as_deref(), Some("SELECT"));
    assert_eq!(calls[1].db.as_deref(), Some("app"));
    assert_eq!(job.history[1].calls_dropped, Some(7));
    assert_eq!(job.history[0].sleep.as_deref(), Some("nap"));
}

#[tokio::test]
async fn a_call_record_that_is_not_an_array_of_entries_is_left_out_and_the_batch_goes_on() {
    let (server, client) = start().await;
    // Not JSON, an object, empty, a count alone, a number cjson cannot write back, nested
    // deeper than cjson decodes.
    let deep = "[".repeat(2000);
    let bad = [
        "not json",
        r#"{"k":"http"}"#,
        "[]",
        "[5]",
        "[1e999]",
        deep.as_str(),
    ];
    let jobs: Vec<NewJob> = (0..bad.len() + 1)
        .map(|i| {
            NewJob::new("h", b"x".to_vec())
                .with_id(format!("b{i}"))
                .with_max_attempts(2)
                .with_backoff(no_retry_wait())
        })
        .collect();
    client.enqueue_bulk("q", &jobs).await.unwrap();
    let leased = client.fetch("q", jobs.len(), LEASE, HOST).await.unwrap();
    assert_eq!(leased.len(), jobs.len());
    // One batch of completions, each with a bad record but the last, which is good: every
    // job completes, the good one with its calls, the others without the field.
    let done: Vec<Completion> = leased
        .iter()
        .enumerate()
        .map(|(i, job)| {
            let calls = bad.get(i).copied().unwrap_or(CALLS);
            Completion::new(job, b"ok".to_vec()).with_calls(calls)
        })
        .collect();
    let report = client.complete("q", &done).await.unwrap();
    assert_eq!(report.completed.len(), jobs.len(), "{report:?}");
    for (i, job) in leased.iter().enumerate() {
        let history = raw_history(&server, &job.id).await;
        let entry = &history[0];
        match bad.get(i) {
            Some(text) => {
                assert!(entry.get("calls").is_none(), "{text}: {entry}");
                // Only a whole count after entries, or alone, is a count.
                if *text == "[5]" {
                    assert_eq!(entry["calls_dropped"], 5, "{entry}");
                } else {
                    assert!(entry.get("calls_dropped").is_none(), "{text}: {entry}");
                }
            }
            None => assert_eq!(
                entry["calls"],
                serde_json::from_str::<serde_json::Value>(CALLS).unwrap()
            ),
        }
        // The Rust client still reads every job.
        let read = client.get("q", &job.id).await.unwrap().unwrap();
        assert_eq!(read.state, JobState::Completed);
    }
}

#[tokio::test]
async fn an_expired_lease_records_no_calls() {
    let (server, client) = start().await;
    client
        .enqueue(
            "q",
            &NewJob::new("h", b"x".to_vec())
                .with_id("e")
                .with_max_attempts(2)
                .with_backoff(no_retry_wait()),
        )
        .await
        .unwrap();
    client
        .fetch("q", 1, Duration::from_millis(10), HOST)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    crate::support::jobs::recover_expired_leases(&client, "q", &[], 1).await;
    let history = raw_history(&server, "e").await;
    assert_eq!(history[0]["outcome"], "lease_expired");
    assert!(history[0].get("calls").is_none());
    assert!(history[0].get("calls_dropped").is_none());
}

/// Data commands Redis runs to complete (then, for as many more, fail) `n` leased jobs, each
/// with `calls` as its record.
async fn end_commands(
    server: &crate::support::redis::RedisServer,
    queue: &str,
    n: usize,
    calls: &str,
) -> [u64; 2] {
    let client = server.client().await;
    let jobs: Vec<NewJob> = (0..2 * n)
        .map(|i| {
            NewJob::new("h", i.to_string().into_bytes())
                .with_max_attempts(3)
                .with_backoff(no_retry_wait())
        })
        .collect();
    client.enqueue_bulk(queue, &jobs).await.unwrap();
    let leased = client.fetch(queue, 2 * n, LEASE, HOST).await.unwrap();
    let (done, failed) = leased.split_at(n);
    let before = server.data_commands().await;
    let done: Vec<Completion> = done
        .iter()
        .map(|j| Completion::new(j, vec![]).with_calls(calls))
        .collect();
    client.complete(queue, &done).await.unwrap();
    let after_complete = server.data_commands().await;
    let failed: Vec<Failure> = failed
        .iter()
        .map(|j| Failure::new(j, "retry", "boom").with_calls(calls))
        .collect();
    client.fail(queue, &failed).await.unwrap();
    let after_fail = server.data_commands().await;
    [after_complete - before, after_fail - after_complete]
}

/// A call record costs no Redis command: an attempt's end with one runs what it runs
/// without (complete: `HMGET`, `HSET` per job; fail back to waiting: those and the `INCRBY`
/// of its sequence number), measured as the difference between batches of 20 and 40 so that
/// what each call costs once cancels out; the totals are the same to the command.
#[tokio::test]
async fn a_call_record_adds_no_command_per_job() {
    let server = crate::support::redis::RedisServer::start();
    let mut totals = Vec::new();
    for (what, calls) in [("none", ""), ("calls", CALLS)] {
        let small = end_commands(&server, &format!("{what}-20"), 20, calls).await;
        let big = end_commands(&server, &format!("{what}-40"), 40, calls).await;
        let per_job: Vec<u64> = (0..2).map(|i| (big[i] - small[i]) / 20).collect();
        let rest: Vec<u64> = (0..2).map(|i| (big[i] - small[i]) % 20).collect();
        assert_eq!(
            (per_job, rest),
            (vec![2, 3], vec![0, 0]),
            "{what}: commands per job in complete, fail ({small:?}, {big:?})"
        );
        totals.push((small, big));
    }
    assert_eq!(totals[0], totals[1], "with and without call records");
}
