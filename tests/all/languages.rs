//! The same handlers in every guest language, through the real runtime.
//!
//! `guest-examples/{rust,python,javascript,c}` each hold `echo`, `transform`, `flaky` and
//! `notify` (outbound HTTP with config and a secret), built by that language's own toolchain (`guest-examples/<lang>/build.sh`). Every case below runs
//! against all four and expects the same observable result from each: the same outcome and
//! result bytes, the same log lines, the same progress. The canonical formats are in
//! `guest-examples/README.md`. The runtime is `RuntimeConfig::default()`, so these tests also
//! show that the default pool admits the large Python and JavaScript components.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use wasmq::capability::{Capabilities, Grants, HostResources, SecretSource};
use wasmq::{Handler, JobInput, JobLimits, LogLine, LogSource, Outcome, RunReport, Runtime};

use crate::support::guests;
use crate::support::http_server::TestServer;
use crate::support::jobs::enqueue_ids;

const MIB: u64 = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Lang {
    Rust,
    Python,
    JavaScript,
    C,
}

const LANGS: [Lang; 4] = [Lang::Rust, Lang::Python, Lang::JavaScript, Lang::C];

impl Lang {
    fn component(self, name: &str) -> PathBuf {
        match self {
            Lang::Rust => guests::rust(name),
            Lang::Python => guests::python(name),
            Lang::JavaScript => guests::javascript(name),
            Lang::C => guests::c(name),
        }
    }
}

/// One runtime for this suite, with the defaults a host starts with.
fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| Runtime::new(wasmq::RuntimeConfig::default()).unwrap())
}

/// The handler `name` in `lang`, compiled once per test run: Python and JavaScript components
/// take seconds each to compile, and tests ask for the same ones concurrently.
fn handler(lang: Lang, name: &'static str) -> Handler {
    type Cache = Mutex<HashMap<(Lang, &'static str), Arc<OnceLock<Handler>>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let slot = CACHE
        .get_or_init(Cache::default)
        .lock()
        .unwrap()
        .entry((lang, name))
        .or_default()
        .clone();
    slot.get_or_init(|| {
        let path = lang.component(name);
        runtime()
            .load_file(&path)
            .unwrap_or_else(|e| panic!("{lang:?} {name} ({}) does not load: {e}", path.display()))
    })
    .clone()
}

fn job(payload: &[u8], attempt: u32) -> JobInput {
    JobInput {
        id: "lang-1".into(),
        queue: "default".into(),
        handler: "conformance".into(),
        payload: payload.to_vec(),
        attempt,
        max_attempts: 3,
    }
}

fn limits(timeout: Duration, memory: u64) -> JobLimits {
    JobLimits {
        timeout,
        memory,
        fuel: None,
    }
}

/// Generous limits: the cases that use them are about results, not limits.
fn roomy() -> JobLimits {
    limits(Duration::from_secs(60), 1024 * MIB)
}

async fn run(lang: Lang, name: &'static str, payload: &[u8], attempt: u32) -> RunReport {
    run_with(lang, name, payload, attempt, &roomy()).await
}

async fn run_with(
    lang: Lang,
    name: &'static str,
    payload: &[u8],
    attempt: u32,
    limits: &JobLimits,
) -> RunReport {
    let handler = handler(lang, name);
    runtime().run(&handler, job(payload, attempt), limits).await
}

fn info(message: &str) -> LogLine {
    LogLine {
        source: LogSource::Info,
        message: message.to_string(),
    }
}

/// What every language must produce for one case.
#[derive(Debug)]
enum Expect {
    Ok(&'static str),
    /// `Fail` with exactly this message.
    Fail(&'static str),
    /// `Fail` with a message starting with this (parsers word their errors differently).
    FailStartingWith(&'static str),
}

impl Expect {
    fn matches(&self, outcome: &Outcome) -> bool {
        match (self, outcome) {
            (Expect::Ok(want), Outcome::Ok(got)) => want.as_bytes() == got.as_slice(),
            (Expect::Fail(want), Outcome::Fail(got)) => want == got,
            (Expect::FailStartingWith(want), Outcome::Fail(got)) => got.starts_with(want),
            _ => false,
        }
    }
}

/// Readable outcome for failure messages: result bytes as text where they are text.
fn show(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ok(bytes) => format!("Ok({:?})", String::from_utf8_lossy(bytes)),
        other => format!("{other:?}"),
    }
}

/// Asserts that `problems` is empty, listing all of them (every language, every case) at once.
fn assert_none(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{} divergence(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

#[tokio::test]
async fn echo_returns_the_payload_logs_and_reports_progress_in_every_language() {
    let binary: Vec<u8> = (0..=255).collect();
    let payloads: [&[u8]; 4] = [b"hello", b"", br#"{"numbers":[1,2,3]}"#, &binary];
    let mut problems = Vec::new();
    for lang in LANGS {
        for payload in payloads {
            let report = run(lang, "echo", payload, 1).await;
            let want_logs = vec![info(&format!("echo {} bytes", payload.len()))];
            if report.outcome != Outcome::Ok(payload.to_vec()) {
                problems.push(format!(
                    "{lang:?} echo of {} bytes: {}",
                    payload.len(),
                    show(&report.outcome)
                ));
            }
            if report.logs != want_logs || report.progress != Some(100) {
                problems.push(format!(
                    "{lang:?} echo of {} bytes: logs {:?}, progress {:?}",
                    payload.len(),
                    report.logs,
                    report.progress
                ));
            }
        }
    }
    assert_none(problems);
}

const NOT_INTEGERS: &str = r#"invalid input: "numbers" must be an array of integers"#;

#[tokio::test]
async fn transform_gives_byte_identical_results_in_every_language() {
    use Expect::{Fail, FailStartingWith as FailWith, Ok};
    let cases: &[(&[u8], Expect)] = &[
        (br#"{"numbers":[1,2,3]}"#, Ok(r#"{"count":3,"sum":6,"max":3}"#)),
        (br#"{"numbers":[]}"#, Ok(r#"{"count":0,"sum":0,"max":null}"#)),
        (
            b" \n{ \"numbers\" : [ -5 , 0 , -0 , 12 ] ,\t\"extra\": {\"a\": [true, null, \"\\u00e9\"]} }\r\n",
            Ok(r#"{"count":4,"sum":7,"max":12}"#),
        ),
        (br#"{"numbers":[-3,-1,-2]}"#, Ok(r#"{"count":3,"sum":-6,"max":-1}"#)),
        // Integral numbers count however they are written: JavaScript cannot tell 1.0 from 1.
        (br#"{"numbers":[1.0,2e1,-3E0,5e-0]}"#, Ok(r#"{"count":4,"sum":23,"max":20}"#)),
        (
            br#"{"numbers":[9007199254740991,-9007199254740991]}"#,
            Ok(r#"{"count":2,"sum":0,"max":9007199254740991}"#),
        ),
        // Duplicate keys: the last one wins, in every parser.
        (br#"{"numbers":[1],"numbers":[4,5]}"#, Ok(r#"{"count":2,"sum":9,"max":5}"#)),
        (br#"{"numb\u0065rs":[7]}"#, Ok(r#"{"count":1,"sum":7,"max":7}"#)),
        (br#"{"numbers":[1.5]}"#, Fail(NOT_INTEGERS)),
        (br#"{"numbers":[9007199254740992]}"#, Fail(NOT_INTEGERS)),
        (br#"{"numbers":[9007199254740991,1]}"#, Fail("invalid input: sum out of range")),
        (br#"{"numbers":"1,2"}"#, Fail(NOT_INTEGERS)),
        (br#"{"numbers":[true]}"#, Fail(NOT_INTEGERS)),
        (br#"{"numbers":["1"]}"#, Fail(NOT_INTEGERS)),
        (br#"{"numbers":[null]}"#, Fail(NOT_INTEGERS)),
        (br#"{"numbers":[[1]]}"#, Fail(NOT_INTEGERS)),
        (br#"{"Numbers":[1]}"#, Fail(NOT_INTEGERS)),
        (br#"[1,2]"#, Fail(NOT_INTEGERS)),
        (b"{}", Fail(NOT_INTEGERS)),
        (b"null", Fail(NOT_INTEGERS)),
        (b"42", Fail(NOT_INTEGERS)),
        (b"not json", FailWith("invalid json: ")),
        (b"", FailWith("invalid json: ")),
        (b"   ", FailWith("invalid json: ")),
        (br#"{"numbers":[1,2,}"#, FailWith("invalid json: ")),
        (br#"{"numbers":[1,2]"#, FailWith("invalid json: ")),
        (br#"{"numbers":[1,2]} x"#, FailWith("invalid json: ")),
        (br#"{"numbers":[1,2]}{}"#, FailWith("invalid json: ")),
        (br#"{"numbers":[01]}"#, FailWith("invalid json: ")),
        (br#"{"numbers":[1.]}"#, FailWith("invalid json: ")),
        (br#"{"numbers":[+1]}"#, FailWith("invalid json: ")),
        (br#"{"numbers":[NaN]}"#, FailWith("invalid json: ")),
        (br#"{"numbers":[Infinity]}"#, FailWith("invalid json: ")),
        (br#"{'numbers':[1]}"#, FailWith("invalid json: ")),
        (br#"{numbers:[1]}"#, FailWith("invalid json: ")),
        (b"{\"numbers\":[1],\"s\":\"a\tb\"}", FailWith("invalid json: ")),
        (br#"{"numbers":[1],"s":"\x"}"#, FailWith("invalid json: ")),
        (b"{\"numbers\":[1],\"s\":\"\xff\"}", FailWith("invalid json: ")),
        (b"\xef\xbb\xbf{\"numbers\":[1]}", FailWith("invalid json: ")),
    ];
    let mut problems = Vec::new();
    for lang in LANGS {
        for (payload, expect) in cases {
            let report = run(lang, "transform", payload, 1).await;
            let payload = String::from_utf8_lossy(payload);
            if !expect.matches(&report.outcome) {
                problems.push(format!(
                    "{lang:?} transform {payload:?}: {} (want {expect:?})",
                    show(&report.outcome)
                ));
                continue;
            }
            if let Expect::Ok(_) = expect {
                // Every successful transform logs its count once and ends at 100%.
                let count = report.logs.len();
                let logged = report.logs.first().map(|l| (l.source, l.message.as_str()));
                let ok = count == 1
                    && matches!(logged, Some((LogSource::Info, m)) if m.starts_with("transform "))
                    && report.progress == Some(100);
                if !ok {
                    problems.push(format!(
                        "{lang:?} transform {payload:?}: logs {:?}, progress {:?}",
                        report.logs, report.progress
                    ));
                }
            }
        }
    }
    assert_none(problems);
}

#[tokio::test]
async fn flaky_asks_for_a_retry_on_attempt_1_and_succeeds_on_attempt_2_in_every_language() {
    let mut problems = Vec::new();
    for lang in LANGS {
        let first = run(lang, "flaky", b"{}", 1).await;
        let want = Outcome::Retry("attempt 1 fails on purpose; retry me".into());
        if first.outcome != want
            || first.logs != vec![info("flaky attempt 1 of 3")]
            || first.progress != Some(0)
        {
            problems.push(format!(
                "{lang:?} flaky attempt 1: {}, logs {:?}, progress {:?}",
                show(&first.outcome),
                first.logs,
                first.progress
            ));
        }
        let second = run(lang, "flaky", b"{}", 2).await;
        if second.outcome != Outcome::Ok(br#"{"attempt":2}"#.to_vec())
            || second.logs != vec![info("flaky attempt 2 of 3")]
            || second.progress != Some(100)
        {
            problems.push(format!(
                "{lang:?} flaky attempt 2: {}, logs {:?}, progress {:?}",
                show(&second.outcome),
                second.logs,
                second.progress
            ));
        }
    }
    assert_none(problems);
}

#[tokio::test]
async fn flaky_fails_at_once_when_the_payload_asks_in_every_language() {
    let mut problems = Vec::new();
    for lang in LANGS {
        for attempt in [1, 2] {
            let report = run(lang, "flaky", br#"{"fail":true}"#, attempt).await;
            let want = Outcome::Fail("failed on purpose: the payload asks to fail".into());
            let want_logs = vec![
                info(&format!("flaky attempt {attempt} of 3")),
                LogLine {
                    source: LogSource::Error,
                    message: "the payload asks to fail".into(),
                },
            ];
            if report.outcome != want || report.logs != want_logs {
                problems.push(format!(
                    "{lang:?} flaky {{\"fail\":true}} attempt {attempt}: {}, logs {:?}",
                    show(&report.outcome),
                    report.logs
                ));
            }
        }
        // Only `true` asks: anything else is an ordinary payload.
        for payload in [
            &br#"{"fail":false}"#[..],
            br#"{"fail":"true"}"#,
            b"fail",
            b"[true]",
        ] {
            let report = run(lang, "flaky", payload, 2).await;
            if report.outcome != Outcome::Ok(br#"{"attempt":2}"#.to_vec()) {
                problems.push(format!(
                    "{lang:?} flaky {:?} attempt 2: {}",
                    String::from_utf8_lossy(payload),
                    show(&report.outcome)
                ));
            }
        }
    }
    assert_none(problems);
}

/// `{"numbers":[0,1,...,n-1]}`.
fn numbers_payload(n: u64) -> Vec<u8> {
    let list: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    format!(r#"{{"numbers":[{}]}}"#, list.join(",")).into_bytes()
}

#[tokio::test]
async fn memory_cap_is_enforced_at_instantiation_and_during_the_call_in_every_language() {
    const N: u64 = 500_000;
    let big = numbers_payload(N);
    let big_result = format!(
        r#"{{"count":{N},"sum":{},"max":{}}}"#,
        N * (N - 1) / 2,
        N - 1
    );
    let mut problems = Vec::new();
    for lang in LANGS {
        // What a fresh instance holds once `handle` ran on a small payload.
        let small = run(lang, "transform", br#"{"numbers":[1]}"#, 1).await;
        let needed = small.peak_memory;
        if !matches!(small.outcome, Outcome::Ok(_)) || needed == 0 {
            problems.push(format!(
                "{lang:?}: small transform {} with peak memory {needed}",
                show(&small.outcome)
            ));
            continue;
        }
        let timeout = Duration::from_secs(60);
        let cases = [
            // Half of what it needs: stopped, at instantiation or soon after.
            (needed / 2, "half its footprint", false),
            // What it needs, plus the payload's room: fits.
            (needed + 4 * MIB, "its footprint + 4 MiB", true),
        ];
        for (cap, what, fits) in cases {
            let report = run_with(
                lang,
                "transform",
                br#"{"numbers":[1]}"#,
                1,
                &limits(timeout, cap),
            )
            .await;
            let ok = matches!(report.outcome, Outcome::Ok(_));
            if ok != fits || (!fits && report.outcome != Outcome::MemoryLimit) {
                problems.push(format!(
                    "{lang:?} small transform under {what} ({cap} bytes, peak without cap \
                     {needed}): {}",
                    show(&report.outcome)
                ));
            }
        }
        // Half a million numbers outgrow the small footprint + 4 MiB in every language (the
        // payload alone is 3.4 MB, and each language copies it at least once) and fit in 1 GiB.
        let capped = run_with(
            lang,
            "transform",
            &big,
            1,
            &limits(timeout, needed + 4 * MIB),
        )
        .await;
        if capped.outcome != Outcome::MemoryLimit {
            problems.push(format!(
                "{lang:?} transform of {N} numbers under {} bytes: {} (peak {})",
                needed + 4 * MIB,
                show(&capped.outcome),
                capped.peak_memory
            ));
        }
        let roomy = run_with(lang, "transform", &big, 1, &limits(timeout, 1024 * MIB)).await;
        if roomy.outcome != Outcome::Ok(big_result.clone().into_bytes()) {
            problems.push(format!(
                "{lang:?} transform of {N} numbers under 1 GiB: {}",
                show(&roomy.outcome)
            ));
        }
        eprintln!(
            "{lang:?}: small transform peak {needed} bytes; {N} numbers peak {} bytes in {:?}",
            roomy.peak_memory, roomy.duration
        );
    }
    assert_none(problems);
}

#[tokio::test]
async fn deadline_stops_a_spinning_handler_in_every_language() {
    let timeout = Duration::from_millis(300);
    let mut problems = Vec::new();
    for lang in LANGS {
        // Compile before the clock starts.
        handler(lang, "transform");
        let started = Instant::now();
        let report = run_with(
            lang,
            "transform",
            br#"{"spin":true}"#,
            1,
            &limits(timeout, 1024 * MIB),
        )
        .await;
        let took = started.elapsed();
        let spun = LogLine {
            source: LogSource::Warn,
            message: "spinning until the deadline".into(),
        };
        // The log written before the loop survives the timeout.
        if report.outcome != Outcome::Timeout || report.logs != vec![spun] {
            problems.push(format!(
                "{lang:?} spin: {}, logs {:?}",
                show(&report.outcome),
                report.logs
            ));
        }
        // Stopped within a few epoch ticks of the deadline, not whenever the loop ends.
        if took > timeout + Duration::from_secs(2) {
            problems.push(format!("{lang:?} spin: stopped after {took:?}"));
        }
    }
    assert_none(problems);
}

/// `notify` in every language, against a loopback server: granted, it POSTs the job as JSON
/// with the secret as a bearer token and returns the answer's body; the same component with
/// the same config and secret but no outbound grant is denied and the server sees nothing; a
/// 5xx answer is `retry`, a 4xx `fail`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_posts_the_job_with_the_secret_only_where_granted_in_every_language() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = "tok-5b1e7d";
    std::fs::write(dir.path().join("NOTIFY_TOKEN"), format!("{token}\n")).unwrap();
    let secrets = SecretSource {
        dir: Some(dir.path().to_path_buf()),
    };
    let with = |lang: Lang, path: &str, allow: bool| {
        let grants = Grants {
            allow_outbound: if allow { vec![server.origin()] } else { vec![] },
            config: [("url".to_string(), server.url(path))].into(),
            secrets: vec!["NOTIFY_TOKEN".into()],
            ..Grants::default()
        };
        let caps = Capabilities::resolve(
            "notify",
            &grants,
            &HostResources::with_secrets(secrets.clone()),
        )
        .unwrap();
        assert!(caps.missing_secrets().is_empty(), "{caps:?}");
        handler(lang, "notify").with_capabilities(Arc::new(caps))
    };
    let call = |handler: Handler, payload: Vec<u8>| async move {
        runtime().run(&handler, job(&payload, 1), &roomy()).await
    };
    let fails_with = |outcome: &Outcome, prefix: &str| matches!(outcome, Outcome::Fail(m) if m.starts_with(prefix));
    let retries_with = |outcome: &Outcome, prefix: &str| matches!(outcome, Outcome::Retry(m) if m.starts_with(prefix));

    let mut problems = Vec::new();
    for lang in LANGS {
        let payload = serde_json::json!({ "lang": format!("{lang:?}"), "n": [1, 2.5, null] });
        let bytes = payload.to_string().into_bytes();

        // Granted: one POST with the JSON body and the token; the answer's body is the result.
        let before = server.seen().len();
        let report = call(with(lang, "/ok", true), bytes.clone()).await;
        if report.outcome != Outcome::Ok(b"hello".to_vec()) {
            problems.push(format!(
                "{lang:?} granted: {} (logs {:?})",
                show(&report.outcome),
                report.logs
            ));
        }
        let seen = server.seen();
        match &seen[before..] {
            [request] => {
                let header = |name: &str| {
                    request
                        .headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string()
                };
                let body: Option<serde_json::Value> = serde_json::from_slice(&request.body).ok();
                let want = serde_json::json!({ "job": "lang-1", "payload": payload });
                if request.method != "POST"
                    || header("authorization") != format!("Bearer {token}")
                    || !header("content-type").starts_with("application/json")
                    || body.as_ref() != Some(&want)
                {
                    problems.push(format!(
                        "{lang:?} granted: the server saw {} {} with authorization {:?}, \
                         content-type {:?}, body {:?}",
                        request.method,
                        request.path,
                        header("authorization"),
                        header("content-type"),
                        String::from_utf8_lossy(&request.body)
                    ));
                }
            }
            other => problems.push(format!(
                "{lang:?} granted: the server saw {} requests",
                other.len()
            )),
        }

        // Not granted (same config and secret): denied in the guest, nothing sent. A denial
        // fails the job, except in JavaScript: fetch() reports every network failure as the
        // same TypeError, without the wasi:http error code, so notify cannot tell a denial
        // from a refused connection and retries (guest-examples/README.md).
        let before = server.seen().len();
        let report = call(with(lang, "/ok", false), bytes.clone()).await;
        let denied = if lang == Lang::JavaScript {
            retries_with(&report.outcome, "request failed")
        } else {
            fails_with(&report.outcome, "request failed")
        };
        if !denied {
            problems.push(format!("{lang:?} not granted: {}", show(&report.outcome)));
        }
        if server.seen().len() != before {
            problems.push(format!("{lang:?} not granted: the server saw a request"));
        }

        // 5xx: retry; 4xx: fail.
        let report = call(with(lang, "/status/500", true), bytes.clone()).await;
        if !retries_with(&report.outcome, "HTTP 500") {
            problems.push(format!("{lang:?} on a 500: {}", show(&report.outcome)));
        }
        let report = call(with(lang, "/status/400", true), bytes.clone()).await;
        if !fails_with(&report.outcome, "HTTP 400") {
            problems.push(format!("{lang:?} on a 400: {}", show(&report.outcome)));
        }
    }
    let statuses: Vec<String> = server.seen().iter().map(|s| s.path.clone()).collect();
    let want: Vec<String> = LANGS
        .iter()
        .flat_map(|_| ["/ok", "/status/500", "/status/400"])
        .map(String::from)
        .collect();
    if statuses != want {
        problems.push(format!("the server saw {statuses:?}, want {want:?}"));
    }
    assert_none(problems);
}

/// The same handlers through a real `wasmq run` host and a real Redis: one queue per language,
/// results recorded, flaky retried then completed on attempt 2, a permanent failure
/// dead-lettered, and the guest's error line in the host's log tagged with the job id.
#[tokio::test]
async fn every_language_runs_through_the_host_and_redis_alike() {
    use crate::support::eventually;
    use crate::support::host::HostProcess;
    use crate::support::redis::RedisServer;
    use wasmq::queue::{Backoff, JobState, NewJob};

    let name = |lang: Lang| format!("{lang:?}").to_lowercase();
    let redis = RedisServer::start();
    let client = redis.client().await;
    let mut toml = String::from("concurrency = 8\n");
    for lang in LANGS {
        for handler in ["echo", "transform", "flaky"] {
            toml += &format!(
                "[handlers.{}-{handler}]\npath = {:?}\n",
                name(lang),
                lang.component(handler)
            );
        }
    }

    let mut jobs = HashMap::new();
    for lang in LANGS {
        let q = name(lang);
        let h = |handler: &str| format!("{q}-{handler}");
        let no_wait = Backoff::fixed(Duration::ZERO);
        let batch = [
            NewJob::new(h("echo"), b"hello".to_vec()),
            NewJob::new(h("transform"), br#"{"numbers":[1,2,3]}"#.to_vec()),
            NewJob::new(h("flaky"), b"{}".to_vec()).with_backoff(no_wait),
            NewJob::new(h("flaky"), br#"{"fail":true}"#.to_vec()),
        ];
        let ids = enqueue_ids(&client, &q, &batch).await;
        jobs.insert(lang, ids);
    }
    let queues: Vec<String> = LANGS.iter().map(|&l| name(l)).collect();
    let host = HostProcess::builder(&redis.url())
        .config(&toml)
        .args(["--queues", &queues.join(",")])
        .start();
    for q in &queues {
        // Python and JavaScript components take seconds to compile at host start.
        eventually(
            &format!("queue {q} done"),
            Duration::from_secs(240),
            || async {
                let c = client.counts(q).await.ok()?;
                (c.completed == 3 && c.dead == 1).then_some(())
            },
        )
        .await;
    }

    let mut transform_results = Vec::new();
    for lang in LANGS {
        let q = name(lang);
        let ids = &jobs[&lang];
        let get = |i: usize| {
            let client = client.clone();
            let (q, id) = (q.clone(), ids[i].clone());
            async move { client.get(&q, &id).await.unwrap().unwrap() }
        };
        assert_eq!(
            get(0).await.result.as_deref(),
            Some(&b"hello"[..]),
            "{lang:?} echo"
        );
        transform_results.push(get(1).await.result);
        let flaky = get(2).await;
        let outcomes: Vec<_> = flaky.history.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(outcomes, ["retry", "ok"], "{lang:?} flaky");
        assert_eq!(flaky.result.as_deref(), Some(&br#"{"attempt":2}"#[..]));
        let failed = get(3).await;
        assert_eq!(failed.state, JobState::Dead, "{lang:?} flaky fail");
        assert_eq!(failed.history.len(), 1);
        assert_eq!(failed.history[0].outcome, "fail");
        // The guest's error-level line reached the host's log, tagged with its job id.
        let log = host.log_text();
        assert!(
            log.lines().any(|l| l.contains("the payload asks to fail")
                && l.contains(&format!("job_id=\"{}\"", failed.id))),
            "{lang:?}: no guest log line with job_id {} in:\n{log}",
            failed.id
        );
    }
    assert!(
        transform_results.windows(2).all(|w| w[0] == w[1]) && transform_results[0].is_some(),
        "transform results differ: {transform_results:?}"
    );
}

/// A pool sized for N instances holds N instances of the largest components at once: a job
/// never fails for want of a pool slot (a Python component makes 14 core instances per job;
/// the pool once held only 4 per instance and failed such jobs as traps).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_pool_of_python_instances_runs_at_once() {
    let rt = Runtime::new(wasmq::RuntimeConfig {
        max_instances: 4,
        ..wasmq::RuntimeConfig::default()
    })
    .unwrap();
    let handler = rt.load_file(&Lang::Python.component("echo")).unwrap();
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let (rt, handler) = (rt.clone(), handler.clone());
            tokio::spawn(async move {
                // Started together on four threads, so their instances overlap.
                rt.run(&handler, job(format!("{i}").as_bytes(), 1), &roomy())
                    .await
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let report = task.await.unwrap();
        assert_eq!(report.outcome, Outcome::Ok(format!("{i}").into_bytes()));
    }
}
