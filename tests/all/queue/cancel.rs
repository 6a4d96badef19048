//! Cancel: jobs in every state are dead-lettered as `cancelled` (history, by and reason kept),
//! a running job's lease ends at once and its holder hears of it, the old call form still
//! works, and the cancel of a handler's or a group's jobs goes page by page.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;
use wasmq::connection::RedisTarget;
use wasmq::queue::{
    Backoff, CancelBy, CancelFilter, CancelOutcome, Completion, Failure, JobState, LeaseRejection,
    NewJob, QueueKeys, StepSave,
};

use super::{HOST, LEASE, fetch_one, start};

#[tokio::test]
async fn cancel_dead_letters_jobs_in_every_state_keeping_their_history_by_and_reason() {
    let (server, client) = start().await;
    // A job that failed once and waits for its retry.
    client
        .enqueue(
            "q",
            &NewJob::new("h", vec![])
                .with_id("retry")
                .with_backoff(Backoff::fixed(Duration::from_secs(60))),
        )
        .await
        .unwrap();
    let first = fetch_one(&client, "q").await;
    client
        .fail("q", &[Failure::new(&first, "trap", "boom")])
        .await
        .unwrap();
    client
        .enqueue("q", &NewJob::new("h", vec![]).with_id("running"))
        .await
        .unwrap();
    let running = fetch_one(&client, "q").await;
    client
        .enqueue_bulk(
            "q",
            &[
                NewJob::new("h", vec![]).with_id("waiting"),
                NewJob::new("h", vec![]).with_id("grouped").with_group("g1"),
                NewJob::new("h", vec![])
                    .with_id("delayed")
                    .with_delay(Duration::from_secs(60)),
            ],
        )
        .await
        .unwrap();

    let ids: Vec<String> = ["waiting", "grouped", "delayed", "retry", "running", "nope"]
        .map(String::from)
        .to_vec();
    let who = CancelBy::new("tester", "not needed any more");
    let outcomes = client.cancel_by("q", &ids, &who).await.unwrap();
    let expected: Vec<(String, CancelOutcome)> = ids
        .iter()
        .map(|id| {
            let outcome = if id == "nope" {
                CancelOutcome::NotFound
            } else {
                CancelOutcome::Cancelled
            };
            (id.clone(), outcome)
        })
        .collect();
    assert_eq!(outcomes, expected);
    let counts = client.counts("q").await.unwrap();
    assert_eq!(
        (
            counts.waiting,
            counts.delayed,
            counts.retry,
            counts.active,
            counts.dead
        ),
        (0, 0, 0, 0, 5)
    );
    for id in &ids[..5] {
        let job = client.get("q", id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Dead, "{id}");
        assert_eq!(job.last_outcome.as_deref(), Some("cancelled"), "{id}");
        assert_eq!(job.cancelled_by.as_deref(), Some("tester"), "{id}");
        assert_eq!(
            job.cancel_reason.as_deref(),
            Some("not needed any more"),
            "{id}"
        );
        let last = job.history.last().unwrap();
        assert_eq!(
            (last.outcome.as_str(), last.error.as_str()),
            ("cancelled", "not needed any more"),
            "{id}"
        );
        assert!(last.finished_at > 0);
    }
    // The retry job keeps its failed attempt before the cancel; the running one's entry is its
    // attempt's.
    let retry = client.get("q", "retry").await.unwrap().unwrap();
    let outcomes: Vec<&str> = retry.history.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["trap", "cancelled"]);
    let ran = client.get("q", "running").await.unwrap().unwrap();
    assert_eq!(ran.history.len(), 1);
    assert_eq!(
        (ran.history[0].attempt, ran.history[0].host.as_str()),
        (1, HOST)
    );
    assert!(ran.history[0].started_at > 0);
    // The group left the round-robin with its last job.
    let mut conn = server.connection().await;
    let groups: u64 = redis::cmd("ZCARD")
        .arg(QueueKeys::new("q").unwrap().groups())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(groups, 0);

    // The running job's holder is refused whatever it sends under its lease.
    let dead = LeaseRejection::NotActive("dead".into());
    let extended = client.extend("q", &[running.lease()], LEASE).await.unwrap();
    assert_eq!(extended.rejected, [("running".to_string(), dead.clone())]);
    let report = client
        .complete("q", &[Completion::new(&running, b"late".to_vec())])
        .await
        .unwrap();
    assert!(report.completed.is_empty());
    assert_eq!(report.rejected, [("running".to_string(), dead.clone())]);
    let failed = client
        .fail("q", &[Failure::new(&running, "trap", "late")])
        .await
        .unwrap();
    assert!(failed.outcomes.is_empty());
    assert_eq!(
        client
            .save_step("q", "running", &running.token, "step:a", b"x")
            .await
            .unwrap(),
        StepSave::Rejected(dead)
    );
    assert!(client.load_steps("q", "running").await.unwrap().is_empty());
    let ran_again = client.get("q", "running").await.unwrap().unwrap();
    assert_eq!(
        ran_again.history.len(),
        1,
        "nothing recorded after the cancel"
    );
    assert!(ran_again.result.is_none());

    // A cancel is its own event, never a dead-lettering (dead-letter alerts must not fire).
    let events = client.events("q", None, 1000).await.unwrap();
    let cancelled: BTreeSet<&str> = events
        .iter()
        .filter(|e| e.event == "cancelled")
        .flat_map(|e| e.jobs.iter().map(|(id, _)| id.as_str()))
        .collect();
    assert_eq!(
        cancelled,
        BTreeSet::from(["waiting", "grouped", "delayed", "retry", "running"])
    );
    assert!(events.iter().all(|e| e.event != "dead"), "{events:?}");

    // Finished jobs are not cancelled again; replay runs a cancelled job again.
    let again = client.cancel("q", &ids[..1]).await.unwrap();
    assert_eq!(
        again,
        [(
            "waiting".to_string(),
            CancelOutcome::NotCancellable(JobState::Dead)
        )]
    );
    let replayed = client.replay("q", &ids[..1]).await.unwrap();
    assert_eq!(replayed.done, ["waiting"]);
}

#[tokio::test]
async fn cancelling_a_running_job_publishes_its_lease_on_the_queues_cancel_channel() {
    let (server, client) = start().await;
    let target = RedisTarget::open(&server.url()).unwrap();
    let channel = QueueKeys::new("q").unwrap().cancel_channel();
    assert_eq!(channel, "wasmq:{q}:cancel");
    let mut messages = target
        .subscribe_all(std::slice::from_ref(&channel))
        .await
        .unwrap();
    client
        .enqueue("q", &NewJob::new("h", vec![]).with_id("j1"))
        .await
        .unwrap();
    client
        .enqueue("q", &NewJob::new("h", vec![]).with_id("j2"))
        .await
        .unwrap();
    let job = fetch_one(&client, "q").await;
    // A waiting job's cancel publishes nothing: no host holds it.
    client.cancel("q", &["j2".to_string()]).await.unwrap();
    client.cancel("q", &["j1".to_string()]).await.unwrap();
    let (got_channel, payload) = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .expect("a cancel message")
        .unwrap();
    assert_eq!(got_channel, channel);
    assert_eq!(
        String::from_utf8(payload).unwrap(),
        format!("{} j1", job.token)
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), messages.next())
            .await
            .is_err(),
        "one message, for the running job only"
    );
}

#[tokio::test]
async fn the_old_call_form_without_by_reason_or_the_new_keys_still_cancels_jobs_not_started() {
    let (server, client) = start().await;
    client
        .enqueue_bulk(
            "q",
            &[
                NewJob::new("h", vec![]).with_id("running"),
                NewJob::new("h", vec![]).with_id("waiting"),
            ],
        )
        .await
        .unwrap();
    fetch_one(&client, "q").await;
    // As an SDK of before this change calls it: lib.lua then the body, nine keys, ARGV the ids.
    let script = format!(
        "{}\nreturn (function()\n{}\nend)()\n",
        wasmq::queue::LIB_LUA,
        include_str!("../../../host/src/queue/scripts/cancel.lua")
    );
    let keys = QueueKeys::new("q").unwrap();
    let mut conn = server.connection().await;
    let reply: Vec<(String, String)> = redis::cmd("EVAL")
        .arg(script)
        .arg(9)
        .arg(keys.job_prefix())
        .arg(keys.config())
        .arg(keys.waiting())
        .arg(keys.delayed())
        .arg(keys.retry())
        .arg(keys.events())
        .arg(keys.group_prefix())
        .arg(keys.groups())
        .arg(keys.steps_prefix())
        .arg("waiting")
        .arg("running")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        reply,
        [
            ("waiting".to_string(), "cancelled".to_string()),
            ("running".to_string(), "active".to_string()),
        ]
    );
    let job = client.get("q", "waiting").await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.last_outcome.as_deref(), job.cancelled_by),
        (JobState::Dead, Some("cancelled"), None)
    );
    let counts = client.counts("q").await.unwrap();
    assert_eq!((counts.dead, counts.active), (1, 1));
}

/// Pages through a cancel of `filter` `limit` ids at a time; returns the ids cancelled and
/// the number of pages.
async fn cancel_all(
    client: &wasmq::queue::Client,
    filter: &CancelFilter,
    limit: usize,
) -> (BTreeSet<String>, usize) {
    let who = CancelBy::new("tester", "bulk");
    let (mut cursor, mut cancelled, mut pages) = (None::<String>, BTreeSet::new(), 0);
    loop {
        let page = client
            .cancel_matching("q", filter, &who, cursor.as_deref(), limit)
            .await
            .unwrap();
        pages += 1;
        // A set of up to 128 ids is kept as a listpack, which ZSCAN returns whole.
        assert!(page.examined <= limit as u64 + 128, "{page:?}");
        for id in page.cancelled {
            assert!(cancelled.insert(id), "cancelled twice");
        }
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 1000, "the scan does not end");
    }
    (cancelled, pages)
}

#[tokio::test]
async fn cancel_by_handler_or_group_goes_page_by_page_and_leaves_the_rest() {
    let (_server, client) = start().await;
    let mut jobs = Vec::new();
    let mut expected_a = BTreeSet::new();
    for n in 0..300 {
        let handler = if n % 3 == 0 { "b" } else { "a" };
        let id = format!("j{n:03}");
        let mut job = NewJob::new(handler, vec![]).with_id(id.clone());
        match n % 5 {
            0 => job = job.with_group(format!("g{}", n % 4)),
            1 => job = job.with_delay(Duration::from_secs(600)),
            _ => {}
        }
        if handler == "a" {
            expected_a.insert(id);
        }
        jobs.push(job);
    }
    client.enqueue_bulk("q", &jobs).await.unwrap();
    // A running job of handler a is not cancelled by the filter.
    let running = fetch_one(&client, "q").await;
    expected_a.remove(&running.id);

    let (cancelled, pages) = cancel_all(&client, &CancelFilter::Handler("a".into()), 20).await;
    assert_eq!(cancelled, expected_a);
    assert!(pages > 3, "{pages} pages");
    for id in &cancelled {
        let job = client.get("q", id).await.unwrap().unwrap();
        assert_eq!(
            (job.state, job.cancelled_by.as_deref()),
            (JobState::Dead, Some("tester"))
        );
    }
    let still = client.get("q", &running.id).await.unwrap().unwrap();
    assert_eq!(still.state, JobState::Active);
    // Handler b's jobs are all still there; then its group g0 goes.
    let counts = client.counts("q").await.unwrap();
    assert_eq!(counts.dead as usize, expected_a.len());
    let g0: BTreeSet<String> = (0..300)
        .filter(|n| n % 3 == 0 && n % 5 == 0 && n % 4 == 0)
        .map(|n| format!("j{n:03}"))
        .collect();
    let (cancelled, _) = cancel_all(&client, &CancelFilter::Group("g0".into()), 5).await;
    assert_eq!(cancelled, g0);
    let rest = client.counts("q").await.unwrap();
    assert_eq!(rest.dead as usize, expected_a.len() + g0.len());
    assert_eq!(
        (rest.waiting + rest.delayed + rest.active + rest.dead) as usize,
        300
    );
}

#[tokio::test]
async fn a_cancel_page_resumes_from_its_cursor_and_refuses_one_it_cannot_read() {
    let (_server, client) = start().await;
    let jobs: Vec<NewJob> = (0..400)
        .map(|n| NewJob::new("a", vec![]).with_id(format!("j{n:03}")))
        .collect();
    client.enqueue_bulk("q", &jobs).await.unwrap();
    let who = CancelBy::new("tester", "");
    let filter = CancelFilter::Handler("a".into());
    let first = client
        .cancel_matching("q", &filter, &who, None, 50)
        .await
        .unwrap();
    assert!(!first.cancelled.is_empty() && first.cancelled.len() < 400);
    let cursor = first.cursor.clone().expect("more to do");
    // Jobs enqueued between pages are looked at or not; those there all along are cancelled.
    let (mut total, mut cursor) = (first.cancelled.len(), Some(cursor));
    while let Some(at) = cursor {
        let page = client
            .cancel_matching("q", &filter, &who, Some(&at), 50)
            .await
            .unwrap();
        total += page.cancelled.len();
        cursor = page.cursor;
    }
    assert_eq!(total, 400);
    assert_eq!(client.counts("q").await.unwrap().waiting, 0);

    let err = client
        .cancel_matching("q", &filter, &who, Some("x:1"), 50)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cursor"), "{err}");
    let err = client
        .cancel_matching("q", &filter, &who, None, 0)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("1 to"), "{err}");
}

#[tokio::test]
async fn a_cancel_page_leaves_jobs_out_of_step_and_sets_of_another_type_as_they_are() {
    let (server, client) = start().await;
    client
        .enqueue_bulk(
            "q",
            &[
                NewJob::new("a", vec![]).with_id("plain"),
                NewJob::new("a", vec![])
                    .with_id("odd")
                    .with_delay(Duration::from_secs(600)),
                NewJob::new("a", vec![]).with_id("grouped").with_group("g9"),
            ],
        )
        .await
        .unwrap();
    let keys = QueueKeys::new("q").unwrap();
    let mut conn = server.connection().await;
    // `odd` sits in `delayed` but its hash says waiting in group g7; g9's waiting set is a
    // string (edited by hand) while g9 is in `groups`.
    let () = redis::cmd("HSET")
        .arg(keys.job("odd"))
        .arg("state")
        .arg("waiting")
        .arg("group")
        .arg("g7")
        .query_async(&mut conn)
        .await
        .unwrap();
    let g9 = keys.group_waiting("g9");
    let () = redis::cmd("DEL")
        .arg(&g9)
        .query_async(&mut conn)
        .await
        .unwrap();
    let () = redis::cmd("SET")
        .arg(&g9)
        .arg("by hand")
        .query_async(&mut conn)
        .await
        .unwrap();
    let (cancelled, _) = cancel_all(&client, &CancelFilter::Handler("a".into()), 10).await;
    assert_eq!(cancelled, BTreeSet::from(["plain".to_string()]));
    let odd = client.get("q", "odd").await.unwrap().unwrap();
    assert_eq!(odd.state, JobState::Waiting, "left for queue check");
    let still: String = redis::cmd("GET")
        .arg(&g9)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(still, "by hand");
}

#[tokio::test]
async fn cancelling_a_running_job_gives_its_group_slot_back() {
    let (_server, client) = start().await;
    let config = wasmq::queue::QueueConfig {
        group_concurrency: Some(1),
        ..wasmq::queue::QueueConfig::default()
    };
    client.set_config("q", &config).await.unwrap();
    client
        .enqueue_bulk(
            "q",
            &[
                NewJob::new("h", vec![]).with_id("first").with_group("g"),
                NewJob::new("h", vec![]).with_id("second").with_group("g"),
            ],
        )
        .await
        .unwrap();
    let first = fetch_one(&client, "q").await;
    assert_eq!(first.id, "first");
    // The group is at its limit of one running job.
    assert!(client.fetch("q", 1, LEASE, HOST).await.unwrap().is_empty());
    client.cancel("q", &["first".to_string()]).await.unwrap();
    let second = fetch_one(&client, "q").await;
    assert_eq!(second.id, "second");
}
