//! Job search (`search.lua`, `Client::search`): each filter finds exactly its jobs, a walk in
//! small pages sees every job of a queue at rest once, a page resumes after a cursor whose job
//! left, malformed jobs never fail a page, and one page's Redis work is bounded whatever the
//! queue holds.
//!
//! Size of the bounded-cost test: `WASMQ_SEARCH_JOBS` jobs (default [`CI_JOBS`]). The full run
//! of issue #24: `WASMQ_SEARCH_JOBS=1000000 cargo test -p wasmq --test all queue::search:: --
//! --nocapture`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use wasmq::queue::{
    Client, Completion, Failure, JobSearch, JobState, NewJob, QueueError, SEARCH_LIMIT_DEFAULT,
    SEARCH_SCAN_DEFAULT, SEARCH_SCAN_MAX, SearchPage, TimeField, TimePoint,
};

use super::{HOST, LEASE, start};
use crate::support::redis::RedisServer;

/// Jobs in the bounded-cost test in CI; the 1M run is the same test with `WASMQ_SEARCH_JOBS`.
const CI_JOBS: usize = 20_000;
/// Jobs per pipeline while filling a queue.
const FILL_BATCH: usize = 10_000;

/// Every page of `search` from its start: the ids found, in order, and the pages.
async fn walk(client: &Client, queue: &str, search: &JobSearch) -> (Vec<String>, Vec<SearchPage>) {
    let mut search = search.clone();
    search.cursor = None;
    let mut ids = Vec::new();
    let mut pages = Vec::new();
    loop {
        let page = client.search(queue, &search).await.unwrap();
        assert!(page.examined <= u64::from(search.scan), "{page:?}");
        assert!(page.jobs.len() + page.malformed.len() <= search.limit as usize);
        ids.extend(page.jobs.iter().map(|job| job.id.clone()));
        let next = page.cursor.clone();
        pages.push(page);
        match next {
            Some(cursor) => search.cursor = Some(cursor),
            None => break,
        }
        assert!(pages.len() < 100_000, "the walk does not end");
    }
    (ids, pages)
}

async fn found(client: &Client, queue: &str, search: JobSearch) -> Vec<String> {
    walk(client, queue, &search).await.0
}

fn strings(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| id.to_string()).collect()
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// Queue `s`: one job of each state, and waiting jobs with and without groups.
async fn one_of_each(client: &Client) {
    let q = "s";
    let job = |id: &str, handler: &str, payload: &str| NewJob::new(handler, payload).with_id(id);
    // The jobs that leave waiting first, each fetched alone.
    client
        .enqueue(q, &job("done-1", "mail", "receipt for carol"))
        .await
        .unwrap();
    let leased = super::fetch_one(client, q).await;
    client
        .complete(q, &[Completion::new(&leased, b"ok".to_vec())])
        .await
        .unwrap();
    client
        .enqueue(q, &job("dead-1", "sms", "text 100% off"))
        .await
        .unwrap();
    let leased = super::fetch_one(client, q).await;
    client
        .fail(q, &[Failure::new(&leased, "trap", "boom").permanent()])
        .await
        .unwrap();
    client
        .enqueue(q, &job("run-1", "mail", "hello dave"))
        .await
        .unwrap();
    super::fetch_one(client, q).await;
    for new in [
        job("w-1", "mail", "hello abc"),
        job("w-2", "sms", "hello bob"),
        job("g-1", "mail", "order 42").with_group("t1"),
        job("g-2", "sms", "order 43").with_group("t2"),
        job("d-1", "mail", "later a.c")
            .with_group("t1")
            .with_delay(Duration::from_secs(3600)),
    ] {
        client.enqueue(q, &new).await.unwrap();
    }
}

#[tokio::test]
async fn each_filter_finds_exactly_its_jobs() {
    let (_server, client) = start().await;
    one_of_each(&client).await;
    let q = "s";
    let all = found(&client, q, JobSearch::default()).await;
    // The walk's order: waiting, each group's waiting set by name, delayed, active, retry,
    // completed, dead.
    assert_eq!(
        all,
        strings(&[
            "w-1", "w-2", "g-1", "g-2", "d-1", "run-1", "done-1", "dead-1"
        ])
    );
    let by_state = |state| JobSearch {
        state: Some(state),
        ..JobSearch::default()
    };
    for (state, ids) in [
        (JobState::Waiting, &["w-1", "w-2", "g-1", "g-2"][..]),
        (JobState::Delayed, &["d-1"]),
        (JobState::Active, &["run-1"]),
        (JobState::Retry, &[]),
        (JobState::Completed, &["done-1"]),
        (JobState::Dead, &["dead-1"]),
    ] {
        assert_eq!(
            found(&client, q, by_state(state)).await,
            strings(ids),
            "{state}"
        );
    }
    let active = client.search(q, &by_state(JobState::Active)).await.unwrap();
    assert!(active.jobs[0].lease_expires_at_ms.is_some());

    let cases = [
        (
            JobSearch {
                handler: Some("mail".into()),
                ..JobSearch::default()
            },
            &["w-1", "g-1", "d-1", "run-1", "done-1"][..],
        ),
        (
            JobSearch {
                group: Some("t1".into()),
                ..JobSearch::default()
            },
            &["g-1", "d-1"],
        ),
        (
            JobSearch {
                group: Some("t1".into()),
                state: Some(JobState::Waiting),
                ..JobSearch::default()
            },
            &["g-1"],
        ),
        (
            JobSearch {
                group: Some("nobody".into()),
                ..JobSearch::default()
            },
            &[],
        ),
        (
            JobSearch {
                id_prefix: Some("g-".into()),
                ..JobSearch::default()
            },
            &["g-1", "g-2"],
        ),
        (
            JobSearch {
                text: Some("hello".into()),
                ..JobSearch::default()
            },
            &["w-1", "w-2", "run-1"],
        ),
        // Plain text, not a Lua pattern: `a.c` is not "abc", `100%` is not an error.
        (
            JobSearch {
                text: Some("a.c".into()),
                ..JobSearch::default()
            },
            &["d-1"],
        ),
        (
            JobSearch {
                text: Some("100%".into()),
                ..JobSearch::default()
            },
            &["dead-1"],
        ),
        (
            JobSearch {
                text: Some("hello".into()),
                handler: Some("mail".into()),
                state: Some(JobState::Waiting),
                ..JobSearch::default()
            },
            &["w-1"],
        ),
        (
            JobSearch {
                since: Some(TimePoint::Ago(Duration::from_secs(3600))),
                ..JobSearch::default()
            },
            &[
                "w-1", "w-2", "g-1", "g-2", "d-1", "run-1", "done-1", "dead-1",
            ],
        ),
        (
            JobSearch {
                until: Some(TimePoint::Ago(Duration::from_secs(3600))),
                ..JobSearch::default()
            },
            &[],
        ),
        (
            JobSearch {
                time: TimeField::Finished,
                since: Some(TimePoint::At(0)),
                ..JobSearch::default()
            },
            &["done-1", "dead-1"],
        ),
    ];
    for (search, ids) in cases {
        assert_eq!(
            found(&client, q, search.clone()).await,
            strings(ids),
            "{search:?}"
        );
    }

    // A time range against the jobs' own `created_at`, at its edges (both ends inclusive).
    let mut created = BTreeMap::new();
    for id in &all {
        let job = client.get(q, id).await.unwrap().unwrap();
        created.insert(id.clone(), job.created_at_ms);
    }
    for &edge in created.values() {
        let since = JobSearch {
            since: Some(TimePoint::At(edge)),
            ..JobSearch::default()
        };
        let until = JobSearch {
            until: Some(TimePoint::At(edge)),
            ..JobSearch::default()
        };
        let expect_since: Vec<String> = created
            .iter()
            .filter(|(_, at)| **at >= edge)
            .map(|(id, _)| id.clone())
            .collect();
        let expect_until: Vec<String> = created
            .iter()
            .filter(|(_, at)| **at <= edge)
            .map(|(id, _)| id.clone())
            .collect();
        assert_eq!(sorted(found(&client, q, since).await), expect_since);
        assert_eq!(sorted(found(&client, q, until).await), expect_until);
    }
}

/// Queue `walk`: waiting jobs with and without groups, delayed, active, completed and dead
/// jobs, the completed and dead ones finished in one call each (so sharing a score). Returns
/// every id.
async fn a_queue_of_every_kind(client: &Client) -> BTreeSet<String> {
    let q = "walk";
    let mut all = BTreeSet::new();
    let mut add = |jobs: Vec<NewJob>| {
        for job in &jobs {
            all.insert(job.options.id.clone().unwrap());
        }
        jobs
    };
    let batch = |prefix: &str, n: usize| -> Vec<NewJob> {
        (0..n)
            .map(|i| {
                let text = if i % 10 == 3 { "needle" } else { "hay" };
                NewJob::new("h", format!("{prefix} {i} {text}")).with_id(format!("{prefix}-{i:03}"))
            })
            .collect()
    };
    for (prefix, n) in [("done", 100), ("dead", 20), ("run", 30)] {
        let jobs = add(batch(prefix, n));
        client.enqueue_bulk(q, &jobs).await.unwrap();
        let leased = client.fetch(q, n, LEASE, HOST).await.unwrap();
        assert_eq!(leased.len(), n);
        match prefix {
            "done" => {
                let done: Vec<Completion> = leased
                    .iter()
                    .map(|job| Completion::new(job, b"r".to_vec()))
                    .collect();
                client.complete(q, &done).await.unwrap();
            }
            "dead" => {
                let failed: Vec<Failure> = leased
                    .iter()
                    .map(|job| Failure::new(job, "trap", "boom").permanent())
                    .collect();
                client.fail(q, &failed).await.unwrap();
            }
            _ => {}
        }
    }
    let jobs = add(batch("w", 300));
    client.enqueue_bulk(q, &jobs).await.unwrap();
    for group in ["t1", "t2", "t3", "t4", "t5"] {
        let jobs: Vec<NewJob> = batch(&format!("g{group}"), 40)
            .into_iter()
            .map(|job| job.with_group(group))
            .collect();
        let jobs = add(jobs);
        client.enqueue_bulk(q, &jobs).await.unwrap();
    }
    let jobs: Vec<NewJob> = batch("later", 50)
        .into_iter()
        .map(|job| job.with_delay(Duration::from_secs(3600)))
        .collect();
    let jobs = add(jobs);
    client.enqueue_bulk(q, &jobs).await.unwrap();
    all
}

#[tokio::test]
async fn a_walk_in_small_pages_sees_every_job_of_a_queue_at_rest_once() {
    let (_server, client) = start().await;
    let all = a_queue_of_every_kind(&client).await;
    for (scan, limit) in [(7, 5), (1, 1), (SEARCH_SCAN_DEFAULT, SEARCH_LIMIT_DEFAULT)] {
        let search = JobSearch {
            scan,
            limit,
            ..JobSearch::default()
        };
        let (ids, pages) = walk(&client, "walk", &search).await;
        let unique: BTreeSet<String> = ids.iter().cloned().collect();
        assert_eq!(unique.len(), ids.len(), "a job seen twice (scan {scan})");
        assert_eq!(unique, all, "scan {scan}, limit {limit}");
        assert!(pages.iter().all(|page| page.malformed.is_empty()));
    }
    // A filter that matches one job in ten, over pages that mostly find nothing.
    let search = JobSearch {
        text: Some("needle".into()),
        scan: 13,
        limit: 4,
        ..JobSearch::default()
    };
    let (ids, _) = walk(&client, "walk", &search).await;
    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len());
    let mut expected_needles = BTreeSet::new();
    for id in &all {
        let job = client.get("walk", id).await.unwrap().unwrap();
        if job.payload.ends_with(b"needle") {
            expected_needles.insert(id.clone());
        }
    }
    assert!(!expected_needles.is_empty());
    assert_eq!(unique, expected_needles);
}

#[tokio::test]
async fn a_page_resumes_after_its_cursor_even_when_that_job_left() {
    let (server, client) = start().await;
    let all = a_queue_of_every_kind(&client).await;
    let q = "walk";
    // Completed jobs share one score: the cursor's job leaving makes the next page find its
    // place among the ties.
    for state in [JobState::Waiting, JobState::Completed, JobState::Dead] {
        let search = JobSearch {
            state: Some(state),
            scan: 6,
            limit: 6,
            ..JobSearch::default()
        };
        let (expected, _) = walk(&client, q, &search).await;
        let first = client.search(q, &search).await.unwrap();
        let last = first.jobs.last().unwrap().id.clone();
        // The job at the cursor, and the one before it, leave the queue.
        let mut conn = server.connection().await;
        for id in [&first.jobs[4].id, &last] {
            let set = if state == JobState::Waiting {
                "waiting".to_string()
            } else {
                state.as_str().to_string()
            };
            let _: () = redis::pipe()
                .zrem(format!("wasmq:{{{q}}}:{set}"), id)
                .del(format!("wasmq:{{{q}}}:job:{id}"))
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        let mut rest = Vec::new();
        let mut next = JobSearch {
            cursor: first.cursor.clone(),
            ..search.clone()
        };
        loop {
            let page = client.search(q, &next).await.unwrap();
            rest.extend(page.jobs.iter().map(|job| job.id.clone()));
            match page.cursor {
                Some(cursor) => next.cursor = Some(cursor),
                None => break,
            }
        }
        assert_eq!(rest, expected[6..].to_vec(), "{state}");
        assert!(all.is_superset(&rest.iter().cloned().collect()));
    }
}

#[tokio::test]
async fn malformed_jobs_are_reported_and_never_fail_a_page() {
    let (server, client) = start().await;
    let q = "bad";
    client
        .enqueue(q, &NewJob::new("h", "fine").with_id("good"))
        .await
        .unwrap();
    let mut conn = server.connection().await;
    let waiting = format!("wasmq:{{{q}}}:waiting");
    let job = |id: &str| format!("wasmq:{{{q}}}:job:{id}");
    let _: () = redis::pipe()
        .set(job("str"), "not a hash")
        .hset_multiple(
            job("odd"),
            &[
                ("id", "odd"),
                ("state", "waiting"),
                ("handler", "h"),
                ("priority", "x"),
            ],
        )
        .zadd(&waiting, "str", 1)
        .zadd(&waiting, "gone", 2)
        .zadd(&waiting, "odd", 3)
        .query_async(&mut conn)
        .await
        .unwrap();
    let before = server.snapshot().await;

    let page = client.search(q, &JobSearch::default()).await.unwrap();
    let ids: Vec<&str> = page.jobs.iter().map(|job| job.id.as_str()).collect();
    assert_eq!(ids, ["good"]);
    let malformed: Vec<&str> = page.malformed.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(malformed, ["str", "gone", "odd"]);
    assert!(page.malformed[2].reason.contains("priority"), "{page:?}");

    // A field filter reads the fields: the key that is not a hash and the missing one have
    // none, so they do not match; the job with a handler does, and is reported.
    let search = JobSearch {
        handler: Some("h".into()),
        ..JobSearch::default()
    };
    let page = client.search(q, &search).await.unwrap();
    let malformed: Vec<&str> = page.malformed.iter().map(|m| m.id.as_str()).collect();
    assert_eq!((page.jobs.len(), malformed), (1, vec!["odd"]));
    let search = JobSearch {
        text: Some("fine".into()),
        ..JobSearch::default()
    };
    let page = client.search(q, &search).await.unwrap();
    assert_eq!((page.jobs.len(), page.malformed.len()), (1, 0));
    assert_eq!(server.snapshot().await, before, "a search wrote");
}

#[tokio::test]
async fn bad_cursors_and_keys_of_another_type_are_refused_and_nothing_is_written() {
    let (server, client) = start().await;
    let q = "s";
    one_of_each(&client).await;
    let before = server.snapshot().await;
    let with_cursor = |cursor: &str| JobSearch {
        cursor: Some(cursor.to_string()),
        ..JobSearch::default()
    };
    use base64::Engine;
    let raw = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
    for cursor in [
        "!!".to_string(),
        raw("nostage 1 x"),
        raw("waiting notanumber x"),
        raw("waiting 1"),
        raw("waiting 1 x y"),
        raw("group notanumber g1"),
    ] {
        let err = client.search(q, &with_cursor(&cursor)).await.unwrap_err();
        assert!(
            matches!(err, QueueError::InvalidArgument(_)),
            "{cursor}: {err}"
        );
    }
    let mut conn = server.connection().await;
    let _: () = redis::cmd("SET")
        .arg("wasmq:{s2}:delayed")
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = client
        .search("s2", &JobSearch::default())
        .await
        .unwrap_err();
    assert_eq!(err.wrong_type_key(), Some("wasmq:{s2}:delayed"), "{err}");
    let _: () = redis::cmd("DEL")
        .arg("wasmq:{s2}:delayed")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(server.snapshot().await, before);
}

fn jobs_to_search() -> usize {
    match std::env::var("WASMQ_SEARCH_JOBS") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("WASMQ_SEARCH_JOBS must be a number of jobs, got {text}")),
        Err(_) => CI_JOBS,
    }
}

/// Fills queue `q` with `n` waiting jobs `job-<n>` fast: one real job enqueued as the template
/// of every hash, then pipelined `HSET` + `ZADD`, [`FILL_BATCH`] jobs a round trip. The jobs
/// whose numbers are in `needles` carry `needle` in their payload.
async fn fill(server: &RedisServer, client: &Client, q: &str, n: usize, needles: &[usize]) {
    client
        .enqueue(q, &NewJob::new("h", "template").with_id("template"))
        .await
        .unwrap();
    let mut conn = server.connection().await;
    let key = |suffix: &str| format!("wasmq:{{{q}}}:{suffix}");
    let template: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(key("job:template"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::pipe()
        .zrem(key("waiting"), "template")
        .del(key("job:template"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let base = 1000_u64 << 42;
    for start in (0..n).step_by(FILL_BATCH) {
        let mut pipe = redis::pipe();
        for i in start..(start + FILL_BATCH).min(n) {
            let id = format!("job-{i:07}");
            let text = if needles.contains(&i) {
                "needle"
            } else {
                "hay"
            };
            let mut fields = template.clone();
            fields.insert("id".into(), id.clone());
            fields.insert("seq".into(), (i + 1).to_string());
            fields.insert(
                "payload".into(),
                format!(
                    "{{\"order\":{i},\"note\":\"{text}\",\"pad\":\"{}\"}}",
                    "x".repeat(60)
                ),
            );
            let fields: Vec<(String, String)> = fields.into_iter().collect();
            pipe.hset_multiple(key(&format!("job:{id}")), &fields)
                .ignore()
                .zadd(key("waiting"), &id, base + i as u64 + 1)
                .ignore();
        }
        let _: () = pipe.query_async(&mut conn).await.unwrap();
    }
}

#[tokio::test]
async fn one_page_of_a_payload_search_is_bounded_whatever_the_queue_holds() {
    let n = jobs_to_search();
    assert!(
        n >= 2 * SEARCH_SCAN_MAX as usize,
        "WASMQ_SEARCH_JOBS must be at least {}",
        2 * SEARCH_SCAN_MAX
    );
    let (server, client) = start().await;
    let q = "big";
    let near = 10;
    let deep = n - 5;
    let started = Instant::now();
    fill(&server, &client, q, n, &[near, deep]).await;
    eprintln!("filled {n} jobs in {:?}", started.elapsed());
    assert_eq!(client.counts(q).await.unwrap().waiting, n as u64);

    let search = JobSearch {
        text: Some("needle".into()),
        ..JobSearch::default()
    };
    // Loads the function library, so what is counted below is the page alone.
    client.search("warm-up", &search).await.unwrap();

    // The documented bound (docs/protocol.md, "search.lua"): at most
    // 2·scan + limit + 40 commands, the FCALL included.
    let bound = |scan: u32, limit: u32| u64::from(2 * scan + limit + 40);
    let mut cursor = None;
    for page_number in 0..2 {
        let search = JobSearch {
            cursor: cursor.clone(),
            ..search.clone()
        };
        let before = server.command_calls().await;
        let started = Instant::now();
        let page = client.search(q, &search).await.unwrap();
        let took = started.elapsed();
        let after = server.command_calls().await;
        let commands: u64 = after
            .iter()
            .filter(|(name, _)| name.as_str() != "info")
            .map(|(name, calls)| calls - before.get(name).copied().unwrap_or(0))
            .sum();
        eprintln!(
            "page {page_number} of a payload search over {n} jobs: {commands} commands, {} examined, {} found, {took:?}",
            page.examined,
            page.jobs.len()
        );
        assert_eq!(page.examined, u64::from(SEARCH_SCAN_DEFAULT));
        let expect: Vec<String> = if page_number == 0 {
            vec![format!("job-{near:07}")]
        } else {
            vec![]
        };
        let ids: Vec<String> = page.jobs.iter().map(|job| job.id.clone()).collect();
        assert_eq!(ids, expect);
        assert!(
            commands <= bound(search.scan, search.limit),
            "{commands} commands"
        );
        // One set, so: the FCALL, a HMGET per job examined, a HGETALL per match, the set's
        // ZRANGE, and resuming from the cursor (ZSCORE, ZRANK).
        assert!(
            commands <= page.examined + page.jobs.len() as u64 + 4,
            "{commands} commands: {after:?} against {before:?}"
        );
        cursor = page.cursor;
        assert!(cursor.is_some());
    }

    // The whole walk, in pages of the largest scan, finds both needles, once each.
    let started = Instant::now();
    let search = JobSearch {
        scan: SEARCH_SCAN_MAX,
        ..search
    };
    let (ids, pages) = walk(&client, q, &search).await;
    eprintln!(
        "the whole walk: {} pages in {:?}",
        pages.len(),
        started.elapsed()
    );
    assert_eq!(
        ids,
        vec![format!("job-{near:07}"), format!("job-{deep:07}")]
    );
    assert_eq!(
        pages.iter().map(|page| page.examined).sum::<u64>(),
        n as u64
    );
}

#[tokio::test]
async fn thousands_of_groups_are_walked_a_batch_at_a_time_each_job_once() {
    let (server, client) = start().await;
    let q = "tenants";
    // 3,000 groups of one or two waiting jobs, far past the 128 that Redis keeps `groups` in a
    // listpack for, so `ZSCAN` reads it in batches.
    let mut all = BTreeSet::new();
    let jobs: Vec<NewJob> = (0..4500)
        .map(|n| {
            let id = format!("t-{n:05}");
            all.insert(id.clone());
            NewJob::new("h", "x")
                .with_id(id)
                .with_group(format!("g{:04}", n % 3000))
        })
        .collect();
    for chunk in jobs.chunks(wasmq::queue::MAX_BULK) {
        client.enqueue_bulk(q, chunk).await.unwrap();
    }
    for (scan, limit, state) in [
        (5, 3, None),
        (101, 7, Some(JobState::Waiting)),
        (SEARCH_SCAN_MAX, 1000, None),
    ] {
        let search = JobSearch {
            scan,
            limit,
            state,
            ..JobSearch::default()
        };
        let (ids, _) = walk(&client, q, &search).await;
        let unique: BTreeSet<String> = ids.iter().cloned().collect();
        assert_eq!(unique.len(), ids.len(), "a job seen twice (scan {scan})");
        assert_eq!(unique, all, "scan {scan}, limit {limit}");
    }
    // A page costs what its scan allows, not what the number of groups does.
    let search = JobSearch {
        scan: 50,
        text: Some("y".into()),
        ..JobSearch::default()
    };
    client.search(q, &search).await.unwrap();
    let mut cursor = None;
    for _ in 0..3 {
        let before = server.command_calls().await;
        let page = client
            .search(
                q,
                &JobSearch {
                    cursor: cursor.clone(),
                    ..search.clone()
                },
            )
            .await
            .unwrap();
        let after = server.command_calls().await;
        let commands: u64 = after
            .iter()
            .filter(|(name, _)| name.as_str() != "info")
            .map(|(name, calls)| calls - before.get(name).copied().unwrap_or(0))
            .sum();
        assert!(commands <= 2 * 50 + 50 + 40, "{commands} commands");
        assert!(page.examined <= 50);
        cursor = page.cursor;
        assert!(cursor.is_some());
    }
}
