//! Failed attempts: exponential and fixed backoff, jitter, caps, and a handler's retry policy for
//! what the job left out.

use std::collections::HashSet;
use std::time::Duration;

use redis::AsyncCommands;
use wasmq::queue::{
    Backoff, Completion, FailOutcome, Failure, JobState, LeasedJob, NewJob, OwnPolicy,
    RecordsAttempt as _, RetryPolicy,
};

use crate::support::jobs::recover_expired_leases;

use super::{HOST, LEASE, enqueue_keys, eval, eventually, fetch_one, start};

#[tokio::test]
async fn failed_attempts_wait_base_times_two_to_the_n_minus_one_with_jitter_capped() {
    let (server, client) = start().await;
    let backoff = Backoff::Exponential {
        base: Duration::from_millis(100),
        cap: Duration::from_millis(250),
        jitter: 0.2,
    };
    let id = client
        .enqueue(
            "q",
            &NewJob::new("h", vec![])
                .with_max_attempts(4)
                .with_backoff(backoff),
        )
        .await
        .unwrap()
        .id;
    let mut conn = server.connection().await;
    for attempt in 1..=3u32 {
        let leased = eventually("the retry to come due", || async {
            client.fetch("q", 1, LEASE, HOST).await.unwrap().pop()
        })
        .await;
        assert_eq!(leased.attempt, attempt);
        let before = server.now_ms().await;
        let report = client
            .fail(
                "q",
                &[Failure::new(
                    &leased,
                    "guest_fail",
                    format!("error {attempt}"),
                )],
            )
            .await
            .unwrap();
        let after = server.now_ms().await;
        let [(failed_id, FailOutcome::Retry { run_at_ms })] = report.outcomes.as_slice() else {
            panic!("expected a retry, got {report:?}");
        };
        assert_eq!(failed_id, &id);
        // The retry set holds the job at exactly that due time.
        let score: f64 = conn.zscore("wasmq:{q}:retry", &id).await.unwrap();
        assert_eq!(score as u64, *run_at_ms);
        let (lo, hi) = backoff.delay_bounds_ms(attempt);
        let nominal = (100u64 << (attempt - 1)).min(250);
        assert_eq!((lo, hi), ((nominal * 4) / 5, (nominal * 6 / 5).min(250)));
        assert!(
            *run_at_ms >= before + lo && *run_at_ms <= after + hi,
            "attempt {attempt}: due {} ms after the failure, expected {lo}..={hi}",
            *run_at_ms as i64 - before as i64
        );
        let job = client.get("q", &id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Retry);
    }
}

#[tokio::test]
async fn jitter_spreads_the_retries_of_jobs_that_fail_together() {
    let (_server, client) = start().await;
    let backoff = Backoff::exponential(Duration::from_secs(10)).with_jitter(0.5);
    let jobs: Vec<NewJob> = (0..20)
        .map(|_| NewJob::new("h", vec![]).with_backoff(backoff))
        .collect();
    client.enqueue_bulk("q", &jobs).await.unwrap();
    let leased = client.fetch("q", 20, LEASE, HOST).await.unwrap();
    let failures: Vec<Failure> = leased
        .iter()
        .map(|job| Failure::new(job, "trap", "boom"))
        .collect();
    let report = client.fail("q", &failures).await.unwrap();
    let due: HashSet<u64> = report
        .outcomes
        .iter()
        .map(|(_, outcome)| match outcome {
            FailOutcome::Retry { run_at_ms } => *run_at_ms,
            FailOutcome::Dead => panic!("not out of attempts yet"),
        })
        .collect();
    assert!(
        due.len() > 10,
        "20 retries fell on only {} distinct times",
        due.len()
    );
}

#[tokio::test]
async fn fixed_backoff_waits_the_same_delay_every_time() {
    let (server, client) = start().await;
    client
        .enqueue(
            "q",
            &NewJob::new("h", vec![]).with_backoff(Backoff::fixed(Duration::from_secs(5))),
        )
        .await
        .unwrap();
    let leased = fetch_one(&client, "q").await;
    let before = server.now_ms().await;
    let report = client
        .fail("q", &[Failure::new(&leased, "timeout", "slow")])
        .await
        .unwrap();
    let after = server.now_ms().await;
    let FailOutcome::Retry { run_at_ms } = report.outcomes[0].1 else {
        panic!("expected a retry");
    };
    assert!(run_at_ms >= before + 5000 && run_at_ms <= after + 5000);
}

#[tokio::test]
async fn an_exponential_base_over_the_default_cap_is_its_own_cap_unless_a_cap_is_given() {
    let (server, client) = start().await;
    let keys = enqueue_keys("q");
    let two_hours = "7200000";
    let args = ["1", "long", "2", "handler", "h", "backoff_ms", two_hours];
    eval(&server, wasmq::queue::ENQUEUE_LUA, &keys, &args)
        .await
        .unwrap();
    let job = client.get("q", "long").await.unwrap().unwrap();
    let two_hours = Duration::from_secs(7200);
    assert_eq!(
        job.backoff,
        Backoff::Exponential {
            base: two_hours,
            cap: two_hours,
            jitter: 0.2
        }
    );
    // A cap the producer chose is kept to: below the base, refused.
    let args = [
        "1",
        "capped",
        "3",
        "handler",
        "h",
        "backoff_ms",
        "7200000",
        "backoff_cap_ms",
        "3600000",
    ];
    let err = eval(&server, wasmq::queue::ENQUEUE_LUA, &keys, &args)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("backoff_cap_ms must not be below backoff_ms"),
        "{err}"
    );
    // A fixed backoff has no cap: a two-hour delay is just that.
    let args = [
        "1",
        "fixed",
        "3",
        "handler",
        "h",
        "backoff",
        "fixed",
        "backoff_ms",
        "7200000",
    ];
    eval(&server, wasmq::queue::ENQUEUE_LUA, &keys, &args)
        .await
        .unwrap();
    let job = client.get("q", "fixed").await.unwrap().unwrap();
    // Two hours ± the default 20 % jitter, after any attempt: nothing caps it at one hour.
    assert_eq!(job.backoff.delay_bounds_ms(5), (5_760_000, 8_640_000));
    // The Rust client says the same: exponential from two hours, no cap given.
    client
        .enqueue(
            "q",
            &NewJob::new("h", vec![]).with_backoff(Backoff::exponential(two_hours)),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_handlers_retry_policy_covers_what_the_job_left_out_and_attempts_record_the_version() {
    let (_server, client) = start().await;
    let policy = RetryPolicy {
        max_attempts: Some(2),
        backoff: Some(Backoff::fixed(Duration::ZERO)),
    };
    // Three producers: no policy, their own attempts, their own everything.
    let bare = client
        .enqueue("q", &NewJob::new("h", vec![]))
        .await
        .unwrap();
    let attempts = client
        .enqueue("q", &NewJob::new("h", vec![]).with_max_attempts(3))
        .await
        .unwrap();
    let own = client
        .enqueue(
            "q",
            &NewJob::new("h", vec![])
                .with_max_attempts(5)
                .with_backoff(Backoff::fixed(Duration::from_secs(600))),
        )
        .await
        .unwrap();
    let stored = client.get("q", &bare.id).await.unwrap().unwrap();
    assert_eq!(stored.own_policy, OwnPolicy::default());
    assert_eq!(
        stored.max_attempts, 3,
        "the queue default until a handler applies"
    );
    let stored = client.get("q", &attempts.id).await.unwrap().unwrap();
    assert!(stored.own_policy.max_attempts && !stored.own_policy.backoff);

    // Each leased job tells its host what it set, so the guest can be told its real attempts.
    let leased = client.fetch("q", 3, LEASE, HOST).await.unwrap();
    let by_id = |id: &str| leased.iter().find(|j| j.id == id).unwrap().clone();
    assert_eq!(policy.max_attempts_for(by_id(&bare.id).own_policy, 3), 2);
    assert_eq!(
        policy.max_attempts_for(by_id(&attempts.id).own_policy, 3),
        3
    );
    assert_eq!(policy.max_attempts_for(by_id(&own.id).own_policy, 5), 5);

    let fail = |job: &LeasedJob| {
        Failure::new(job, "retry", "again").with_handler("7:0123456789ab", policy)
    };
    let report = client
        .fail("q", &leased.iter().map(fail).collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);

    // The bare job took the handler's attempts and backoff; it is waiting again at once.
    let job = client.get("q", &bare.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Waiting);
    assert_eq!(job.max_attempts, 2);
    assert_eq!(job.backoff, Backoff::fixed(Duration::ZERO));
    assert_eq!(job.history[0].version.as_deref(), Some("7:0123456789ab"));
    // The job with its own attempts kept them and took the handler's backoff.
    let job = client.get("q", &attempts.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Waiting);
    assert_eq!(job.max_attempts, 3);
    assert_eq!(job.backoff, Backoff::fixed(Duration::ZERO));
    // The job with a policy of its own kept all of it: a 10-minute wait.
    let job = client.get("q", &own.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Retry);
    assert_eq!(job.max_attempts, 5);
    assert_eq!(job.backoff, Backoff::fixed(Duration::from_secs(600)));

    // Second attempts: the bare job is out of the handler's two attempts, the other is not.
    // Its lease expires instead of failing: recovery applies the same policy.
    let leased = client
        .fetch("q", 2, Duration::from_millis(20), HOST)
        .await
        .unwrap();
    assert_eq!(leased.len(), 2);
    let policies = [("h".to_string(), policy)];
    let report = recover_expired_leases(&client, "q", &policies, 2).await;
    assert_eq!(
        report.outcomes.len(),
        2,
        "both leases recovered in one call"
    );
    let job = client.get("q", &bare.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.history.len(), 2);
    assert_eq!(job.history[1].outcome, "lease_expired");
    assert_eq!(
        job.history[1].version, None,
        "nobody knows what a lost lease ran"
    );
    let job = client.get("q", &attempts.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Waiting);

    // A success records its version too.
    let last = fetch_one(&client, "q").await;
    assert_eq!(last.id, attempts.id);
    client
        .complete(
            "q",
            &[Completion::new(&last, b"done".to_vec()).with_version("local:abcdefabcdef")],
        )
        .await
        .unwrap();
    let job = client.get("q", &attempts.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Completed);
    let versions: Vec<_> = job.history.iter().map(|a| a.version.as_deref()).collect();
    assert_eq!(
        versions,
        [Some("7:0123456789ab"), None, Some("local:abcdefabcdef")]
    );
}
