//! Group concurrency through the scripts alone: a fetch leases at most `group_concurrency` jobs
//! of a group, a full group is parked out of the round robin while the others go on, every
//! way a job leaves `active` gives its slot back, and a change of the limit counts at the
//! next fetch. The hosts' side (many hosts, a killed one) is in `tests/all/group_concurrency.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::AsyncCommands;
use wasmq::queue::{Client, Completion, Failure, LeasedJob, QueueConfig, QueueKeys, Suspension};

use crate::support::redis::RedisServer;

use super::{HOST, LEASE, eventually, grouped, no_retry_wait, start};

const Q: &str = "q";

async fn set_group_concurrency(client: &Client, n: Option<u64>) {
    let config = QueueConfig {
        completed_keep: None,
        group_concurrency: n,
        ..QueueConfig::default()
    };
    client.set_config(Q, &config).await.unwrap();
    assert_eq!(client.config(Q).await.unwrap().group_concurrency, n);
}

/// The ids in `group`'s slots (`g:<group>:active`).
async fn slots(server: &RedisServer, group: &str) -> Vec<String> {
    let keys = QueueKeys::new(Q).unwrap();
    let mut conn = server.connection().await;
    conn.zrange(keys.group_slots(group), 0, -1).await.unwrap()
}

/// The job's `group_slot` field ('' when absent).
async fn slot_field(server: &RedisServer, id: &str) -> String {
    let keys = QueueKeys::new(Q).unwrap();
    let mut conn = server.connection().await;
    let field: Option<String> = conn.hget(keys.job(id), "group_slot").await.unwrap();
    field.unwrap_or_default()
}

/// How many jobs of each group `jobs` holds.
fn per_group(client_jobs: &[(String, String)]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (_, group) in client_jobs {
        *counts.entry(group.clone()).or_default() += 1;
    }
    counts
}

/// `jobs` with the group each was enqueued with.
async fn with_groups(client: &Client, jobs: &[LeasedJob]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for job in jobs {
        let stored = client.get(Q, &job.id).await.unwrap().unwrap();
        out.push((job.id.clone(), stored.group.unwrap_or_default()));
    }
    out
}

#[tokio::test]
async fn a_fetch_leases_at_most_the_limit_of_each_group_and_goes_on_with_the_others() {
    let (server, client) = start().await;
    set_group_concurrency(&client, Some(2)).await;
    for group in ["a", "b", "c"] {
        client.enqueue_bulk(Q, &grouped(group, 5)).await.unwrap();
    }
    let jobs = client.fetch(Q, 100, LEASE, HOST).await.unwrap();
    let counts = per_group(&with_groups(&client, &jobs).await);
    assert_eq!(
        counts,
        BTreeMap::from([("a".into(), 2), ("b".into(), 2), ("c".into(), 2)])
    );
    for group in ["a", "b", "c"] {
        assert_eq!(slots(&server, group).await.len(), 2, "group {group}");
    }
    for job in &jobs {
        assert!(!slot_field(&server, &job.id).await.is_empty());
    }
    // Every group is full, so parked: scored in the future in `groups`, out of the round robin.
    let keys = QueueKeys::new(Q).unwrap();
    let mut conn = server.connection().await;
    let now = server.now_ms().await;
    for group in ["a", "b", "c"] {
        let at: f64 = conn.zscore(keys.groups(), group).await.unwrap();
        assert!(at > now as f64, "group {group} parked at {at}, now {now}");
    }
    // A fetch leases nothing, and says when to look again.
    let full = client.fetch_batch(Q, 100, LEASE, HOST).await.unwrap();
    assert!(full.jobs.is_empty());
    assert!(full.next_due_ms.is_some_and(|at| at > full.now_ms));
    // A group that was not there gets its turn at once.
    client.enqueue_bulk(Q, &grouped("d", 3)).await.unwrap();
    let jobs = client.fetch(Q, 100, LEASE, HOST).await.unwrap();
    let counts = per_group(&with_groups(&client, &jobs).await);
    assert_eq!(counts, BTreeMap::from([("d".into(), 2)]));
    // Ungrouped jobs are not limited.
    client
        .enqueue_bulk(
            Q,
            &(0..5)
                .map(|_| wasmq::queue::NewJob::new("h", vec![]))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    assert_eq!(client.fetch(Q, 100, LEASE, HOST).await.unwrap().len(), 5);
}

/// Leases the one job group `g` may run (limit 1), checks it holds the slot, and returns it.
async fn lease_the_slot(server: &RedisServer, client: &Client, lease: Duration) -> LeasedJob {
    let mut jobs = client.fetch(Q, 10, lease, HOST).await.unwrap();
    assert_eq!(jobs.len(), 1, "the group's one slot: {jobs:?}");
    let job = jobs.remove(0);
    assert_eq!(slots(server, "g").await, vec![job.id.clone()]);
    assert_eq!(slot_field(server, &job.id).await, "g");
    assert!(client.fetch(Q, 10, lease, HOST).await.unwrap().is_empty());
    job
}

/// After `job` left `active`: its slot is free, its field cleared.
async fn assert_given_back(server: &RedisServer, job: &LeasedJob, how: &str) {
    assert!(
        slots(server, "g").await.is_empty(),
        "{how} gives the slot back"
    );
    assert_eq!(
        slot_field(server, &job.id).await,
        "",
        "{how} clears group_slot"
    );
}

#[tokio::test]
async fn every_way_out_of_active_gives_the_group_slot_back() {
    let (server, client) = start().await;
    set_group_concurrency(&client, Some(1)).await;
    let jobs: Vec<_> = grouped("g", 8)
        .into_iter()
        .map(|job| job.with_backoff(no_retry_wait()).with_max_attempts(2))
        .collect();
    client.enqueue_bulk(Q, &jobs).await.unwrap();

    let job = lease_the_slot(&server, &client, LEASE).await;
    let extended = client.extend(Q, &[job.lease()], LEASE * 2).await.unwrap();
    let keys = QueueKeys::new(Q).unwrap();
    let mut conn = server.connection().await;
    let score: Option<f64> = conn.zscore(keys.group_slots("g"), &job.id).await.unwrap();
    assert_eq!(
        score,
        Some(extended.lease_expires_at_ms as f64),
        "extend moves the slot"
    );
    client
        .complete(Q, &[Completion::new(&job, b"ok".to_vec())])
        .await
        .unwrap();
    assert_given_back(&server, &job, "complete").await;

    // The completion brought the parked group back: no wait for its park time.
    let job = lease_the_slot(&server, &client, LEASE).await;
    let (_, fetched) = client
        .complete_and_fetch(Q, &[Completion::new(&job, b"ok".to_vec())], 10, LEASE, HOST)
        .await
        .unwrap();
    assert_eq!(
        fetched.jobs.len(),
        1,
        "the slot is leased again in the same call"
    );
    assert_eq!(slot_field(&server, &job.id).await, "");
    let job = fetched.jobs[0].clone();
    assert_eq!(slots(&server, "g").await, vec![job.id.clone()]);

    client
        .fail(Q, &[Failure::new(&job, "trap", "boom")])
        .await
        .unwrap();
    // Retried at once (backoff 0): back in the group, slot free.
    assert!(
        slots(&server, "g").await.is_empty(),
        "fail gives the slot back"
    );

    let job = lease_the_slot(&server, &client, LEASE).await;
    client
        .fail(Q, &[Failure::new(&job, "trap", "boom").permanent()])
        .await
        .unwrap();
    assert_given_back(&server, &job, "a permanent fail").await;

    let job = lease_the_slot(&server, &client, LEASE).await;
    client.release(Q, &[job.lease()]).await.unwrap();
    assert_given_back(&server, &job, "release").await;

    let job = lease_the_slot(&server, &client, LEASE).await;
    client
        .suspend(
            Q,
            &[Suspension::new(&job, "sleep:nap", Duration::from_secs(60))],
        )
        .await
        .unwrap();
    assert_given_back(&server, &job, "suspend").await;

    let job = lease_the_slot(&server, &client, Duration::from_millis(50)).await;
    eventually("the lease to be recovered", || async {
        let report = client.recover_expired(Q, 10, &[]).await.unwrap();
        (!report.outcomes.is_empty()).then_some(())
    })
    .await;
    assert_given_back(&server, &job, "recover").await;
    lease_the_slot(&server, &client, LEASE).await;
}

#[tokio::test]
async fn a_changed_limit_counts_at_the_next_fetch() {
    let (server, client) = start().await;
    set_group_concurrency(&client, Some(1)).await;
    client.enqueue_bulk(Q, &grouped("g", 6)).await.unwrap();
    assert_eq!(client.fetch(Q, 10, LEASE, HOST).await.unwrap().len(), 1);
    assert!(client.fetch(Q, 10, LEASE, HOST).await.unwrap().is_empty());
    // Raised: the parked group comes back at once, up to the new limit.
    set_group_concurrency(&client, Some(3)).await;
    assert_eq!(client.fetch(Q, 10, LEASE, HOST).await.unwrap().len(), 2);
    assert!(client.fetch(Q, 10, LEASE, HOST).await.unwrap().is_empty());
    // Removed: no limit at all; the jobs leased meanwhile hold no slot.
    set_group_concurrency(&client, None).await;
    let unlimited = client.fetch(Q, 10, LEASE, HOST).await.unwrap();
    assert_eq!(unlimited.len(), 3);
    for job in &unlimited {
        assert_eq!(slot_field(&server, &job.id).await, "");
    }
    assert_eq!(
        slots(&server, "g").await.len(),
        3,
        "the slots of the jobs leased under it"
    );
}

#[tokio::test]
async fn a_slot_whose_job_vanished_is_dropped_once_its_lease_expired() {
    let (server, client) = start().await;
    set_group_concurrency(&client, Some(1)).await;
    client.enqueue_bulk(Q, &grouped("g", 2)).await.unwrap();
    let job = lease_the_slot(&server, &client, Duration::from_millis(100)).await;
    // By hand, behind wasmq's back: the job is gone, its slot left behind.
    let keys = QueueKeys::new(Q).unwrap();
    let mut conn = server.connection().await;
    let () = conn.del(keys.job(&job.id)).await.unwrap();
    let _: u32 = conn.zrem(keys.active(), &job.id).await.unwrap();
    assert_eq!(slots(&server, "g").await, vec![job.id.clone()]);
    // Within the park time of a full group (a second), the next fetch drops it.
    let next = eventually("the group to run again", || async {
        client.fetch(Q, 10, LEASE, HOST).await.unwrap().pop()
    })
    .await;
    assert_eq!(slots(&server, "g").await, vec![next.id]);
}

#[tokio::test]
async fn a_full_group_does_not_hold_up_the_next_one_even_one_job_at_a_time() {
    let (_server, client) = start().await;
    set_group_concurrency(&client, Some(1)).await;
    for group in ["a", "b", "c", "d", "e"] {
        client.enqueue_bulk(Q, &grouped(group, 3)).await.unwrap();
    }
    // Fetches of one job each, as a worker with one free slot makes: each full group steps
    // out of the way, so every fetch finds the next group.
    let mut served = Vec::new();
    for _ in 0..5 {
        let jobs = client.fetch(Q, 1, LEASE, HOST).await.unwrap();
        assert_eq!(jobs.len(), 1, "served so far: {served:?}");
        served.extend(
            with_groups(&client, &jobs)
                .await
                .into_iter()
                .map(|(_, g)| g),
        );
    }
    served.sort();
    assert_eq!(served, ["a", "b", "c", "d", "e"]);
    assert!(client.fetch(Q, 1, LEASE, HOST).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_group_slots_key_of_another_type_refuses_the_fetch_with_nothing_written() {
    let (server, client) = start().await;
    set_group_concurrency(&client, Some(2)).await;
    client.enqueue_bulk(Q, &grouped("a", 3)).await.unwrap();
    client.enqueue_bulk(Q, &grouped("b", 3)).await.unwrap();
    let keys = QueueKeys::new(Q).unwrap();
    let mut conn = server.connection().await;
    let () = conn.set(keys.group_slots("a"), "x").await.unwrap();
    let before = server.snapshot().await;
    let err = client.fetch(Q, 10, LEASE, HOST).await.unwrap_err();
    assert!(
        matches!(&err, wasmq::queue::QueueError::WrongType { key, found }
            if *key == keys.group_slots("a") && found == "string"),
        "{err:?}"
    );
    assert_eq!(server.snapshot().await, before, "nothing written");
    // Put right by hand, the queue goes on.
    let () = conn.del(keys.group_slots("a")).await.unwrap();
    assert_eq!(client.fetch(Q, 10, LEASE, HOST).await.unwrap().len(), 4);
}
