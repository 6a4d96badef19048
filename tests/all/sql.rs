//! Postgres for handlers, through a real component (`sql-probe`, on the SDK's `sql` module)
//! and a private PostgreSQL server (`support::postgres`): every type both ways, transactions,
//! grants and the allow-list, the deadline's cancel on the server, the caps, SQLSTATEs, and
//! the database URL and password kept out of everything a handler author or operator sees.

use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasmq::capability::{Capabilities, Grants, HostResources, SecretSource};
use wasmq::{Handler, JobInput, JobLimits, Outcome, RunReport, Runtime, RuntimeConfig};

use wasmq::queue::{JobState, NewJob};

use crate::support::cli::{ok, wasmq};
use crate::support::eventually;
use crate::support::guests;
use crate::support::host::HostProcess;
use crate::support::jobs::keep_everything;
use crate::support::postgres::PgServer;
use crate::support::redis::RedisServer;

const SECRET: &str = "WASMQ_TEST_APP_DB_URL";

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Runtime::new(RuntimeConfig {
            max_instances: 50,
            ..RuntimeConfig::default()
        })
        .unwrap()
    })
}

fn probe() -> Handler {
    static H: OnceLock<Handler> = OnceLock::new();
    H.get_or_init(|| runtime().load(&guests::rust_bytes("sql-probe")).unwrap())
        .clone()
}

/// A secrets directory holding `url` as the secret [`SECRET`].
fn secrets(url: &str) -> (tempfile::TempDir, SecretSource) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(SECRET), url).unwrap();
    let source = SecretSource {
        dir: Some(dir.path().to_path_buf()),
    };
    (dir, source)
}

/// The grants that give `main` = the test server, reachable on its loopback port.
fn grants(pg: &PgServer) -> Grants {
    Grants {
        allow_outbound: vec![format!("postgres://127.0.0.1:{}", pg.port())],
        databases: [("main".to_string(), format!("secret:{SECRET}"))].into(),
        ..Grants::default()
    }
}

fn resolve(grants: &Grants, url: &str) -> Result<Capabilities, String> {
    let (_dir, source) = secrets(url);
    Capabilities::resolve("sql-probe", grants, &HostResources::with_secrets(source))
}

fn granted(pg: &PgServer) -> Handler {
    let caps = resolve(&grants(pg), &pg.url()).unwrap();
    probe().with_capabilities(Arc::new(caps))
}

async fn run(handler: &Handler, ops: Value, timeout: Duration) -> RunReport {
    let payload = json!({ "database": "main", "ops": ops })
        .to_string()
        .into_bytes();
    let job = JobInput {
        id: "job-1".into(),
        queue: "default".into(),
        handler: "sql-probe".into(),
        payload,
        attempt: 1,
        max_attempts: 1,
    };
    let limits = JobLimits {
        timeout,
        memory: 128 * 1024 * 1024,
        fuel: None,
    };
    runtime().run(handler, job, &limits).await
}

/// The results of `ops` (the first is the `open`, only when it failed).
async fn results(handler: &Handler, ops: Value) -> Vec<Value> {
    let report = run(handler, ops, Duration::from_secs(20)).await;
    match &report.outcome {
        Outcome::Ok(bytes) => serde_json::from_slice(bytes).unwrap(),
        other => panic!("expected ok, got {other:?} (logs {:?})", report.logs),
    }
}

fn rows(result: &Value) -> &Vec<Value> {
    result["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows in {result}"))
}

fn error_kind(result: &Value) -> &str {
    result["error"]["kind"].as_str().unwrap_or("")
}

#[tokio::test]
async fn every_type_round_trips_through_execute_and_query() {
    let pg = PgServer::start();
    let handler = granted(&pg);
    let values = json!([
        {"bool": true}, {"int16": -12}, {"int32": 70000}, {"int64": 9_000_000_000_i64},
        {"float32": 1.5}, {"float64": -2.25}, {"text": "héllo"}, {"bytea": [0, 1, 255]},
        {"date": [2024, 2, 29]}, {"time": [23, 59, 58, 123456000]},
        {"datetime": [1999, 12, 31, 23, 59, 59, 999999000]},
        {"timestamp": 1_700_000_000_123_456_i64},
        {"uuid": "67e55044-10b1-426f-9247-bb680e5fe0c8"}, {"json": {"a": [1, "b"]}},
        {"null": true}
    ]);
    let out = results(
        &handler,
        json!([
            {"execute": "CREATE TABLE t (b bool, i2 int2, i4 int4, i8 int8, f4 float4, \
                f8 float8, s text, by bytea, d date, ti time, dt timestamp, ts timestamptz, \
                u uuid, j jsonb, n int4)"},
            {"execute": "INSERT INTO t VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)",
             "params": values},
            {"query": "SELECT * FROM t"},
            {"query": "SELECT 1.5::numeric AS n, 'x'::varchar AS v, NULL::text AS z"},
            {"query": "SELECT $1::int4 + 1 AS x", "params": [{"text": "not a number"}]},
            {"query": "SELECT $1::int2 AS x", "params": [{"int64": 100000}]},
        ]),
    )
    .await;
    assert_eq!(out[1], json!({"count": 1}), "{out:?}");
    assert_eq!(rows(&out[2])[0], values, "{out:?}");
    let columns: Vec<&str> = out[2]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[1].as_str().unwrap().trim_start_matches("DbDataType::"))
        .collect();
    assert_eq!(
        columns,
        [
            "Boolean",
            "Int16",
            "Int32",
            "Int64",
            "Floating32",
            "Floating64",
            "Str",
            "Binary",
            "Date",
            "Time",
            "Datetime",
            "Timestamp",
            "Uuid",
            "Jsonb",
            "Int32"
        ]
    );
    assert_eq!(
        rows(&out[3])[0],
        json!([{"unsupported": true}, {"text": "x"}, {"null": true}])
    );
    assert_eq!(error_kind(&out[4]), "bad-parameter", "{out:?}");
    assert!(
        out[4]["error"]["message"].as_str().unwrap().contains("$1"),
        "{out:?}"
    );
    assert_eq!(error_kind(&out[5]), "bad-parameter", "{out:?}");
}

#[tokio::test]
async fn a_transaction_commits_or_rolls_back_and_a_connection_dropped_in_one_rolls_back() {
    let pg = PgServer::start();
    let handler = granted(&pg);
    let count = json!({"query": "SELECT count(*)::int8 AS n FROM t"});
    let out = results(
        &handler,
        json!([
            {"execute": "CREATE TABLE t (id int8 PRIMARY KEY)"},
            {"begin": true},
            {"execute": "INSERT INTO t VALUES (1)"},
            {"commit": true},
            {"begin": true},
            {"execute": "INSERT INTO t VALUES (2)"},
            {"rollback": true},
            count,
            {"begin": true},
            {"execute": "INSERT INTO t VALUES (3)"},
            {"close": true},
            {"open": "main"},
            count,
        ]),
    )
    .await;
    assert_eq!(rows(&out[7])[0], json!([{"int64": 1}]), "{out:?}");
    assert_eq!(rows(&out[12])[0], json!([{"int64": 1}]), "{out:?}");
    // The SDK's `transaction`: commits when every step succeeds, rolls back at a failure.
    let out = results(
        &handler,
        json!([
            {"transaction": [{"execute": "INSERT INTO t VALUES (10)"}]},
            {"transaction": [
                {"execute": "INSERT INTO t VALUES (11)"},
                {"execute": "INSERT INTO t VALUES (10)"},
            ]},
            {"query": "SELECT id FROM t ORDER BY id"},
        ]),
    )
    .await;
    assert_eq!(out[0]["committed"], true, "{out:?}");
    assert_eq!(out[1]["committed"], false, "{out:?}");
    assert_eq!(
        out[1]["results"][1]["error"]["sqlstate"], "23505",
        "{out:?}"
    );
    assert_eq!(
        rows(&out[2]),
        &vec![json!([{"int64": 1}]), json!([{"int64": 10}])],
        "{out:?}"
    );
    // And the attempt ending with a transaction open rolls it back too.
    let out = results(
        &handler,
        json!([{"begin": true}, {"execute": "INSERT INTO t VALUES (4)"}]),
    )
    .await;
    assert_eq!(out[1], json!({"count": 1}));
    let mine = pg.client().await;
    eventually(
        "the transaction left open to be rolled back",
        Duration::from_secs(5),
        || async {
            let open: i64 = mine
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE state LIKE 'idle in transaction%'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            (open == 0).then_some(())
        },
    )
    .await;
    let total: i64 = mine
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 2);
}

#[tokio::test]
async fn a_handler_without_the_database_grant_gets_access_denied() {
    let pg = PgServer::start();
    let mut g = grants(&pg);
    g.databases.clear();
    let caps = resolve(&g, &pg.url()).unwrap();
    let handler = probe().with_capabilities(Arc::new(caps));
    let out = results(&handler, json!([{"query": "SELECT 1"}])).await;
    assert_eq!(error_kind(&out[0]), "access-denied", "{out:?}");
    // Granted `main`, it still cannot open another name.
    let out = results(&granted(&pg), json!([{"open": "other"}])).await;
    assert_eq!(error_kind(&out[0]), "access-denied", "{out:?}");
}

#[tokio::test]
async fn a_database_host_the_allow_list_does_not_name_is_refused_at_load_without_the_password() {
    let pg = PgServer::start();
    let mut g = grants(&pg);
    g.allow_outbound = vec!["https://api.example.com".into()];
    let err = resolve(&g, &pg.url()).unwrap_err();
    assert!(err.contains("database main"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{}", pg.port())), "{err}");
    assert!(err.contains("allow_outbound"), "{err}");
    assert!(!err.contains(pg.password()), "{err}");
    // A name pattern does not let a loopback literal through: only an address pattern does.
    g.allow_outbound = vec![format!("postgres://localhost:{}", pg.port())];
    let err = resolve(&g, &pg.url()).unwrap_err();
    assert!(!err.contains(pg.password()), "{err}");
    // Not a Postgres URL: refused naming the secret, not showing the value.
    let bogus = format!("mysql://root:{}@127.0.0.1/x", pg.password());
    let err = resolve(&grants(&pg), &bogus).unwrap_err();
    assert!(
        err.contains(SECRET) && !err.contains(pg.password()),
        "{err}"
    );
    // The same refusal from the binary, which says it on stderr and runs nothing.
    let out = exec(
        &pg,
        &["--allow-outbound", "https://api.example.com"],
        "[]",
        "5s",
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not in allow_outbound"), "{stderr}");
    assert!(!stderr.contains(pg.password()), "{stderr}");
}

/// `wasmq exec sql-probe` with `main` granted, the URL in the child's environment, and trace
/// logging on.
fn exec(pg: &PgServer, extra: &[&str], ops: &str, timeout: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wasmq"))
        .arg("exec")
        .arg(guests::rust("sql-probe"))
        .args([
            "--payload",
            &format!(r#"{{"database":"main","ops":{ops}}}"#),
        ])
        .args(["--timeout", timeout, "--json"])
        .args(["--database", &format!("main=secret:{SECRET}")])
        .args(extra)
        .env(format!("WASMQ_SECRET_{SECRET}"), pg.url())
        .env("RUST_LOG", "trace")
        .output()
        .expect("run wasmq exec")
}

#[tokio::test]
async fn a_query_past_the_deadline_ends_as_timeout_and_is_cancelled_on_the_server() {
    let pg = PgServer::start();
    let handler = granted(&pg);
    let timeout = Duration::from_millis(1500);
    let started = Instant::now();
    let report = run(
        &handler,
        json!([{"query": "SELECT pg_sleep(30) AS wasmq_sleeper"}]),
        timeout,
    )
    .await;
    assert!(
        matches!(report.outcome, Outcome::Timeout),
        "{:?}",
        report.outcome
    );
    assert!(started.elapsed() < timeout * 2, "{:?}", started.elapsed());
    let mine = pg.client().await;
    eventually(
        "the cancelled query to leave pg_stat_activity",
        Duration::from_secs(3),
        || async {
            let n: i64 = mine
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE query LIKE '%wasmq_sleeper%' AND state = 'active' \
                     AND pid <> pg_backend_pid()",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            (n == 0).then_some(())
        },
    )
    .await;
    // The pool still serves the handler (the cut connection was not handed out again).
    let out = results(&handler, json!([{"query": "SELECT 1::int4 AS one"}])).await;
    assert_eq!(rows(&out[0])[0], json!([{"int32": 1}]), "{out:?}");
}

#[tokio::test]
async fn a_query_over_the_row_cap_is_too_large() {
    let pg = PgServer::start();
    let handler = granted(&pg);
    let out = results(
        &handler,
        json!([
            {"query": "SELECT g FROM generate_series(1, 10001) g"},
            {"query": "SELECT count(*)::int8 FROM generate_series(1, 10000) g"},
            {"query": "SELECT repeat('x', 1024 * 1024) FROM generate_series(1, 17)"},
        ]),
    )
    .await;
    assert_eq!(error_kind(&out[0]), "too-large", "{out:?}");
    // The connection goes on: the rows past the cap are read and dropped.
    assert_eq!(rows(&out[1])[0], json!([{"int64": 10000}]), "{out:?}");
    assert_eq!(error_kind(&out[2]), "too-large", "{out:?}");
    let out = results(
        &handler,
        json!([{"query": "SELECT repeat('x', 1024 * 1024) FROM generate_series(1, 17)"}]),
    )
    .await;
    assert_eq!(error_kind(&out[0]), "too-large", "{out:?}");
}

#[tokio::test]
async fn a_unique_violation_surfaces_sqlstate_23505() {
    let pg = PgServer::start();
    let handler = granted(&pg);
    let out = results(
        &handler,
        json!([
            {"execute": "CREATE TABLE u (id int8 PRIMARY KEY)"},
            {"execute": "INSERT INTO u VALUES ($1)", "params": [{"int64": 7}]},
            {"execute": "INSERT INTO u VALUES ($1)", "params": [{"int64": 7}]},
            {"query": "SELECT count(*)::int8 FROM u"},
        ]),
    )
    .await;
    assert_eq!(error_kind(&out[2]), "query-failed", "{out:?}");
    assert_eq!(out[2]["error"]["sqlstate"], "23505", "{out:?}");
    assert_eq!(rows(&out[3])[0], json!([{"int64": 1}]), "{out:?}");
}

#[tokio::test]
async fn the_url_and_password_appear_in_no_log_line_error_or_debug() {
    let pg = PgServer::start();
    let caps = resolve(&grants(&pg), &pg.url()).unwrap();
    let debug = format!("{caps:?}");
    assert!(!debug.contains(pg.password()), "{debug}");
    assert!(debug.contains("main"), "{debug}");
    // A wrong password: the connection fails, and its error does not show the one tried.
    let wrong = pg.url().replace(pg.password(), "wrong-pass-zz9");
    let caps = resolve(&grants(&pg), &wrong).unwrap();
    let handler = probe().with_capabilities(Arc::new(caps));
    let out = results(&handler, json!([])).await;
    assert_eq!(error_kind(&out[0]), "connection-failed", "{out:?}");
    let text = out[0].to_string();
    assert!(
        !text.contains("wrong-pass-zz9") && !text.contains(&wrong),
        "{text}"
    );
    // A whole attempt through the binary at trace level: statements that work and that
    // fail, and nothing it prints names the URL or the password.
    let ops = r#"[{"execute":"CREATE TABLE s (id int8 PRIMARY KEY)"},
        {"execute":"INSERT INTO s VALUES (1)"},{"execute":"INSERT INTO s VALUES (1)"},
        {"query":"SELECT * FROM missing"}]"#;
    let allow = format!("postgres://127.0.0.1:{}", pg.port());
    let out = exec(&pg, &["--allow-outbound", &allow], ops, "10s");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("23505"), "{stdout}");
    assert!(stdout.contains("42P01"), "{stdout}");
    for text in [&stdout, &stderr] {
        assert!(!text.contains(pg.password()), "{text}");
        assert!(!text.contains(&pg.url()), "{text}");
    }
}

async fn http_get(addr: &str, path: &str) -> String {
    let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    response.text().await.unwrap()
}

#[tokio::test]
async fn a_deployed_handler_reaches_its_database_through_a_real_host_and_the_url_stays_on_it() {
    const Q: &str = "sql";
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, Q).await;
    let component = guests::rust("sql-probe");
    let database = format!("main=secret:{SECRET}");
    let allow = format!("postgres://127.0.0.1:{}", pg.port());
    let deploy = |extra: &[&str]| {
        let mut args = vec!["handler", "deploy", "orders", component.to_str().unwrap()];
        args.extend_from_slice(&["--max-attempts", "1"]);
        args.extend_from_slice(extra);
        wasmq(&redis, &args)
    };
    // A URL where the secret's name belongs is refused, and nothing is written.
    let url = pg.url();
    let refused = deploy(&["--database", &format!("main={url}")]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("secret:NAME"), "{stderr}");
    ok(&deploy(&[
        "--database",
        &database,
        "--allow-outbound",
        &allow,
    ]));
    let versions = ok(&wasmq(&redis, &["handler", "versions", "orders", "--json"]));
    let versions: Value = serde_json::from_str(&versions).unwrap();
    assert_eq!(versions.as_array().unwrap().len(), 1, "{versions}");
    assert_eq!(versions[0]["databases"]["main"], format!("secret:{SECRET}"));

    let http = crate::support::free_loopback_addr();
    let secret_var = format!("WASMQ_SECRET_{SECRET}");
    let host = HostProcess::builder(&redis.url())
        .envs(&[(secret_var.as_str(), url.as_str()), ("RUST_LOG", "trace")])
        .args(["--queues", Q, "--http", &http])
        .start();
    let ops = json!({"database": "main", "ops": [
        {"execute": "CREATE TABLE o (id int8 PRIMARY KEY)"},
        {"execute": "INSERT INTO o VALUES (1)"},
        {"execute": "INSERT INTO o VALUES (1)"},
        {"query": "SELECT id FROM o"},
    ]});
    let id = client
        .enqueue(Q, &NewJob::new("orders", ops.to_string().into_bytes()))
        .await
        .unwrap()
        .id;
    let job = eventually("the job to end", Duration::from_secs(30), || async {
        let job = client.get(Q, &id).await.ok()??;
        matches!(job.state, JobState::Completed | JobState::Dead).then_some(job)
    })
    .await;
    assert_eq!(job.state, JobState::Completed, "{:?}", job.last_error);
    let result: Value = serde_json::from_slice(&job.result.unwrap()).unwrap();
    assert_eq!(result[2]["error"]["sqlstate"], "23505", "{result}");
    assert_eq!(rows(&result[3])[0], json!([{"int64": 1}]), "{result}");

    let metrics = http_get(&http, "/metrics").await;
    for outcome in ["ok", "failed"] {
        let series = format!(
            "wasmq_sql_queries_total{{handler=\"orders\",database=\"main\",outcome=\"{outcome}\"}}"
        );
        assert!(metrics.contains(&series), "{series} not in {metrics}");
    }
    assert!(
        metrics.contains(
            "wasmq_sql_query_duration_seconds_count{handler=\"orders\",database=\"main\"}"
        ),
        "{metrics}"
    );

    // Version 2 no longer allows the database's host: this host refuses it at load, saying
    // why, and the password is in none of what it says.
    ok(&deploy(&["--database", &database]));
    eventually("v2 refused", Duration::from_secs(20), || async {
        let log = host.log_text();
        (log.contains("refused") && log.contains("not in allow_outbound")).then_some(())
    })
    .await;
    for (key, value) in redis.snapshot().await {
        let value = String::from_utf8_lossy(&value);
        assert!(
            !value.contains(pg.password()) && !key.contains(pg.password()),
            "the password is in Redis key {key}"
        );
    }
    for path in ["/metrics", "/api/handlers", "/api/handlers/orders/versions"] {
        let body = http_get(&http, path).await;
        assert!(!body.contains(pg.password()), "the password is in {path}");
    }
    let log = host.log_text();
    assert!(
        !log.contains(pg.password()),
        "the password is in the host's log"
    );
}

#[tokio::test]
async fn a_wait_for_a_pooled_connection_ends_at_the_jobs_deadline() {
    let pg = PgServer::start();
    let (_dir, source) = secrets(&pg.url());
    // A host whose pools hold one connection each.
    let host = HostResources {
        sql: Arc::new(wasmq::capability::SqlPools::new(1)),
        ..HostResources::with_secrets(source)
    };
    // Two versions resolved on the same host share the URL's pool: version 1 holds its one
    // connection, and version 2 waits for it.
    let v1 = Capabilities::resolve("sql-probe", &grants(&pg), &host).unwrap();
    let v2 = Capabilities::resolve("sql-probe", &grants(&pg), &host).unwrap();
    let handler = probe().with_capabilities(Arc::new(v1));
    let second = probe().with_capabilities(Arc::new(v2));
    let holder = {
        let handler = handler.clone();
        tokio::spawn(async move {
            run(
                &handler,
                json!([{"query": "SELECT pg_sleep(4)::text"}]),
                Duration::from_secs(10),
            )
            .await
        })
    };
    // Give the holder the pool's one connection first.
    let mine = pg.client().await;
    eventually(
        "the holder's query to run",
        Duration::from_secs(10),
        || async {
            let n: i64 = mine
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(4)%'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            (n == 1).then_some(())
        },
    )
    .await;
    let timeout = Duration::from_millis(800);
    let started = Instant::now();
    let report = run(&second, json!([{"query": "SELECT 1"}]), timeout).await;
    assert!(
        matches!(report.outcome, Outcome::Timeout),
        "{:?}",
        report.outcome
    );
    assert!(started.elapsed() < timeout * 2, "{:?}", started.elapsed());
    assert!(matches!(holder.await.unwrap().outcome, Outcome::Ok(_)));
}

#[tokio::test]
async fn an_attempt_holds_at_most_four_connections_at_once() {
    let pg = PgServer::start();
    let handler = granted(&pg);
    let out = results(
        &handler,
        json!([
            {"hold": "main"}, {"hold": "main"}, {"hold": "main"},
            {"hold": "main"},
            {"close": true},
            {"hold": "main"},
        ]),
    )
    .await;
    assert_eq!(out[..3], vec![json!({"ok": true}); 3], "{out:?}");
    assert_eq!(error_kind(&out[3]), "other", "{out:?}");
    assert!(out[3].to_string().contains("at most 4"), "{out:?}");
    assert_eq!(out[5], json!({"ok": true}), "{out:?}");
}

#[tokio::test]
async fn a_database_name_is_resolved_by_the_host_and_its_address_checked_before_connecting() {
    let pg = PgServer::start();
    let url = pg.url().replace("127.0.0.1", "localhost");
    let port = pg.port();
    // The name is allowed, but it resolves to loopback, which only an address pattern allows.
    let mut g = grants(&pg);
    g.allow_outbound = vec![format!("postgres://localhost:{port}")];
    let handler = probe().with_capabilities(Arc::new(resolve(&g, &url).unwrap()));
    let out = results(&handler, json!([])).await;
    assert_eq!(error_kind(&out[0]), "connection-failed", "{out:?}");
    let message = out[0]["error"]["message"].as_str().unwrap();
    assert!(message.contains("may not reach"), "{message}");
    assert!(!message.contains(pg.password()), "{message}");
    // Named by an address pattern too, the resolved address may be used.
    g.allow_outbound
        .push(format!("postgres://127.0.0.1:{port}"));
    let handler = probe().with_capabilities(Arc::new(resolve(&g, &url).unwrap()));
    let out = results(&handler, json!([{"query": "SELECT 1::int4"}])).await;
    assert_eq!(rows(&out[0])[0], json!([{"int32": 1}]), "{out:?}");
}
