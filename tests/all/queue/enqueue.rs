//! Enqueueing: options, priority and FIFO, delays and run-at times on the Redis clock, existing
//! ids, and bad input refused with nothing written.

use std::time::{Duration, SystemTime};

use wasmq::queue::{Backoff, Completion, JobState, NewJob, QueueConfig, QueueError};

use super::{HOST, LEASE, eventually, fetch_one, ids, start};

/// enqueue.lua run as a producer with a plain Redis client runs it: queue `q`'s seven keys and
/// `args` as ARGV.
async fn enqueue_raw(
    conn: &mut wasmq::connection::RedisConnection,
    args: &[&str],
) -> redis::RedisResult<redis::Value> {
    let script = redis::Script::new(wasmq::queue::ENQUEUE_LUA);
    let mut invocation = script.prepare_invoke();
    for key in [
        "job:", "config", "waiting", "delayed", "seq", "events", "wake",
    ] {
        invocation.key(format!("wasmq:{{q}}:{key}"));
    }
    for arg in args {
        invocation.arg(*arg);
    }
    invocation.invoke_async(conn).await
}

#[tokio::test]
async fn an_enqueued_job_is_leased_with_its_payload_options_and_first_attempt() {
    let (server, client) = start().await;
    let job = NewJob::new("send-email", b"{\"to\":\"a@b\"}".to_vec())
        .with_max_attempts(5)
        .with_timeout(Duration::from_secs(30));
    let enqueued = client.enqueue("emails", &job).await.unwrap();
    assert!(enqueued.created);
    assert_eq!(enqueued.state, Some(JobState::Waiting));
    assert_eq!(enqueued.id.len(), 26, "generated ids are ULIDs");

    let before = server.now_ms().await;
    let leased = fetch_one(&client, "emails").await;
    assert_eq!(leased.id, enqueued.id);
    assert_eq!(leased.handler, "send-email");
    assert_eq!(leased.payload, job.payload);
    assert_eq!((leased.attempt, leased.max_attempts), (1, 5));
    assert_eq!(leased.timeout, Some(Duration::from_secs(30)));
    // The lease expiry comes from Redis TIME plus the lease.
    assert!(leased.lease_expires_at_ms >= before + 60_000);
    assert!(leased.lease_expires_at_ms <= server.now_ms().await + 60_000);

    let stored = client.get("emails", &leased.id).await.unwrap().unwrap();
    assert_eq!(stored.state, JobState::Active);
    assert_eq!(stored.host.as_deref(), Some(HOST));
    assert_eq!(stored.lease_expires_at_ms, Some(leased.lease_expires_at_ms));

    let report = client
        .complete("emails", &[Completion::new(&leased, b"sent".to_vec())])
        .await
        .unwrap();
    assert_eq!(report.completed, vec![leased.id.clone()]);
    let done = client.get("emails", &leased.id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.result.as_deref(), Some(&b"sent"[..]));
    assert_eq!(done.history.len(), 1);
    assert_eq!(done.history[0].outcome, "ok");
    assert_eq!(done.history[0].host, HOST);
    let counts = client.counts("emails").await.unwrap();
    assert_eq!((counts.waiting, counts.active, counts.completed), (0, 0, 1));
}

#[tokio::test]
async fn higher_priority_runs_first_and_fifo_holds_within_a_priority() {
    let (_server, client) = start().await;
    let plan = [
        ("low-1", -5),
        ("mid-1", 0),
        ("high-1", 10),
        ("mid-2", 0),
        ("high-2", 10),
        ("low-2", -5),
    ];
    let jobs: Vec<NewJob> = plan
        .iter()
        .map(|(id, priority)| {
            NewJob::new("h", vec![])
                .with_id(*id)
                .with_priority(*priority)
        })
        .collect();
    client.enqueue_bulk("q", &jobs).await.unwrap();
    let waiting = client.list("q", JobState::Waiting, 0, 10).await.unwrap();
    let listed: Vec<&str> = waiting.iter().map(|job| job.id.as_str()).collect();
    assert_eq!(
        listed,
        ["high-1", "high-2", "mid-1", "mid-2", "low-1", "low-2"]
    );

    let first = client.fetch("q", 3, LEASE, HOST).await.unwrap();
    let rest = client.fetch("q", 10, LEASE, HOST).await.unwrap();
    assert_eq!(ids(&first), ["high-1", "high-2", "mid-1"]);
    assert_eq!(ids(&rest), ["mid-2", "low-1", "low-2"]);
}

#[tokio::test]
async fn a_delayed_job_waits_for_its_time_on_the_redis_clock() {
    let (server, client) = start().await;
    let before = server.now_ms().await;
    let enqueued = client
        .enqueue(
            "q",
            &NewJob::new("h", vec![]).with_delay(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    assert_eq!(enqueued.state, Some(JobState::Delayed));
    let job = client.get("q", &enqueued.id).await.unwrap().unwrap();
    let run_at = job.run_at_ms.unwrap();
    assert!(run_at >= before + 300 && run_at <= server.now_ms().await + 300);

    let fetched = client.fetch_batch("q", 10, LEASE, HOST).await.unwrap();
    if fetched.now_ms < run_at {
        assert!(
            fetched.jobs.is_empty(),
            "a delayed job must not be leased early"
        );
        assert_eq!(fetched.next_due_ms, Some(run_at));
    } else {
        // This machine stalled past the delay; the job is due, so leasing it is right.
        assert_eq!(fetched.jobs.len(), 1);
        return;
    }

    let leased = eventually("the delayed job to come due", || async {
        client.fetch("q", 10, LEASE, HOST).await.unwrap().pop()
    })
    .await;
    assert_eq!(leased.id, enqueued.id);
    assert!(server.now_ms().await >= run_at);
}

#[tokio::test]
async fn run_at_schedules_in_the_future_and_a_past_time_means_now() {
    let (_server, client) = start().await;
    let future = SystemTime::now() + Duration::from_secs(3600);
    let past = SystemTime::now() - Duration::from_secs(3600);
    let later = client
        .enqueue("q", &NewJob::new("h", vec![]).with_run_at(future))
        .await
        .unwrap();
    let now = client
        .enqueue("q", &NewJob::new("h", vec![]).with_run_at(past))
        .await
        .unwrap();
    assert_eq!(later.state, Some(JobState::Delayed));
    assert_eq!(now.state, Some(JobState::Waiting));
    let stored = client.get("q", &later.id).await.unwrap().unwrap();
    assert_eq!(stored.run_at_ms, Some(wasmq::queue::unix_ms(future)));
    // The past time is not stored as given: the job became due when it was enqueued (a
    // run-at of 1970 would make it look 56 years late to a backlog alert).
    let stored = client.get("q", &now.id).await.unwrap().unwrap();
    assert_eq!(stored.run_at_ms, Some(stored.created_at_ms));
    assert_eq!(
        ids(&client.fetch("q", 10, LEASE, HOST).await.unwrap()),
        [now.id.as_str()]
    );
}

#[tokio::test]
async fn enqueueing_an_existing_id_writes_nothing_and_returns_the_existing_job() {
    let (server, client) = start().await;
    let first = client
        .enqueue("q", &NewJob::new("h", b"one".to_vec()).with_id("order-42"))
        .await
        .unwrap();
    assert!(first.created);
    let before = server.snapshot().await;
    let again = client
        .enqueue(
            "q",
            &NewJob::new("other", b"two".to_vec())
                .with_id("order-42")
                .with_priority(9),
        )
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(
        (again.id.as_str(), again.state),
        ("order-42", Some(JobState::Waiting))
    );
    assert_eq!(
        server.snapshot().await,
        before,
        "a duplicate must write nothing"
    );
    let job = client.get("q", "order-42").await.unwrap().unwrap();
    assert_eq!(job.payload, b"one");

    // Within one bulk call too: the second occurrence is reported as existing.
    let bulk = client
        .enqueue_bulk(
            "q",
            &[
                NewJob::new("h", vec![]).with_id("x"),
                NewJob::new("h", vec![]).with_id("x"),
            ],
        )
        .await
        .unwrap();
    assert_eq!((bulk[0].created, bulk[1].created), (true, false));
    assert_eq!(client.counts("q").await.unwrap().waiting, 2);
}

#[tokio::test]
async fn an_oversize_payload_is_refused_and_nothing_is_written() {
    let (server, client) = start().await;
    client
        .enqueue("q", &NewJob::new("h", vec![]))
        .await
        .unwrap();
    let before = server.snapshot().await;

    let big = NewJob::new("h", vec![0u8; 512 * 1024 + 1]).with_id("big");
    let err = client.enqueue("q", &big).await.unwrap_err();
    assert!(
        matches!(&err, QueueError::PayloadTooLarge { id, size, limit } if id == "big" && *size == 512 * 1024 + 1 && *limit == 512 * 1024),
        "{err:?}"
    );
    // One oversize job fails the whole bulk call: nothing of it is written.
    let err = client
        .enqueue_bulk("q", &[NewJob::new("h", vec![1]), big.clone()])
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::PayloadTooLarge { .. }), "{err:?}");
    assert_eq!(server.snapshot().await, before);

    // The limit is per queue.
    client
        .set_config(
            "small",
            &QueueConfig {
                max_payload_bytes: 10,
                ..QueueConfig::default()
            },
        )
        .await
        .unwrap();
    let err = client
        .enqueue("small", &NewJob::new("h", vec![0u8; 11]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, QueueError::PayloadTooLarge { limit: 10, .. }),
        "{err:?}"
    );
    assert!(
        client
            .enqueue("small", &NewJob::new("h", vec![0u8; 10]))
            .await
            .is_ok()
    );
    // The exact message a user sees.
    assert_eq!(
        client.enqueue("q", &big).await.unwrap_err().to_string(),
        "payload of job big is 524289 bytes, over the queue's limit of 524288 bytes"
    );
}

#[tokio::test]
async fn malformed_input_is_refused_with_a_clear_error_and_nothing_is_written() {
    let (server, client) = start().await;
    client
        .enqueue("q", &NewJob::new("h", vec![]))
        .await
        .unwrap();
    let before = server.snapshot().await;

    let table: Vec<(&str, NewJob, &str)> = vec![
        (
            "q",
            NewJob::new("", vec![]),
            "handler name must not be empty",
        ),
        (
            "q",
            NewJob::new("h", vec![]).with_max_attempts(0),
            "max attempts must be within 1..=1000",
        ),
        (
            "q",
            NewJob::new("h", vec![]).with_id("has space"),
            "printable ASCII",
        ),
        (
            "q",
            NewJob::new("h", vec![]).with_priority(5000),
            "priority",
        ),
        ("bad{queue}", NewJob::new("h", vec![]), "invalid queue name"),
        ("", NewJob::new("h", vec![]), "invalid queue name"),
    ];
    for (queue, job, message) in table {
        let err = client.enqueue(queue, &job).await.unwrap_err();
        assert!(
            matches!(
                err,
                QueueError::InvalidJob { .. } | QueueError::InvalidQueue(_)
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(message),
            "{err} should say {message:?}"
        );
    }
    assert!(matches!(
        client.fetch("q", 0, LEASE, HOST).await.unwrap_err(),
        QueueError::InvalidArgument(_)
    ));

    // A producer speaking the protocol directly gets the same checks from the script.
    let mut conn = server.connection().await;
    let raw_table: Vec<(Vec<&str>, &str)> = vec![
        (vec!["1", "j", "1", "payload", "x"], "handler must be"),
        (
            vec!["1", "j", "2", "handler", "h", "colour", "red"],
            "unknown field colour",
        ),
        (
            vec!["1", "j", "2", "handler", "h", "max_attempts", "0"],
            "max_attempts",
        ),
        (
            vec!["1", "j", "2", "handler", "h", "delay_ms", "-5"],
            "delay_ms",
        ),
        (vec!["2", "j", "1", "handler", "h"], "truncated"),
        (
            vec!["1", "j", "1", "handler", "h", "extra"],
            "more arguments",
        ),
        (vec!["0"], "number of jobs, 1 to 10000"),
        (vec!["10001"], "number of jobs, 1 to 10000"),
        (
            vec!["1", "j", "2", "handler", "h", "handler", "h2"],
            "field handler given twice",
        ),
        (
            vec![
                "1", "j", "3", "handler", "h", "priority", "1", "priority", "2",
            ],
            "field priority given twice",
        ),
        (
            vec!["1", "j", "65", "handler", "h"],
            "number of field/value pairs must be 0 to 64",
        ),
    ];
    for (args, message) in raw_table {
        let err = enqueue_raw(&mut conn, &args).await.unwrap_err();
        assert_eq!(err.code(), Some("WASMQ_INVALID"), "{args:?}: {err}");
        assert!(
            err.to_string().contains(message),
            "{args:?}: {err} should say {message:?}"
        );
    }
    assert_eq!(
        server.snapshot().await,
        before,
        "refused input must write nothing"
    );
}

// enqueue.lua stores numbers as the producer wrote them and every host reads them back with
// Rust's parsers; Lua's tonumber is laxer (spaces, hex, nan, a NUL and what follows it, `-0`
// for a count), and a job the script accepted in such a form could never be fetched.
#[tokio::test]
async fn enqueue_accepts_only_numbers_the_host_can_read_back() {
    let (server, client) = start().await;
    let mut conn = server.connection().await;
    let host_reads = |text: &str| text.parse::<f64>().is_ok_and(|j| (0.0..=1.0).contains(&j));

    let before = server.snapshot().await;
    let refused_jitter = [
        " 0.5",
        "0.5 ",
        "\t0.5",
        "0.5\n",
        "0x0.8",
        "0X1",
        "0x.8p1",
        "nan",
        "NaN",
        "-nan",
        "inf",
        "-inf",
        "infinity",
        "0.5\0junk",
        "",
        ".",
        "+",
        "e-1",
        "1e",
        "1e+",
        "1.5.1",
        "1,5",
        "-0.1",
        "1.5",
        "2e-0",
        "0.5e1",
    ];
    for text in refused_jitter {
        let args = ["1", "j", "2", "handler", "h", "backoff_jitter", text];
        let err = enqueue_raw(&mut conn, &args).await.unwrap_err();
        assert_eq!(err.code(), Some("WASMQ_INVALID"), "{text:?}: {err}");
        assert!(
            err.to_string()
                .contains("backoff_jitter must be a decimal number in 0..1"),
            "{text:?}: {err}"
        );
        assert!(!host_reads(text), "{text:?} is a jitter the host reads");
    }
    // `-0` is no count of attempts or milliseconds to Rust's unsigned parse.
    assert!("-0".parse::<u64>().is_err() && "-0".parse::<u32>().is_err());
    let unsigned = [
        "delay_ms",
        "run_at_ms",
        "timeout_ms",
        "backoff_ms",
        "backoff_cap_ms",
        "max_attempts",
    ];
    let mut refused_integers = Vec::new();
    for field in unsigned.iter().chain(&["priority"]) {
        for text in [
            " 5", "5 ", "5\n", "0x10", "1e3", "5.0", "+5", "5\0", "", "-",
        ] {
            refused_integers.push((*field, text));
        }
    }
    for field in unsigned {
        refused_integers.push((field, "-0"));
    }
    for (field, text) in refused_integers {
        let args = ["1", "j", "2", "handler", "h", field, text];
        let err = enqueue_raw(&mut conn, &args).await.unwrap_err();
        assert_eq!(err.code(), Some("WASMQ_INVALID"), "{field} {text:?}: {err}");
        assert!(
            err.to_string().contains(&format!("job j: {field} must be")),
            "{field} {text:?}: {err}"
        );
    }
    assert_eq!(
        server.snapshot().await,
        before,
        "refused input must write nothing"
    );

    // Every form the script takes decodes, to the value Rust's parse gives.
    let accepted_jitter = [
        "0.5",
        "1",
        "0",
        "-0",
        "-0.0",
        ".5",
        "1.",
        "+0.25",
        "1e-1",
        "2.5E-1",
        "10e-1",
        "0.0000001",
        "1e-400",
        "1.00000000000000000001",
    ];
    for (n, &text) in accepted_jitter.iter().enumerate() {
        let id = format!("jitter-{n}");
        let args = ["1", &id, "2", "handler", "h", "backoff_jitter", text];
        enqueue_raw(&mut conn, &args)
            .await
            .unwrap_or_else(|err| panic!("{text:?} refused: {err}"));
        let job = client.get("q", &id).await.unwrap().unwrap();
        assert_eq!(
            job.backoff.jitter(),
            text.parse::<f64>().unwrap(),
            "{text:?}"
        );
        assert!(host_reads(text), "{text:?}");
    }
    // Integers in the forms both read alike: leading zeros, `-0` where a sign is allowed.
    let args = [
        "1",
        "integers",
        "7",
        "handler",
        "h",
        "priority",
        "-007",
        "max_attempts",
        "05",
        "timeout_ms",
        "0030000",
        "backoff_ms",
        "0",
        "backoff_cap_ms",
        "00",
        "run_at_ms",
        "0",
    ];
    enqueue_raw(&mut conn, &args).await.unwrap();
    let job = client.get("q", "integers").await.unwrap().unwrap();
    assert_eq!((job.priority, job.max_attempts), (-7, 5));
    assert_eq!(job.timeout, Some(Duration::from_secs(30)));
    assert_eq!(
        job.backoff,
        Backoff::Exponential {
            base: Duration::ZERO,
            cap: Duration::ZERO,
            jitter: 0.2
        }
    );
    assert_eq!(
        (job.state, job.run_at_ms),
        (JobState::Waiting, Some(job.created_at_ms)),
        "a run_at_ms in the past means now"
    );
    let args = [
        "1", "zeros", "3", "handler", "h", "priority", "-0", "delay_ms", "000",
    ];
    enqueue_raw(&mut conn, &args).await.unwrap();
    let job = client.get("q", "zeros").await.unwrap().unwrap();
    assert_eq!((job.priority, job.state), (0, JobState::Waiting));

    // And a host leases every one of them.
    let fetched = client.fetch("q", 100, LEASE, HOST).await.unwrap();
    assert_eq!(fetched.len(), accepted_jitter.len() + 2);
}
