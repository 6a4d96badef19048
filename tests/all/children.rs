//! Child jobs stay in bounds (issue #20, docs/workflows.md "Child jobs"): a handler enqueues
//! into its own queue unless a grant names another; an id it gives is namespaced by its parent
//! unless a grant keeps it raw; a depth limit ends a chain of children; a queue's backlog limit
//! (`max_waiting`) refuses producers and guests past it while the children already accepted
//! wait, never lost; delivering thousands of children leaves a neighbour's job its turn.
//! Real `wasmq run` processes, real Redis, the `parent` and `echo` guests.

use std::time::{Duration, Instant};

use wasmq::queue::{Child, Client, Completion, JobState, NewJob, QueueConfig, QueueError};

use crate::support::cli::{ok, wasmq};
use crate::support::eventually;
use crate::support::guests::{self, handler};
use crate::support::host::HostProcess;
use crate::support::jobs::keep_everything;
use crate::support::redis::RedisServer;

const ORDERS: &str = "orders";
const PAYMENTS: &str = "payments";

async fn wait_for_state(client: &Client, queue: &str, id: &str, state: JobState, within: Duration) {
    eventually(&format!("job {id} {state}"), within, || async {
        let job = client.get(queue, id).await.ok()??;
        (job.state == state).then_some(())
    })
    .await;
}

/// A host config giving handler `parent` (the `parent` guest) these child-job grants.
fn parent_with_grants(may_enqueue: &[&str], raw_ids: &[&str]) -> String {
    let list = |items: &[&str]| {
        items
            .iter()
            .map(|i| format!("{i:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "[handlers.parent]\npath = {:?}\nmay_enqueue = [{}]\nmay_enqueue_raw_ids = [{}]\n",
        guests::rust("parent"),
        list(may_enqueue),
        list(raw_ids)
    )
}

/// The job field `depth` as stored (none for a producer's job).
async fn depth_field(redis: &RedisServer, queue: &str, id: &str) -> Option<String> {
    let mut conn = redis.connection().await;
    redis::cmd("HGET")
        .arg(format!("wasmq:{{{queue}}}:job:{id}"))
        .arg("depth")
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// Jobs of `queue` not finished (waiting, grouped or not, delayed, retry, active): what
/// `max_waiting` bounds.
async fn backlog(client: &Client, queue: &str) -> u64 {
    let counts = client.counts(queue).await.unwrap();
    counts.waiting + counts.delayed + counts.retry + counts.active
}

async fn outbox_len(redis: &RedisServer, queue: &str) -> u64 {
    let mut conn = redis.connection().await;
    redis::cmd("ZCARD")
        .arg(format!("wasmq:{{{queue}}}:outbox"))
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// The reproduction: a handler names its child `order-42` in `payments`; the real producer's
/// `order-42`, enqueued later, is its own job, not skipped as a duplicate of the child.
#[tokio::test]
async fn a_childs_given_id_is_namespaced_so_a_producers_id_stays_free() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, ORDERS).await;
    keep_everything(&client, PAYMENTS).await;
    let payload = br#"{"children":1,"queue":"payments","handler":"charge","id":"order-42"}"#;
    client
        .enqueue(
            ORDERS,
            &NewJob::new("parent", payload.to_vec()).with_id("p-1"),
        )
        .await
        .unwrap();
    let queues = format!("{ORDERS},{PAYMENTS}");
    let _host = HostProcess::builder(&redis.url())
        .config(&parent_with_grants(&["payments/charge"], &[]))
        .args(["--queues", &queues, "--handler", &handler("charge", "echo")])
        .start();
    wait_for_state(
        &client,
        ORDERS,
        "p-1",
        JobState::Completed,
        Duration::from_secs(30),
    )
    .await;
    let child_id = "orders/p-1/order-42";
    let parent = client.get(ORDERS, "p-1").await.unwrap().unwrap();
    assert_eq!(parent.result.as_deref(), Some(child_id.as_bytes()));
    wait_for_state(
        &client,
        PAYMENTS,
        child_id,
        JobState::Completed,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        depth_field(&redis, PAYMENTS, child_id).await.as_deref(),
        Some("1")
    );
    assert!(client.get(PAYMENTS, "order-42").await.unwrap().is_none());

    let producer = client
        .enqueue(
            PAYMENTS,
            &NewJob::new("charge", b"the real order".to_vec()).with_id("order-42"),
        )
        .await
        .unwrap();
    assert!(
        producer.created,
        "the producer's order-42 was taken: {producer:?}"
    );
    wait_for_state(
        &client,
        PAYMENTS,
        "order-42",
        JobState::Completed,
        Duration::from_secs(30),
    )
    .await;
    let real = client.get(PAYMENTS, "order-42").await.unwrap().unwrap();
    assert_eq!(real.result.as_deref(), Some(&b"the real order"[..]));
    assert_eq!(depth_field(&redis, PAYMENTS, "order-42").await, None);
}

/// Without a grant naming the target, a child for another queue is refused at the guest's
/// call, and the job (the SDK fails it permanently) leaves nothing in that queue.
#[tokio::test]
async fn a_child_for_another_queue_needs_a_grant_naming_it() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    for (id, payload) in [
        (
            "ungranted",
            r#"{"children":1,"queue":"ledger","handler":"charge"}"#,
        ),
        // A grant for one handler of the queue is no grant for another.
        (
            "other-handler",
            r#"{"children":1,"queue":"payments","handler":"refund"}"#,
        ),
    ] {
        client
            .enqueue(ORDERS, &NewJob::new("parent", payload).with_id(id))
            .await
            .unwrap();
    }
    let _host = HostProcess::builder(&redis.url())
        .config(&parent_with_grants(&["payments/charge"], &[]))
        .args(["--queues", ORDERS])
        .start();
    for id in ["ungranted", "other-handler"] {
        eventually(
            &format!("job {id} dead"),
            Duration::from_secs(30),
            || async {
                let job = client.get(ORDERS, id).await.ok()??;
                assert_ne!(job.state, JobState::Completed, "{job:?}");
                (job.state == JobState::Dead).then_some(())
            },
        )
        .await;
    }
    let refund = client.get(ORDERS, "other-handler").await.unwrap().unwrap();
    let error = refund.last_error.unwrap_or_default();
    assert!(
        error.contains("--may-enqueue payments/refund"),
        "the error names the grant: {error}"
    );
    let ungranted = client.get(ORDERS, "ungranted").await.unwrap().unwrap();
    let error = ungranted.last_error.unwrap_or_default();
    assert!(error.contains("--may-enqueue ledger/charge"), "{error}");
    for queue in [PAYMENTS, "ledger"] {
        let counts = client.counts(queue).await.unwrap();
        assert_eq!((counts.waiting, counts.delayed), (0, 0));
    }
    // The granted one goes through.
    let granted = r#"{"children":1,"queue":"payments","handler":"charge"}"#;
    client
        .enqueue(ORDERS, &NewJob::new("parent", granted).with_id("granted"))
        .await
        .unwrap();
    wait_for_state(
        &client,
        ORDERS,
        "granted",
        JobState::Completed,
        Duration::from_secs(30),
    )
    .await;
    eventually("the granted child", Duration::from_secs(10), || async {
        client.get(PAYMENTS, "orders/granted:c1").await.ok()?
    })
    .await;
}

/// `--may-enqueue-raw-ids`, deployed with a registry version and restored by a rollback,
/// keeps the given id; the version deployed without it namespaces it.
#[tokio::test]
async fn raw_child_ids_follow_the_grant_of_the_version_that_runs() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let parent = guests::rust("parent");
    let parent = parent.to_str().unwrap();
    ok(&wasmq(
        &redis,
        &[
            "handler",
            "deploy",
            "parent",
            parent,
            "--may-enqueue-raw-ids",
            "payments/charge",
        ],
    ));
    ok(&wasmq(&redis, &["handler", "deploy", "parent", parent]));
    let bad = wasmq(
        &redis,
        &[
            "handler",
            "deploy",
            "parent",
            parent,
            "--may-enqueue",
            "payments",
        ],
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("QUEUE/HANDLER"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let versions = ok(&wasmq(&redis, &["handler", "versions", "parent"]));
    assert!(
        versions.contains("may-enqueue-raw-ids payments/charge"),
        "{versions}"
    );
    ok(&wasmq(&redis, &["handler", "rollback", "parent", "1"]));

    let queues = format!("{ORDERS},{PAYMENTS}");
    let _host = HostProcess::builder(&redis.url())
        .args(["--queues", &queues])
        .start();
    let payload = r#"{"children":1,"queue":"payments","handler":"charge","id":"order-7"}"#;
    client
        .enqueue(ORDERS, &NewJob::new("parent", payload).with_id("p-raw"))
        .await
        .unwrap();
    wait_for_state(
        &client,
        ORDERS,
        "p-raw",
        JobState::Completed,
        Duration::from_secs(30),
    )
    .await;
    eventually("the raw child order-7", Duration::from_secs(10), || async {
        client.get(PAYMENTS, "order-7").await.ok()?
    })
    .await;

    // Version 2 has no grant for payments at all.
    ok(&wasmq(&redis, &["handler", "rollback", "parent", "2"]));
    eventually("version 2 on the host", Duration::from_secs(10), || async {
        let id = format!("probe-{}", rand_suffix());
        client
            .enqueue(ORDERS, &NewJob::new("parent", payload).with_id(&id))
            .await
            .ok()?;
        loop {
            let job = client.get(ORDERS, &id).await.ok()??;
            match job.state {
                JobState::Dead => return Some(()),
                JobState::Completed => return None,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A job that enqueues itself, and so on: the chain ends at the host's depth limit, where the
/// guest's `enqueue` returns an error that says so.
#[tokio::test]
async fn a_job_that_enqueues_itself_stops_at_the_depth_limit() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, ORDERS).await;
    let payload = r#"{"children":1,"handler":"parent","copy":true,"tolerate":true}"#;
    client
        .enqueue(ORDERS, &NewJob::new("parent", payload).with_id("r"))
        .await
        .unwrap();
    let _host = HostProcess::builder(&redis.url())
        .args([
            "--queues",
            ORDERS,
            "--handler",
            &handler("parent", "parent"),
            "--max-child-depth",
            "4",
        ])
        .start();
    // r, orders/r:c1, orders/orders/r:c1:c1, ...: depth n is the nth in the chain.
    let mut id = "r".to_string();
    for depth in 0..=4u32 {
        wait_for_state(
            &client,
            ORDERS,
            &id,
            JobState::Completed,
            Duration::from_secs(30),
        )
        .await;
        let stored = depth_field(&redis, ORDERS, &id).await;
        assert_eq!(stored, (depth > 0).then(|| depth.to_string()), "{id}");
        let job = client.get(ORDERS, &id).await.unwrap().unwrap();
        let result = String::from_utf8(job.result.unwrap()).unwrap();
        let next = format!("{ORDERS}/{id}:c1");
        if depth < 4 {
            assert_eq!(result, next);
        } else {
            assert!(
                result.starts_with("\nrefused: ") && result.contains("--max-child-depth 4"),
                "the deepest job is told why: {result:?}"
            );
        }
        id = next;
    }
    // Nothing after it, now or once the outbox is empty.
    eventually("an empty outbox", Duration::from_secs(10), || async {
        (outbox_len(&redis, ORDERS).await == 0).then_some(())
    })
    .await;
    let counts = client.counts(ORDERS).await.unwrap();
    assert_eq!(
        (
            counts.waiting,
            counts.delayed,
            counts.active,
            counts.completed
        ),
        (0, 0, 0, 5)
    );
}

/// A producer's enqueue past `max_waiting` is refused whole with a clear error and writes
/// nothing; an id already there is still answered as existing; the CLI says why.
#[tokio::test]
async fn an_enqueue_past_the_backlog_limit_is_refused_and_writes_nothing() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let out = ok(&wasmq(
        &redis,
        &["queue", "limit", ORDERS, "--max-waiting", "3"],
    ));
    assert!(out.contains("max waiting 3"), "{out}");
    assert_eq!(client.config(ORDERS).await.unwrap().max_waiting, Some(3));
    // One waiting, one waiting in a group, one delayed: the backlog counts all three.
    let jobs = vec![
        NewJob::new("echo", Vec::new()).with_id("j1"),
        NewJob::new("echo", Vec::new())
            .with_id("j2")
            .with_group("tenant"),
    ];
    client.enqueue_bulk(ORDERS, &jobs).await.unwrap();
    client
        .enqueue(
            ORDERS,
            &NewJob::new("echo", Vec::new())
                .with_id("later")
                .with_delay(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    // Waiting and delayed together are at the limit: one more is refused, a batch whole.
    let refused = client
        .enqueue(ORDERS, &NewJob::new("echo", Vec::new()).with_id("j4"))
        .await
        .unwrap_err();
    match &refused {
        QueueError::QueueFull {
            queue,
            backlog,
            new,
            limit,
        } => assert_eq!((queue.as_str(), *backlog, *new, *limit), (ORDERS, 3, 1, 3)),
        other => panic!("expected QueueFull, got {other:?}"),
    }
    assert!(
        refused.to_string().contains("max_waiting of 3"),
        "{refused}"
    );
    assert!(client.get(ORDERS, "j4").await.unwrap().is_none());
    let again = client.enqueue(ORDERS, &jobs[0]).await.unwrap();
    assert!(!again.created);
    let cli = wasmq(&redis, &["enqueue", ORDERS, "echo", "--payload", "x"]);
    assert!(!cli.status.success());
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert!(stderr.contains("is full"), "{stderr}");
    assert_eq!(backlog(&client, ORDERS).await, 3);

    // Removing the limit lets it through.
    ok(&wasmq(
        &redis,
        &["queue", "limit", ORDERS, "--max-waiting", "0"],
    ));
    assert_eq!(client.config(ORDERS).await.unwrap().max_waiting, None);
    let config = QueueConfig {
        max_waiting: Some(4),
        ..client.config(ORDERS).await.unwrap()
    };
    client.set_config(ORDERS, &config).await.unwrap();
    assert!(
        client
            .enqueue(ORDERS, &NewJob::new("echo", Vec::new()).with_id("j4"))
            .await
            .unwrap()
            .created
    );
}

/// Children accepted with a completed parent are never dropped for want of room: delivery
/// enqueues what fits, the entry stays, and a later delivery goes on once the queue drained.
#[tokio::test]
async fn children_of_a_full_queue_wait_in_the_outbox_until_there_is_room() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let config = QueueConfig {
        max_waiting: Some(2),
        ..client.config(PAYMENTS).await.unwrap()
    };
    client.set_config(PAYMENTS, &config).await.unwrap();
    client
        .enqueue(ORDERS, &NewJob::new("parent", Vec::new()).with_id("p"))
        .await
        .unwrap();
    let leased = client
        .fetch(ORDERS, 1, Duration::from_secs(30), "test-host")
        .await
        .unwrap();
    let children: Vec<Child> = (1..=3)
        .map(|n| Child {
            queue: PAYMENTS.to_string(),
            job: NewJob::new("charge", Vec::new())
                .with_id(format!("orders/p:c{n}"))
                .with_depth(1),
        })
        .collect();
    let done = Completion::new(&leased[0], Vec::new()).with_children(children);
    client.complete(ORDERS, &[done]).await.unwrap();

    let first = client
        .deliver_outbox(ORDERS, &["p".to_string()])
        .await
        .unwrap();
    assert_eq!(
        (first.created, first.delivered.len(), first.waiting.clone()),
        (2, 0, vec!["p".to_string()])
    );
    assert!(first.refused.is_empty(), "{first:?}");
    assert_eq!(backlog(&client, PAYMENTS).await, 2);
    assert_eq!(outbox_len(&redis, ORDERS).await, 1);
    assert!(client.get(PAYMENTS, "orders/p:c3").await.unwrap().is_none());
    assert_eq!(
        depth_field(&redis, PAYMENTS, "orders/p:c1")
            .await
            .as_deref(),
        Some("1")
    );

    // Still full: nothing more, nothing lost.
    let again = client
        .recover_outbox(ORDERS, Duration::ZERO, 10)
        .await
        .unwrap();
    assert_eq!((again.created, again.waiting.len()), (0, 1));

    // A running child still counts (it may come back to wait); one that completes frees room
    // for the third.
    let running = client
        .fetch(PAYMENTS, 1, Duration::from_secs(30), "test-host")
        .await
        .unwrap();
    assert_eq!(running.len(), 1);
    let still = client
        .recover_outbox(ORDERS, Duration::ZERO, 10)
        .await
        .unwrap();
    assert_eq!((still.created, still.waiting.len()), (0, 1));
    client
        .complete(PAYMENTS, &[Completion::new(&running[0], Vec::new())])
        .await
        .unwrap();
    let last = client
        .recover_outbox(ORDERS, Duration::ZERO, 10)
        .await
        .unwrap();
    assert_eq!(
        (last.created, last.delivered.clone()),
        (1, vec!["p".to_string()])
    );
    assert!(client.get(PAYMENTS, "orders/p:c3").await.unwrap().is_some());
    assert_eq!(outbox_len(&redis, ORDERS).await, 0);
    assert_eq!(backlog(&client, PAYMENTS).await, 2);
}

/// The reproduction of the fork bomb: a job that enqueues 100 copies of itself. Its children
/// stop at the depth limit; the queue's backlog never passes `max_waiting` (guests are refused
/// past it, and children already accepted wait in the outbox); and every child accepted is
/// delivered in the end.
#[tokio::test]
async fn a_job_that_enqueues_a_hundred_copies_of_itself_stays_under_the_bounds() {
    const MAX_WAITING: u64 = 30;
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, ORDERS).await;
    let config = QueueConfig {
        max_waiting: Some(MAX_WAITING),
        ..client.config(ORDERS).await.unwrap()
    };
    client.set_config(ORDERS, &config).await.unwrap();
    let payload = r#"{"children":100,"handler":"parent","copy":true,"tolerate":true}"#;
    client
        .enqueue(ORDERS, &NewJob::new("parent", payload).with_id("bomb"))
        .await
        .unwrap();
    let _host = HostProcess::builder(&redis.url())
        .args([
            "--queues",
            ORDERS,
            "--handler",
            &handler("parent", "parent"),
            "--max-child-depth",
            "2",
        ])
        .start();
    let started = Instant::now();
    let mut most = 0;
    let mut quiet_since: Option<Instant> = None;
    loop {
        let counts = client.counts(ORDERS).await.unwrap();
        most = most.max(counts.waiting + counts.delayed + counts.retry + counts.active);
        let idle = counts.waiting + counts.delayed + counts.active == 0
            && outbox_len(&redis, ORDERS).await == 0;
        match (idle, quiet_since) {
            (true, None) => quiet_since = Some(Instant::now()),
            (true, Some(since)) if since.elapsed() > Duration::from_millis(500) => break,
            (false, _) => quiet_since = None,
            _ => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the queue never settled: {counts:?}, outbox {}",
            outbox_len(&redis, ORDERS).await
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(most <= MAX_WAITING, "the backlog reached {most}");
    let counts = client.counts(ORDERS).await.unwrap();
    assert_eq!(counts.dead, 0, "{counts:?}");
    // At most the root, its children and theirs; at least the root's children and more.
    assert!(
        counts.completed <= 1 + MAX_WAITING + MAX_WAITING * MAX_WAITING,
        "{counts:?}"
    );
    assert!(counts.completed > 1 + MAX_WAITING, "{counts:?}");
    // Every id a parent was told it enqueued is there: nothing accepted was lost.
    let completed = client
        .list(ORDERS, JobState::Completed, 0, 10_000)
        .await
        .unwrap();
    let mut refused_for_depth = 0;
    for job in &completed {
        let result = String::from_utf8(job.result.clone().unwrap_or_default()).unwrap();
        let (ids, refused) = result.split_once('\n').unwrap_or((&result, ""));
        if refused.contains("--max-child-depth 2") {
            refused_for_depth += 1;
        }
        for id in ids.split(',').filter(|id| !id.is_empty()) {
            assert!(
                client.get(ORDERS, id).await.unwrap().is_some(),
                "child {id} of {} was lost",
                job.id
            );
        }
    }
    assert!(refused_for_depth > 0, "no job met the depth limit");
}

/// 20 parents with 1,000 children each: while their children are delivered, a neighbour's job
/// on the same host still runs within a couple of seconds (it takes tens of milliseconds).
#[tokio::test]
async fn delivering_many_children_leaves_a_neighbour_its_turn() {
    const PARENTS: usize = 20;
    const CHILDREN: u64 = 1000;
    let redis = RedisServer::start();
    let client = redis.client().await;
    let payload =
        format!(r#"{{"children":{CHILDREN},"queue":"bulk","handler":"noop","child_bytes":1024}}"#);
    let queues = format!("{ORDERS},neighbour");
    let _host = HostProcess::builder(&redis.url())
        .config(&parent_with_grants(&["bulk/noop"], &[]))
        .args(["--queues", &queues, "--handler", &handler("echo", "echo")])
        .start();
    // The host is up, its handlers compiled: what follows measures delivery, not the start.
    client
        .enqueue(
            "neighbour",
            &NewJob::new("echo", b"hi".to_vec()).with_id("warm"),
        )
        .await
        .unwrap();
    wait_for_state(
        &client,
        "neighbour",
        "warm",
        JobState::Completed,
        Duration::from_secs(60),
    )
    .await;
    let parents: Vec<NewJob> = (0..PARENTS)
        .map(|n| NewJob::new("parent", payload.clone()).with_id(format!("p{n}")))
        .collect();
    client.enqueue_bulk(ORDERS, &parents).await.unwrap();
    // The neighbour's jobs, one after another while the children are delivered.
    let total = PARENTS as u64 * CHILDREN;
    let mut slowest = Duration::ZERO;
    let mut during = 0;
    for n in 0.. {
        let delivered = client.counts("bulk").await.unwrap().waiting;
        if delivered >= total {
            break;
        }
        // The window measured: every parent's completion recorded, its children still being
        // delivered (a parent's completion carries its thousand children to the outbox, which
        // is the completion's cost, not the delivery's).
        let delivering =
            delivered > 0 && client.counts(ORDERS).await.unwrap().completed == PARENTS as u64;
        let id = format!("n{n}");
        let sent = Instant::now();
        client
            .enqueue(
                "neighbour",
                &NewJob::new("echo", b"hi".to_vec()).with_id(&id),
            )
            .await
            .unwrap();
        wait_for_state(
            &client,
            "neighbour",
            &id,
            JobState::Completed,
            Duration::from_secs(60),
        )
        .await;
        if delivering {
            during += 1;
            slowest = slowest.max(sent.elapsed());
        }
        assert!(n < 10_000, "the children were never all delivered");
    }
    assert!(
        during > 0,
        "no neighbour's job ran while children were delivered"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "a neighbour's job waited {slowest:?} while children were delivered ({during} ran during delivery)"
    );
    eventually("an empty outbox", Duration::from_secs(30), || async {
        (outbox_len(&redis, ORDERS).await == 0).then_some(())
    })
    .await;
    assert_eq!(client.counts("bulk").await.unwrap().waiting, total);
}
