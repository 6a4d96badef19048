//! Leases: the token checked on every ack, extend and release, expired leases recovered (also from
//! a fetcher that died), and concurrent fetchers leasing each job once.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use wasmq::queue::{Completion, FailOutcome, Failure, JobState, LeaseRejection, NewJob};

use crate::support::jobs::{keep_everything, recover_expired_leases};
use crate::support::redis::RedisServer;

use super::{HOST, LEASE, eventually, fetch_one, no_retry_wait, start};

#[tokio::test]
async fn a_stale_lease_token_cannot_complete_fail_extend_or_release_the_job() {
    let (_server, client) = start().await;
    client
        .enqueue("q", &NewJob::new("h", vec![]).with_backoff(no_retry_wait()))
        .await
        .unwrap();
    let first = client
        .fetch("q", 1, Duration::from_millis(50), "host-old")
        .await
        .unwrap()
        .remove(0);
    // The old holder stalls; its lease expires and is recovered; another host takes the job.
    recover_expired_leases(&client, "q", &[], 1).await;
    let second = client
        .fetch("q", 1, LEASE, "host-new")
        .await
        .unwrap()
        .remove(0);
    assert_eq!(second.id, first.id);
    assert_eq!(second.attempt, 2, "the lost lease counted as an attempt");

    let stale = client
        .complete("q", &[Completion::new(&first, vec![])])
        .await
        .unwrap();
    assert!(stale.completed.is_empty());
    assert_eq!(
        stale.rejected,
        [(first.id.clone(), LeaseRejection::TokenMismatch)]
    );
    let failed = client
        .fail("q", &[Failure::new(&first, "trap", "late")])
        .await
        .unwrap();
    assert_eq!(failed.rejected.len(), 1);
    let extended = client.extend("q", &[first.lease()], LEASE).await.unwrap();
    assert_eq!(extended.rejected.len(), 1);
    let released = client.release("q", &[first.lease()]).await.unwrap();
    assert!(released.released.is_empty());
    assert_eq!(released.rejected.len(), 1);

    let job = client.get("q", &first.id).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.host.as_deref()),
        (JobState::Active, Some("host-new"))
    );
    // The current holder completes; afterwards even its own token is rejected as not active.
    let done = client
        .complete("q", &[Completion::new(&second, vec![])])
        .await
        .unwrap();
    assert_eq!(done.completed, [second.id.as_str()]);
    let twice = client
        .complete("q", &[Completion::new(&second, vec![])])
        .await
        .unwrap();
    assert_eq!(
        twice.rejected,
        [(
            second.id.clone(),
            LeaseRejection::NotActive("completed".into())
        )]
    );
}

#[tokio::test]
async fn extend_moves_the_lease_expiry_so_recovery_leaves_the_job_alone() {
    let (server, client) = start().await;
    client
        .enqueue("q", &NewJob::new("h", vec![]))
        .await
        .unwrap();
    let leased = client
        .fetch("q", 1, Duration::from_millis(200), HOST)
        .await
        .unwrap()
        .remove(0);
    let before = server.now_ms().await;
    let extended = client
        .extend("q", &[leased.lease()], Duration::from_secs(30))
        .await
        .unwrap();
    assert!(extended.rejected.is_empty());
    assert!(extended.lease_expires_at_ms >= before + 30_000);
    let start = server.now_ms().await;
    eventually("the original lease to pass", || async {
        (server.now_ms().await > start + 250).then_some(())
    })
    .await;
    assert!(
        client
            .recover_expired("q", 10, &[])
            .await
            .unwrap()
            .outcomes
            .is_empty()
    );
    let job = client.get("q", &leased.id).await.unwrap().unwrap();
    assert_eq!(job.lease_expires_at_ms, Some(extended.lease_expires_at_ms));
}

#[tokio::test]
async fn release_returns_jobs_to_their_place_in_line_without_counting_the_attempt() {
    let (_server, client) = start().await;
    client
        .enqueue_bulk(
            "q",
            &[
                NewJob::new("h", vec![]).with_id("first"),
                NewJob::new("h", vec![]).with_id("second"),
            ],
        )
        .await
        .unwrap();
    let leased = fetch_one(&client, "q").await;
    assert_eq!((leased.id.as_str(), leased.attempt), ("first", 1));
    let released = client.release("q", &[leased.lease()]).await.unwrap();
    assert_eq!(released.released, ["first"]);
    let job = client.get("q", "first").await.unwrap().unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Waiting, 0));
    assert!(job.history.is_empty(), "a release is not an attempt");
    let again = fetch_one(&client, "q").await;
    assert_eq!((again.id.as_str(), again.attempt), ("first", 1));
}

#[tokio::test]
async fn a_fetcher_that_dies_before_acking_loses_nothing() {
    let server = RedisServer::start();
    let survivor = server.client().await;
    let jobs: Vec<NewJob> = (0..10)
        .map(|n| {
            NewJob::new("h", vec![])
                .with_id(format!("j{n}"))
                .with_backoff(no_retry_wait())
        })
        .collect();
    survivor.enqueue_bulk("q", &jobs).await.unwrap();
    let expiry;
    {
        let doomed = server.client().await;
        let leased = doomed
            .fetch("q", 10, Duration::from_millis(300), "host-doomed")
            .await
            .unwrap();
        assert_eq!(leased.len(), 10);
        expiry = leased[0].lease_expires_at_ms;
        // The fetcher dies here: its connection goes away with it, nothing is acked.
    }
    // Until the lease runs out, the jobs stay leased to the dead host.
    let early = survivor.recover_expired("q", 100, &[]).await.unwrap();
    if server.now_ms().await < expiry {
        assert!(
            early.outcomes.is_empty(),
            "recovered before the lease expired"
        );
    }
    let mut recovered: HashSet<String> = early.outcomes.into_iter().map(|(id, _)| id).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while recovered.len() < 10 {
        assert!(
            Instant::now() < deadline,
            "only {} leases recovered",
            recovered.len()
        );
        let report = survivor.recover_expired("q", 100, &[]).await.unwrap();
        recovered.extend(report.outcomes.into_iter().map(|(id, _)| id));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let again = survivor.fetch("q", 100, LEASE, HOST).await.unwrap();
    assert_eq!(again.len(), 10, "every job came back");
    assert!(
        again.iter().all(|job| job.attempt == 2),
        "the lost lease counted as an attempt"
    );
    let job = survivor.get("q", "j0").await.unwrap().unwrap();
    assert_eq!(job.history.len(), 1);
    assert_eq!(
        (
            job.history[0].outcome.as_str(),
            job.history[0].error.as_str(),
            job.history[0].host.as_str()
        ),
        ("lease_expired", "lease expired", "host-doomed")
    );
}

#[tokio::test]
async fn a_lost_lease_on_the_last_attempt_dead_letters_the_job() {
    let (_server, client) = start().await;
    client
        .enqueue("q", &NewJob::new("h", vec![]).with_max_attempts(1))
        .await
        .unwrap();
    client
        .fetch("q", 1, Duration::from_millis(20), HOST)
        .await
        .unwrap();
    let report = recover_expired_leases(&client, "q", &[], 1).await;
    assert_eq!(report.outcomes[0].1, FailOutcome::Dead);
    assert_eq!(client.counts("q").await.unwrap().dead, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_fetchers_lease_each_of_5000_jobs_exactly_once() {
    let server = RedisServer::start();
    let client = server.client().await;
    keep_everything(&client, "q").await;
    let jobs: Vec<NewJob> = (0..5000)
        .map(|n| NewJob::new("h", n.to_string().into_bytes()))
        .collect();
    for chunk in jobs.chunks(1000) {
        client.enqueue_bulk("q", chunk).await.unwrap();
    }
    let mut fetchers = Vec::new();
    for f in 0..8 {
        // Each fetcher has its own connection, like separate hosts.
        let client = server.client().await;
        fetchers.push(tokio::spawn(async move {
            let host = format!("host-{f}");
            let mut seen = Vec::new();
            loop {
                let batch = client.fetch("q", 32, LEASE, &host).await.unwrap();
                if batch.is_empty() {
                    return seen;
                }
                let done: Vec<Completion> =
                    batch.iter().map(|j| Completion::new(j, vec![])).collect();
                let report = client.complete("q", &done).await.unwrap();
                assert!(
                    report.rejected.is_empty(),
                    "lost a lease: {:?}",
                    report.rejected
                );
                seen.extend(batch.into_iter().map(|job| (job.id, job.attempt)));
            }
        }));
    }
    let mut all = Vec::new();
    for fetcher in fetchers {
        all.extend(fetcher.await.unwrap());
    }
    assert_eq!(all.len(), 5000, "every job fetched once");
    let unique: HashSet<&String> = all.iter().map(|(id, _)| id).collect();
    assert_eq!(unique.len(), 5000, "no job fetched twice");
    assert!(all.iter().all(|(_, attempt)| *attempt == 1));
    let counts = client.counts("q").await.unwrap();
    assert_eq!(
        (counts.waiting, counts.active, counts.completed),
        (0, 0, 5000)
    );
}
