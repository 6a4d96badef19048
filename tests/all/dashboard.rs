//! The web dashboard in a real browser: a real `wasmq run --http` host (real components, a
//! real Redis) with jobs in every state, and `tests/browser/dashboard.test.mjs` driving Debian's
//! headless Chromium through playwright-core against it. The browser test checks what the page
//! shows against what Redis holds (passed to it here); what the page does through the API (a
//! DLQ replay, a rollback, a schedule's pause) is checked here, in Redis, after it exits. The
//! timeline's job is welcome-email on a host of its own, with a real PostgreSQL and a loopback
//! provider, so that its chart has SQL statements and an HTTP request in each attempt.
//!
//! Needs Node.js, `/usr/bin/chromium` and `tests/browser/node_modules`; `bash
//! scripts/install-deps.sh` installs the last two, and a missing one fails the test with that
//! command.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};
use wasmq::queue::{Backoff, Client, JobState, NewJob, QueueKeys};
use wasmq::registry::Registry;
use wasmq::schedule::{ScheduleSpec, Schedules};

use crate::support::cli::{ok, wasmq};
use crate::support::email_api::EmailApi;
use crate::support::eventually;
use crate::support::guests::{self, handler, repo_root};
use crate::support::host::HostProcess;
use crate::support::postgres::PgServer;
use crate::support::redis::RedisServer;

/// The queue the browser inspects and acts on; paused once its jobs have settled, so that its
/// counts hold still and a replayed job stays waiting.
const Q: &str = "dash";
/// Completes a job every 100 ms while the browser looks, for the throughput chart.
const LIVE: &str = "dash-live";
/// No host serves it: its jobs wait.
const IDLE: &str = "reports";
/// Runs a job that sleeps an hour, which the browser cancels while it runs.
const RUN: &str = "dash-run";
const TOKEN: &str = "dashboard-test-token-42";
/// Runs the welcome-email job (SQL, then a POST to a provider that answers 500 once, then SQL
/// in a transaction) on a host of its own: the job whose timeline the browser charts, with
/// its calls.
const CALLS: &str = "dash-calls";
const EMAIL_KEY: &str = "ek-dash-5150";
/// A schedule the browser pauses: 09:00 in Seoul is 00:00 UTC, so it does not fire while the
/// test runs (short of a run across midnight UTC, which would add a job to [`IDLE`]).
const SCHEDULE: &str = "nightly-report";
/// The browser test's own bound is shorter (each of its tests 60 s); this one catches a hung
/// browser or node.
const NODE_TIMEOUT: Duration = Duration::from_secs(240);

/// What the browser test needs on this machine, or the command that installs it.
fn browser_prerequisites() -> (PathBuf, PathBuf) {
    let dir = repo_root().join("tests/browser");
    let hint = "run `bash scripts/install-deps.sh` (it installs Chromium with apt and runs `npm \
                ci` in tests/browser)";
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .exists(),
        "tests/browser/node_modules is missing: {hint}"
    );
    let chromium = std::env::var_os("WASMQ_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        chromium.exists(),
        "no Chromium at {}: {hint}",
        chromium.display()
    );
    assert!(
        Command::new("node")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "node (Node.js 20 or later) is not installed; the browser test runs on it"
    );
    (dir, chromium)
}

/// Where the screenshots go: beside the build products (`<target>/dashboard-screenshots`),
/// out of the source tree and kept between runs.
fn screenshot_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_wasmq"));
    bin.parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| Path::new("."))
        .join("dashboard-screenshots")
}

/// Runs the browser test to its end (or [`NODE_TIMEOUT`]), returning whether it passed and
/// everything it printed.
fn run_browser_test(dir: &Path, env: &[(&str, String)]) -> (bool, String) {
    let output = tempfile::tempfile().unwrap();
    let mut child = Command::new("node")
        .arg("--test")
        .arg("--test-reporter=spec")
        .arg("dashboard.test.mjs")
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(output.try_clone().unwrap())
        .stderr(output.try_clone().unwrap())
        .spawn()
        .expect("start node");
    let deadline = Instant::now() + NODE_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut text = String::new();
    let mut output = output;
    std::io::Seek::rewind(&mut output).unwrap();
    output.read_to_string(&mut text).unwrap();
    match status {
        Some(status) => (status.success(), text),
        None => (
            false,
            format!("{text}\n(node killed after {NODE_TIMEOUT:?})"),
        ),
    }
}

async fn counts_json(client: &Client, queue: &str) -> Value {
    let counts = client.counts(queue).await.unwrap();
    let by_state: BTreeMap<&str, u64> = JobState::ALL
        .iter()
        .map(|&s| (s.as_str(), counts.get(s)))
        .collect();
    json!(by_state)
}

#[tokio::test]
async fn the_dashboard_shows_counts_and_attempts_and_replays_a_dead_job_in_a_browser() {
    let (browser_dir, chromium) = browser_prerequisites();
    let redis = RedisServer::start();
    let client = redis.client().await;
    let no_wait = Backoff::fixed(Duration::ZERO);

    // Jobs in every state the browser will look for.
    for n in 0..3 {
        client
            .enqueue(
                Q,
                &NewJob::new("echo", format!("{{\"n\":{n}}}").into_bytes()),
            )
            .await
            .unwrap();
    }
    let flaky = client
        .enqueue(
            Q,
            &NewJob::new("flaky", b"{\"to\":\"ada@example.com\"}".to_vec()).with_backoff(no_wait),
        )
        .await
        .unwrap();
    let retried = client
        .enqueue(
            Q,
            &NewJob::new("retry", b"{\"attempts\":3}".to_vec())
                .with_max_attempts(3)
                .with_backoff(no_wait),
        )
        .await
        .unwrap();
    let failed = client
        .enqueue(Q, &NewJob::new("fail", b"{\"order\":17}".to_vec()))
        .await
        .unwrap();
    client
        .enqueue(
            Q,
            &NewJob::new("echo", b"later".to_vec()).with_delay(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    for n in 0..4 {
        client
            .enqueue(IDLE, &NewJob::new("report", format!("r{n}").into_bytes()))
            .await
            .unwrap();
    }

    let addr = crate::support::free_loopback_addr();
    let base = format!("http://{addr}");
    let queues = format!("{Q},{LIVE},{RUN}");
    let handlers = [
        handler("echo", "echo"),
        handler("flaky", "flaky"),
        handler("retry", "retry"),
        handler("fail", "fail"),
        handler("sleep", "sleep"),
    ];
    let mut args = vec!["--queues", queues.as_str(), "--http", &addr, "--no-cache"];
    args.extend(["--api-token", TOKEN]);
    for h in &handlers {
        args.extend(["--handler", h.as_str()]);
    }
    let host = HostProcess::builder(&redis.url()).args(&args).start();

    // The timeline's job: welcome-email against a real PostgreSQL and a provider on loopback
    // that fails the first POST, so its first attempt is retried, each with its calls.
    let pg = PgServer::start();
    let db = pg.client().await;
    let schema =
        std::fs::read_to_string(repo_root().join("examples/welcome-email/schema.sql")).unwrap();
    db.batch_execute(&schema).await.unwrap();
    db.batch_execute("INSERT INTO users (id, email, name) VALUES (1, 'ada@example.com', 'Ada')")
        .await
        .unwrap();
    let email_api = EmailApi::start(EMAIL_KEY).await;
    email_api.script(&[500]);
    let welcome = guests::rust("welcome-email");
    ok(&wasmq(
        &redis,
        &[
            "handler",
            "deploy",
            "welcome",
            welcome.to_str().unwrap(),
            "--database",
            "main=secret:APP_DB_URL",
            "--allow-outbound",
            &email_api.origin(),
            "--allow-outbound",
            &format!("postgres://127.0.0.1:{}", pg.port()),
            "--config",
            &format!("email_api_url={}", email_api.url()),
            "--secret",
            "EMAIL_API_KEY",
            "--backoff",
            "fixed:200ms",
        ],
    ));
    let db_url = pg.url();
    let _calls_host = HostProcess::builder(&redis.url())
        .envs(&[
            ("WASMQ_SECRET_APP_DB_URL", db_url.as_str()),
            ("WASMQ_SECRET_EMAIL_API_KEY", EMAIL_KEY),
        ])
        .args(["--queues", CALLS, "--no-cache"])
        .start();
    let calls_job = client
        .enqueue(
            CALLS,
            &NewJob::new("welcome", br#"{"userId":1}"#.to_vec()).with_id("welcome-1"),
        )
        .await
        .unwrap();

    let http = reqwest::Client::new();
    eventually("the API answers", Duration::from_secs(30), || async {
        let response = http.get(format!("{base}/healthz")).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
    // A handler in the registry with two versions, for the rollback.
    // The first is deployed with grants, which the handler's page shows (names, never a
    // config value).
    for (guest, grants) in [
        (
            "echo",
            &[
                (
                    "allow_outbound",
                    "https://api.example.com,https://*.slack.com",
                ),
                ("config", r#"{"region":"eu-west-9"}"#),
                ("secrets", "MAIL_KEY"),
            ][..],
        ),
        ("echo-prefix", &[][..]),
    ] {
        let response = http
            .post(format!("{base}/api/handlers/greet"))
            .query(grants)
            .bearer_auth(TOKEN)
            .header("Content-Type", "application/wasm")
            .body(guests::rust_bytes(guest))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201, "deploy {guest}");
    }

    eventually(
        "the jobs of dash settled",
        Duration::from_secs(60),
        || async {
            let c = client.counts(Q).await.ok()?;
            (c.completed == 4 && c.dead == 2 && c.delayed == 1).then_some(())
        },
    )
    .await;
    client.pause(Q).await.unwrap();
    let counts = counts_json(&client, Q).await;
    let mut attempts = serde_json::Map::new();
    for id in [&flaky.id, &retried.id] {
        let job = client.get(Q, id).await.unwrap().unwrap();
        let outcomes: Vec<&str> = job.history.iter().map(|a| a.outcome.as_str()).collect();
        attempts.insert(id.clone(), json!(outcomes));
    }
    assert_eq!(attempts[&flaky.id], json!(["retry", "ok"]));
    assert_eq!(attempts[&retried.id], json!(["retry", "retry", "retry"]));
    // The retried-then-completed job's attempts and their calls, for its timeline.
    let calls_done = eventually(
        "the welcome job completed",
        Duration::from_secs(60),
        || async {
            let job = client.get(CALLS, &calls_job.id).await.ok()??;
            (job.state == JobState::Completed).then_some(job)
        },
    )
    .await;
    let outcomes: Vec<&str> = calls_done
        .history
        .iter()
        .map(|a| a.outcome.as_str())
        .collect();
    assert_eq!(outcomes, ["retry", "ok"]);
    let timeline: Vec<Value> = calls_done
        .history
        .iter()
        .map(|a| {
            json!({"attempt": a.attempt, "outcome": a.outcome,
                   "duration_ms": a.finished_at - a.started_at})
        })
        .collect();
    // Each call as the timeline names it: both kinds, in both attempts.
    let calls: Vec<Value> = calls_done
        .history
        .iter()
        .flat_map(|a| {
            a.calls.iter().flatten().map(move |c| {
                let (name, outcome) = match c.kind.as_str() {
                    "http" => (
                        format!(
                            "{} {}",
                            c.method.as_deref().unwrap(),
                            c.target.as_deref().unwrap()
                        ),
                        c.status.unwrap().to_string(),
                    ),
                    _ => (
                        format!(
                            "sql {} ({})",
                            c.op.as_deref().unwrap(),
                            c.db.as_deref().unwrap()
                        ),
                        c.outcome.clone().unwrap_or_else(|| "ok".to_string()),
                    ),
                };
                json!({"attempt": a.attempt, "kind": c.kind, "name": name, "outcome": outcome})
            })
        })
        .collect();
    let kinds: Vec<&str> = calls.iter().map(|c| c["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "sql", "sql", "http", "sql", "sql", "http", "sql", "sql", "sql"
        ]
    );
    // The attempts of the completed jobs per handler, for the durations chart.
    let mut durations = BTreeMap::<String, usize>::new();
    for job in client.list(Q, JobState::Completed, 0, 100).await.unwrap() {
        *durations.entry(job.handler.clone()).or_default() += job.history.len();
    }
    assert_eq!(
        durations,
        BTreeMap::from([("echo".to_string(), 3), ("flaky".to_string(), 2)])
    );

    // A job every 100 ms for a minute from now: a moving chart while the browser looks.
    let live: Vec<NewJob> = (0..600u64)
        .map(|i| NewJob::new("echo", b"tick".to_vec()).with_delay(Duration::from_millis(i * 100)))
        .collect();
    client.enqueue_bulk(LIVE, &live).await.unwrap();

    // A schedule, as `wasmq schedule add` writes it, and its next runs as the API gives them
    // (RFC 3339, in its zone and in UTC).
    let schedules = Schedules::connect(&redis.url()).await.unwrap();
    let (created, schedule) = schedules
        .add(&ScheduleSpec {
            name: SCHEDULE.to_string(),
            cron: "0 9 * * *".to_string(),
            tz: "Asia/Seoul".to_string(),
            queue: IDLE.to_string(),
            handler: "report".to_string(),
            payload: b"{\"kind\":\"daily\"}".to_vec(),
            catch_up: 0,
        })
        .await
        .unwrap();
    assert!(created && !schedule.paused);
    let now = schedules.now_ms().await.unwrap();
    let next_runs: Vec<Value> = schedule
        .next_runs(now, 3)
        .iter()
        .map(|t| json!({"local": t.to_rfc3339(), "utc": t.with_timezone(&Utc).to_rfc3339()}))
        .collect();
    assert_eq!(next_runs.len(), 3);
    assert!(
        next_runs[0]["utc"]
            .as_str()
            .unwrap()
            .ends_with("T00:00:00+00:00")
    );

    // A payload search the browser types in, and the completed jobs it must find: read here
    // from the whole list, not through the search.
    let search_text = "\"n\":";
    let mut search_ids: Vec<String> = client
        .list(Q, JobState::Completed, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|job| String::from_utf8_lossy(&job.payload).contains(search_text))
        .map(|job| job.id)
        .collect();
    search_ids.sort();
    assert_eq!(search_ids.len(), 3, "the echo jobs n 0..2");
    let search = json!({"state": "completed", "text": search_text, "ids": search_ids});

    // A job that runs for an hour unless cancelled: the browser cancels it.
    let running = client
        .enqueue(
            RUN,
            &NewJob::new("sleep", b"3600000".to_vec())
                .with_id("long-sleep")
                .with_timeout(Duration::from_secs(7200)),
        )
        .await
        .unwrap();
    eventually("the long job running", Duration::from_secs(60), || async {
        let job = client.get(RUN, &running.id).await.ok()??;
        (job.state == JobState::Active).then_some(())
    })
    .await;

    let screenshots = screenshot_dir();
    // Shots of an earlier run must not stand in for this one's.
    for name in [
        "dashboard-timeline.png",
        "dashboard-durations.png",
        "dashboard-search.png",
    ] {
        let _ = std::fs::remove_file(screenshots.join(name));
    }
    let (passed, output) = run_browser_test(
        &browser_dir,
        &[
            ("WASMQ_URL", base.clone()),
            ("WASMQ_TOKEN", TOKEN.to_string()),
            ("WASMQ_QUEUE", Q.to_string()),
            ("WASMQ_EXPECT_COUNTS", counts.to_string()),
            ("WASMQ_EXPECT_ATTEMPTS", Value::Object(attempts).to_string()),
            ("WASMQ_REPLAY_JOB", failed.id.clone()),
            ("WASMQ_CANCEL_QUEUE", RUN.to_string()),
            ("WASMQ_CANCEL_JOB", running.id.clone()),
            ("WASMQ_TIMELINE_QUEUE", CALLS.to_string()),
            ("WASMQ_TIMELINE_JOB", calls_job.id.clone()),
            ("WASMQ_EXPECT_TIMELINE", Value::Array(timeline).to_string()),
            ("WASMQ_EXPECT_CALLS", Value::Array(calls).to_string()),
            ("WASMQ_EXPECT_DURATIONS", json!(durations).to_string()),
            ("WASMQ_HANDLER", "greet".to_string()),
            ("WASMQ_LIVE_QUEUE", LIVE.to_string()),
            ("WASMQ_SCHEDULE", SCHEDULE.to_string()),
            ("WASMQ_SCHEDULE_RUNS", Value::Array(next_runs).to_string()),
            ("WASMQ_SEARCH", search.to_string()),
            ("WASMQ_SCREENSHOTS", screenshots.display().to_string()),
            ("WASMQ_CHROMIUM", chromium.display().to_string()),
        ],
    );
    eprintln!("--- tests/browser/dashboard.test.mjs ---\n{output}");
    assert!(passed, "the browser test failed; its output is above");

    // The replay the browser asked for, in Redis: back to waiting (the queue is paused, so it
    // stays there), attempts reset, history kept.
    let job = client.get(Q, &failed.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Waiting);
    assert_eq!((job.attempt, job.replays, job.history.len()), (0, 1, 1));
    let keys = QueueKeys::new(Q).unwrap();
    let mut conn = redis.connection().await;
    let waiting: Option<f64> = redis::cmd("ZSCORE")
        .arg(keys.waiting())
        .arg(&failed.id)
        .query_async(&mut conn)
        .await
        .unwrap();
    let dead: Option<f64> = redis::cmd("ZSCORE")
        .arg(keys.dead())
        .arg(&failed.id)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(waiting.is_some() && dead.is_none(), "in waiting, not dead");
    let after = counts_json(&client, Q).await;
    assert_eq!(after["waiting"], counts["waiting"].as_u64().unwrap() + 1);
    assert_eq!(after["dead"], counts["dead"].as_u64().unwrap() - 1);
    // The retried job the browser only looked at is still dead.
    let job = client.get(Q, &retried.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Dead);

    // The running job it cancelled: dead as cancelled by the API, its attempt stopped on the
    // host (which said so), the attempt's host in its one history entry.
    let job = client.get(RUN, &running.id).await.unwrap().unwrap();
    assert_eq!(
        (
            job.state,
            job.last_outcome.as_deref(),
            job.cancelled_by.as_deref()
        ),
        (JobState::Dead, Some("cancelled"), Some("api"))
    );
    assert_eq!(job.history.len(), 1);
    assert!(!job.history[0].host.is_empty());
    assert_eq!(client.counts(RUN).await.unwrap().active, 0);
    assert!(
        host.log_text()
            .contains("job cancelled; its attempt is stopped here"),
        "the host stopped the attempt"
    );

    // The rollback it asked for.
    let registry = Registry::connect(&redis.url()).await.unwrap();
    assert_eq!(registry.current().await.unwrap()["greet"].version, 1);

    // The schedule it paused, and nothing else about it changed.
    let paused = schedules.get(SCHEDULE).await.unwrap().unwrap();
    assert!(paused.paused, "{SCHEDULE} is paused");
    assert_eq!(paused.spec, schedule.spec);

    let shot = screenshots.join("dashboard.png");
    let png = std::fs::read(&shot).unwrap_or_default();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "no screenshot at {}",
        shot.display()
    );
    // The timeline and the durations chart, shot by the browser test (panels, so smaller),
    // and the search results.
    for name in [
        "dashboard-timeline.png",
        "dashboard-durations.png",
        "dashboard-search.png",
    ] {
        let shot = screenshots.join(name);
        let png = std::fs::read(&shot).unwrap_or_default();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 2_000,
            "no screenshot at {}",
            shot.display()
        );
    }
    eprintln!("dashboard screenshots: {}", screenshots.display());
}

/// The dashboard's JavaScript files in the source tree (`host/src/api/dashboard/`, one folder
/// deep), as paths relative to it.
fn dashboard_modules() -> Vec<String> {
    let folder = repo_root().join("host/src/api/dashboard");
    let mut modules = Vec::new();
    for dir in [folder.clone(), folder.join("views")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "js") {
                let relative = path.strip_prefix(&folder).unwrap();
                modules.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    modules.sort();
    modules
}

#[tokio::test]
async fn every_dashboard_module_is_served_as_javascript_under_the_page_policy() {
    let modules = dashboard_modules();
    assert!(
        modules.contains(&"app.js".to_string()) && modules.len() > 10,
        "{modules:?}"
    );
    let redis = RedisServer::start();
    let addr = crate::support::free_loopback_addr();
    let base = format!("http://{addr}");
    let echo = handler("echo", "echo");
    let _host = HostProcess::builder(&redis.url())
        .args([
            "--queues",
            Q,
            "--http",
            &addr,
            "--no-cache",
            "--api-token",
            TOKEN,
            "--handler",
            &echo,
        ])
        .start();
    let http = reqwest::Client::new();
    eventually("the API answers", Duration::from_secs(30), || async {
        let response = http.get(format!("{base}/healthz")).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;

    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let policy = page.headers()["content-security-policy"].clone();
    assert!(
        policy.to_str().unwrap().contains("script-src 'self'"),
        "{policy:?}"
    );
    // Each module as the browser asks for it (a page load carries no token), byte for byte
    // the file in the tree, as JavaScript (a module script of another type is refused), under
    // the page's own policy.
    for module in &modules {
        let response = http
            .get(format!("{base}/dashboard/{module}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{module}");
        let headers = response.headers().clone();
        let content_type = headers["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("text/javascript"),
            "{module}: {content_type}"
        );
        assert_eq!(headers["content-security-policy"], policy, "{module}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{module}");
        let body = response.bytes().await.unwrap();
        let file = std::fs::read(repo_root().join("host/src/api/dashboard").join(module)).unwrap();
        assert!(body == file, "{module} is served as it is in the tree");
    }
    // The type-check's configuration beside them is not served.
    let config = http
        .get(format!("{base}/dashboard/tsconfig.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(config.status().as_u16(), 404);
}
