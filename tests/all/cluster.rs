//! What holds only on a Redis Cluster: queues spread over the shards, and a primary that dies
//! while jobs flow is replaced by its replica without losing a job. (The queue and worker
//! suites also run whole against a 3-primary cluster: `WASMQ_TEST_REDIS=cluster`, which
//! `scripts/test.sh` sets for its second run of them.)

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use wasmq::queue::{Client, JobState, NewJob};

use crate::support::cluster::RedisCluster;
use crate::support::eventually;
use crate::support::guests::handler;
use crate::support::host::HostProcess;
use crate::support::jobs::{enqueue_ids, keep_everything};
use crate::support::redis::RedisOptions;

/// The primary (port) that holds `queue`'s keys: the owner of its hash tag's slot.
fn home_of(cluster: &RedisCluster, queue: &str) -> u16 {
    cluster.primary_of_key(&format!("wasmq:{{{queue}}}:seq"))
}

/// Queue names with one queue per primary of `cluster`, in primary order.
fn one_queue_per_primary(cluster: &RedisCluster) -> Vec<(String, u16)> {
    let mut picked: BTreeMap<u16, String> = BTreeMap::new();
    let primaries = cluster.view().iter().filter(|node| node.primary).count();
    for i in 0..1000 {
        let queue = format!("queue-{i}");
        picked.entry(home_of(cluster, &queue)).or_insert(queue);
        if picked.len() == primaries {
            break;
        }
    }
    picked.into_iter().map(|(port, q)| (q, port)).collect()
}

#[tokio::test]
async fn queues_spread_over_the_shards_and_one_host_serves_them_all() {
    let cluster = RedisCluster::start(3, 0, RedisOptions::default());
    let client = Client::connect(&cluster.url()).await.unwrap();
    let queues = [
        "emails", "images", "billing", "reports", "webhooks", "search",
    ];
    let mut ids: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for queue in queues {
        keep_everything(&client, queue).await;
        let jobs: Vec<NewJob> = (0..20)
            .map(|i| NewJob::new("echo", format!("{queue} {i}").into_bytes()))
            .collect();
        ids.insert(queue, enqueue_ids(&client, queue, &jobs).await);
    }

    // Each queue's keys live on the primary that owns its hash tag's slot, and on no other
    // node; these six names land on more than one primary.
    let homes: BTreeMap<&str, u16> = queues.iter().map(|&q| (q, home_of(&cluster, q))).collect();
    let distinct: BTreeSet<u16> = homes.values().copied().collect();
    assert!(distinct.len() >= 2, "queues on one primary only: {homes:?}");
    for (queue, home) in &homes {
        for port in cluster.ports() {
            let keys: Vec<String> =
                cluster.query_node(port, redis::cmd("KEYS").arg(format!("wasmq:{{{queue}}}:*")));
            assert_eq!(
                !keys.is_empty(),
                port == *home,
                "keys of {queue} on node {port} (its home is {home}): {keys:?}"
            );
        }
    }

    let _host = HostProcess::builder(&cluster.url())
        .args([
            "--queues",
            &queues.join(","),
            "--handler",
            &handler("echo", "echo"),
        ])
        .start();
    for (queue, ids) in &ids {
        eventually(
            &format!("every job of {queue} completed"),
            Duration::from_secs(60),
            || async {
                let counts = client.counts(queue).await.ok()?;
                (counts.completed == 20).then_some(())
            },
        )
        .await;
        for (i, id) in ids.iter().enumerate() {
            let job = client.get(queue, id).await.unwrap().unwrap();
            assert_eq!(
                job.result.as_deref(),
                Some(format!("{queue} {i}").as_bytes())
            );
            assert_eq!(job.attempt, 1);
        }
    }
}

/// Redis replication is asynchronous: a write a primary acknowledged just before it died may
/// not have reached its replica. The jobs are enqueued and replicated (`WAIT`) before the
/// kill, so that what the test asserts is exact: every enqueued job completes. Transitions
/// lost with the primary (a lease, a completion) are repeated: a lost lease leaves the job
/// waiting for the next fetch, a lost completion leaves it leased until its lease expires and
/// it runs again. At least once, as on one server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_fails_over_to_its_replica_and_every_job_still_completes() {
    const JOBS: usize = 150;
    let mut cluster = RedisCluster::start(3, 1, RedisOptions::default());
    let client = Client::connect(&cluster.url()).await.unwrap();
    let queues = one_queue_per_primary(&cluster);
    assert_eq!(queues.len(), 3, "{queues:?}");
    let mut ids: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (queue, _) in &queues {
        keep_everything(&client, queue).await;
        let jobs: Vec<NewJob> = (0..JOBS)
            .map(|_| NewJob::new("sleep", b"20".to_vec()))
            .collect();
        ids.insert(queue.clone(), enqueue_ids(&client, queue, &jobs).await);
    }
    for (_, primary) in &queues {
        let replicated: u64 = cluster.query_node(*primary, redis::cmd("WAIT").arg(1).arg(5000));
        assert_eq!(
            replicated, 1,
            "the enqueues reached the replica of {primary}"
        );
    }

    let names: Vec<&str> = queues.iter().map(|(q, _)| q.as_str()).collect();
    let mut host = HostProcess::builder(&cluster.url())
        .args([
            "--queues",
            &names.join(","),
            "--handler",
            &handler("sleep", "sleep"),
            "--concurrency",
            "8",
            "--lease",
            "2s",
        ])
        .start();
    let (victim_queue, victim) = queues[0].clone();
    eventually(
        "jobs flowing on the doomed primary",
        Duration::from_secs(60),
        || async {
            let counts = client.counts(&victim_queue).await.ok()?;
            (counts.completed >= 10).then_some(())
        },
    )
    .await;
    let before = client.counts(&victim_queue).await.unwrap();
    assert!(
        before.completed < JOBS as u64,
        "the kill comes while jobs flow: {before:?}"
    );
    cluster.node_mut(victim).kill();

    // Its replica takes over its slots (after the node timeout and an election).
    let key = format!("wasmq:{{{victim_queue}}}:seq");
    let promoted = eventually("the replica promoted", Duration::from_secs(30), || async {
        let home = cluster.try_primary_of_key(&key)?;
        (home != victim).then_some(home)
    })
    .await;
    let replica = cluster
        .view()
        .into_iter()
        .find(|node| node.port == promoted)
        .unwrap();
    assert!(replica.primary && !replica.slots.is_empty());
    assert_ne!(promoted, victim);

    for (queue, ids) in &ids {
        eventually(
            &format!("every job of {queue} completed after the failover"),
            Duration::from_secs(90),
            || async {
                let counts = client.counts(queue).await.ok()?;
                (counts.completed == JOBS as u64).then_some(())
            },
        )
        .await;
        let counts = client.counts(queue).await.unwrap();
        assert_eq!(
            (counts.dead, counts.waiting, counts.active, counts.retry),
            (0, 0, 0, 0),
            "{queue}"
        );
        for id in ids {
            let job = client.get(queue, id).await.unwrap().unwrap();
            assert_eq!(job.state, JobState::Completed, "{queue} {id}");
            assert_eq!(job.history.last().unwrap().outcome, "ok", "{queue} {id}");
        }
    }
    assert!(host.is_running(), "the host exited:\n{}", host.log_text());
}
