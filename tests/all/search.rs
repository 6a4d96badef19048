//! Job search through its surfaces: `wasmq jobs` (a real process) and
//! `GET /api/queues/{queue}/search` (a real `wasmq serve`), against a real Redis. The script's
//! own behaviour (every filter, the cursor, malformed jobs, the cost bound at 1,000,000 jobs) is
//! `queue::search`'s; here each surface passes every filter through, pages with the cursor it
//! prints, and refuses bad input with a clear message, writing nothing.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use wasmq::queue::{Client, NewJob};

use crate::support::api::{ApiServer, Http};
use crate::support::cli::{ok, wasmq};
use crate::support::redis::RedisServer;

const Q: &str = "orders";

/// 60 jobs: `order-00`..`order-59`, handler `bill` (even) or `ship` (odd), every third with
/// `needle` in its payload, every fifth in group `acme`, the last ten delayed by an hour.
/// Returns the ids of the jobs with `needle`.
async fn sixty_orders(client: &Client) -> BTreeSet<String> {
    let mut needles = BTreeSet::new();
    for n in 0..60 {
        let id = format!("order-{n:02}");
        let text = if n % 3 == 0 { "needle" } else { "hay" };
        if n % 3 == 0 {
            needles.insert(id.clone());
        }
        let handler = if n % 2 == 0 { "bill" } else { "ship" };
        let mut job =
            NewJob::new(handler, format!("{{\"n\":{n},\"note\":\"{text}\"}}")).with_id(&id);
        if n % 5 == 0 {
            job = job.with_group("acme");
        }
        if n >= 50 {
            job = job.with_delay(Duration::from_secs(3600));
        }
        client.enqueue(Q, &job).await.unwrap();
    }
    needles
}

/// The ids `wasmq jobs` printed, one job per line, the id first.
fn printed_ids(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The `--cursor` `wasmq jobs` printed on stderr for the next page, if any.
fn next_cursor(stderr: &str) -> Option<String> {
    let (_, rest) = stderr.split_once("next page: --cursor ")?;
    Some(rest.split_whitespace().next()?.to_string())
}

#[tokio::test]
async fn wasmq_jobs_finds_by_every_filter_and_pages_with_the_cursor_it_prints() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let needles = sixty_orders(&client).await;

    let run = |args: &[&str]| {
        let mut all = vec!["jobs", Q];
        all.extend_from_slice(args);
        wasmq(&redis, &all)
    };
    let ids = |args: &[&str]| printed_ids(&ok(&run(args)));
    let set = |ids: Vec<String>| ids.into_iter().collect::<BTreeSet<String>>();

    // One page holds them all at the defaults.
    assert_eq!(set(ids(&["--search", "needle"])), needles);
    let out = run(&["--search", "needle"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the search is over"),
        "{out:?}"
    );
    let line = ok(&run(&["--id-prefix", "order-03"]));
    assert!(
        line.starts_with("order-03  waiting  ship  -  enqueued "),
        "{line}"
    );
    assert!(line.contains("needle"), "{line}");

    let expect = |keep: &dyn Fn(usize) -> bool| -> BTreeSet<String> {
        (0..60)
            .filter(|n| keep(*n))
            .map(|n| format!("order-{n:02}"))
            .collect()
    };
    assert_eq!(set(ids(&["--handler", "bill"])), expect(&|n| n % 2 == 0));
    assert_eq!(set(ids(&["--group", "acme"])), expect(&|n| n % 5 == 0));
    assert_eq!(
        set(ids(&["--group", "acme", "--state", "waiting"])),
        expect(&|n| n % 5 == 0 && n < 50)
    );
    assert_eq!(set(ids(&["--state", "delayed"])), expect(&|n| n >= 50));
    assert_eq!(
        set(ids(&[
            "--state",
            "delayed",
            "--handler",
            "ship",
            "--search",
            "needle"
        ])),
        expect(&|n| n >= 50 && n % 2 == 1 && n % 3 == 0)
    );
    assert_eq!(set(ids(&["--since", "1h", "--limit", "100"])).len(), 60);
    assert!(ids(&["--until", "1h"]).is_empty());
    assert!(ids(&["--since", "2000-01-01T00:00:00Z", "--time", "finished"]).is_empty());
    assert_eq!(set(ids(&["--since", "0", "--limit", "100"])).len(), 60);

    // Small pages: the cursor each prints leads through all of them, each job once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut args = vec!["--search", "needle", "--limit", "3", "--scan", "7"];
        if let Some(cursor) = &cursor {
            args.extend(["--cursor", cursor.as_str()]);
        }
        let out = run(&args);
        seen.extend(printed_ids(&ok(&out)));
        pages += 1;
        cursor = next_cursor(&String::from_utf8_lossy(&out.stderr));
        if cursor.is_none() {
            break;
        }
        assert!(pages < 100, "the walk does not end");
    }
    assert!(pages >= 60 / 7, "{pages} pages");
    assert_eq!(seen.len(), needles.len());
    assert_eq!(set(seen), needles);

    // --json is the API's answer.
    let json: Value =
        serde_json::from_str(&ok(&run(&["--search", "needle", "--limit", "2", "--json"]))).unwrap();
    assert_eq!(json["jobs"].as_array().unwrap().len(), 2);
    // The ungrouped waiting jobs come first (order-00 is in group acme, walked after them).
    assert_eq!(json["jobs"][0]["id"], "order-03");
    assert!(json["cursor"].is_string());
    assert!(json["examined"].as_u64().unwrap() >= 2);

    // Bad input: a clear message, exit 1 or clap's 2, nothing written.
    let before = redis.snapshot().await;
    for (args, says) in [
        (&["--cursor", "garbage!"][..], "not one a search returned"),
        (&["--state", "finished"], "unknown job state"),
        (
            &["--since", "yesterday"],
            "not milliseconds since the epoch",
        ),
        (&["--scan", "0"], "--scan"),
        (&["--scan", "10001"], "--scan"),
        (&["--limit", "1001"], "--limit"),
        (&["--group", "a b"], "group"),
    ] {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    assert_eq!(redis.snapshot().await, before);
}

#[tokio::test]
async fn the_search_endpoint_pages_with_its_cursor_and_refuses_bad_input() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let needles = sixty_orders(&client).await;
    // A job key a producer wrote wrongly, found by a search that reads no field.
    let mut conn = redis.connection().await;
    let _: () = redis::pipe()
        .set(format!("wasmq:{{{Q}}}:job:broken"), "not a hash")
        .zadd(format!("wasmq:{{{Q}}}:waiting"), "broken", 1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let server = ApiServer::start(&redis, &[]);
    let api = Http::new(&server, None);

    let mut seen = Vec::new();
    let mut path = format!("/api/queues/{Q}/search?text=needle&limit=4&scan=9");
    let mut pages = 0;
    loop {
        let page = api.get(&path).await.expect(200);
        assert!(page["examined"].as_u64().unwrap() <= 9, "{page}");
        for job in page["jobs"].as_array().unwrap() {
            assert!(job["payload"].as_str().unwrap().contains("needle"));
            seen.push(job["id"].as_str().unwrap().to_string());
        }
        pages += 1;
        match page["cursor"].as_str() {
            Some(cursor) => {
                path = format!("/api/queues/{Q}/search?text=needle&limit=4&scan=9&cursor={cursor}")
            }
            None => break,
        }
        assert!(pages < 100);
    }
    assert_eq!(seen.len(), needles.len());
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), needles);

    let page = api
        .get(&format!(
            "/api/queues/{Q}/search?state=delayed&handler=bill&group=acme&time=enqueued&since=1h"
        ))
        .await
        .expect(200);
    let ids: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["order-50"]);
    assert_eq!(page["cursor"], Value::Null);

    let page = api
        .get(&format!("/api/queues/{Q}/search?id_prefix=b"))
        .await
        .expect(200);
    assert_eq!(page["jobs"], serde_json::json!([]));
    assert_eq!(page["malformed"][0]["id"], "broken");
    assert!(
        page["malformed"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("not a hash")
    );

    let before = redis.snapshot().await;
    for query in [
        "cursor=garbage!",
        "state=finished",
        "time=started",
        "since=yesterday",
        "scan=0",
        "scan=10001",
        "limit=0",
        "limit=1001",
        "group=a%20b",
        "frobnicate=1",
    ] {
        let answer = api.get(&format!("/api/queues/{Q}/search?{query}")).await;
        answer.error(400);
    }
    assert_eq!(redis.snapshot().await, before);
}
