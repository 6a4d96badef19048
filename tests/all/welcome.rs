//! The welcome-email job of examples/welcome-email, end to end: a private PostgreSQL with the
//! example's schema, a fake email provider on loopback, real `wasmq run` hosts and the
//! handler deployed with its grants (database `main` bound to a host secret, the provider
//! and the database allow-listed, the provider's URL in config, its key a secret), jobs
//! enqueued by the `wasmq enqueue` producer. In Rust, Python and JavaScript.

use std::time::Duration;

use serde_json::json;
use wasmq::queue::{Client, Job, JobState};

use crate::support::cli::{ok, wasmq};
use crate::support::email_api::EmailApi;
use crate::support::eventually;
use crate::support::guests;
use crate::support::host::HostProcess;
use crate::support::http_server::TestServer;
use crate::support::jobs::keep_everything;
use crate::support::postgres::PgServer;
use crate::support::redis::RedisServer;

const Q: &str = "emails";
const API_KEY: &str = "ek-live-4c1d9a77";
const ALERT_SECRET: &str = "alert-secret-welcome";

struct World {
    redis: RedisServer,
    client: Client,
    pg: PgServer,
    api: EmailApi,
    hook: TestServer,
    cache: tempfile::TempDir,
}

/// Redis, Postgres with the example's schema and three users, the provider, the alert hook.
async fn world() -> World {
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, Q).await;
    let pg = PgServer::start();
    let db = pg.client().await;
    let schema =
        std::fs::read_to_string(guests::repo_root().join("examples/welcome-email/schema.sql"))
            .unwrap();
    db.batch_execute(&schema).await.unwrap();
    db.batch_execute(
        "INSERT INTO users (id, email, name) VALUES \
         (1, 'ada@example.com', 'Ada'), (2, 'bob@example.com', 'Bob'), \
         (3, 'cy@example.com', 'Cy')",
    )
    .await
    .unwrap();
    World {
        redis,
        client,
        pg,
        api: EmailApi::start(API_KEY).await,
        hook: TestServer::start().await,
        cache: tempfile::tempdir().unwrap(),
    }
}

#[derive(Clone, Copy, Debug)]
enum Lang {
    Rust,
    Python,
    JavaScript,
}

fn component(lang: Lang) -> String {
    let path = match lang {
        Lang::Rust => guests::rust("welcome-email"),
        Lang::Python => guests::python("welcome"),
        Lang::JavaScript => guests::javascript("welcome"),
    };
    path.to_str().unwrap().to_string()
}

impl World {
    /// `wasmq handler deploy welcome ...` with the example's grants, three attempts 300 ms
    /// apart.
    fn deploy(&self, lang: Lang) {
        let path = component(lang);
        let api = self.api.origin();
        let db = format!("postgres://127.0.0.1:{}", self.pg.port());
        let url = format!("email_api_url={}", self.api.url());
        ok(&wasmq(
            &self.redis,
            &[
                "handler",
                "deploy",
                "welcome",
                &path,
                "--database",
                "main=secret:APP_DB_URL",
                "--allow-outbound",
                &api,
                "--allow-outbound",
                &db,
                "--config",
                &url,
                "--secret",
                "EMAIL_API_KEY",
                "--max-attempts",
                "3",
                "--backoff",
                "fixed:300ms",
                "--timeout",
                "20s",
            ],
        ));
    }

    /// A host with the secrets, alerting to the hook; `lease` short where a test kills it.
    fn host(&self, lease: &str) -> HostProcess {
        let db_url = self.pg.url();
        HostProcess::builder(&self.redis.url())
            .envs(&[
                ("WASMQ_SECRET_APP_DB_URL", db_url.as_str()),
                ("WASMQ_SECRET_EMAIL_API_KEY", API_KEY),
                ("WASMQ_ALERT_SECRET", ALERT_SECRET),
            ])
            .args([
                "--queues",
                Q,
                "--lease",
                lease,
                "--cache-dir",
                self.cache.path().to_str().unwrap(),
                "--alert-webhook",
                &self.hook.url("/ok"),
            ])
            .start()
    }

    /// The producer: `wasmq enqueue emails welcome --payload '{"userId":N}' --id
    /// welcome-<N> --priority 10 --delay 100ms`.
    fn enqueue(&self, user: i64) -> String {
        let id = format!("welcome-{user}");
        let payload = json!({ "userId": user }).to_string();
        let out = ok(&wasmq(
            &self.redis,
            &[
                "enqueue",
                Q,
                "welcome",
                "--payload",
                &payload,
                "--id",
                &id,
                "--priority",
                "10",
                "--delay",
                "100ms",
            ],
        ));
        assert_eq!(out.trim(), id);
        id
    }

    async fn ended(&self, id: &str) -> Job {
        eventually("the job ended", Duration::from_secs(90), || async {
            let job = self.client.get(Q, id).await.ok()??;
            matches!(job.state, JobState::Completed | JobState::Dead).then_some(job)
        })
        .await
    }

    /// The `email_log` rows: (job id, user id, provider id).
    async fn log_rows(&self) -> Vec<(String, i64, Option<String>)> {
        let db = self.pg.client().await;
        db.query(
            "SELECT job_id, user_id, provider_id FROM email_log ORDER BY job_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    }
}

fn result_text(job: &Job) -> String {
    String::from_utf8_lossy(job.result.as_deref().unwrap_or_default()).into_owned()
}

/// Happy path, a deleted user, and a job enqueued twice, in three languages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_one_email_per_user_and_logs_it_in_rust_python_and_javascript() {
    for lang in [Lang::Rust, Lang::Python, Lang::JavaScript] {
        let w = world().await;
        w.deploy(lang);
        let _host = w.host("30s");
        let id = w.enqueue(1);
        let job = w.ended(&id).await;
        assert_eq!(
            job.state,
            JobState::Completed,
            "{lang:?}: {:?}",
            job.last_error
        );
        assert_eq!(result_text(&job), "sent to ada@example.com", "{lang:?}");
        let sent = w.api.sent();
        assert_eq!(sent.len(), 1, "{lang:?}");
        assert_eq!(sent[0].body["to"], "ada@example.com");
        assert_eq!(sent[0].idempotency_key, id);
        assert_eq!(
            w.log_rows().await,
            vec![(id.clone(), 1, Some("em_1".to_string()))],
            "{lang:?}"
        );

        // Enqueued again under the same id: deduplicated by the queue, nothing new.
        let again = wasmq(
            &w.redis,
            &[
                "enqueue",
                Q,
                "welcome",
                "--payload",
                r#"{"userId":1}"#,
                "--id",
                &id,
            ],
        );
        assert_eq!(ok(&again).trim(), id);
        let said = String::from_utf8_lossy(&again.stderr);
        assert!(said.contains("already exists (completed)"), "{said}");

        // A user deleted before the job ran: completed, nothing sent.
        w.pg.client()
            .await
            .execute("DELETE FROM users WHERE id = 2", &[])
            .await
            .unwrap();
        let gone = w.ended(&w.enqueue(2)).await;
        assert_eq!(gone.state, JobState::Completed, "{lang:?}");
        assert_eq!(result_text(&gone), "user 2 is gone: nothing sent");
        assert_eq!(w.api.sent().len(), 1, "{lang:?}");
        assert_eq!(w.log_rows().await.len(), 1);
    }
}

/// A host killed after the POST reached the provider and before the job was acknowledged:
/// the lease expires, another host runs the job again, and the provider sends no second
/// email (the repeated request carries the same Idempotency-Key); the log row is written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_after_the_post_sends_no_second_email() {
    let w = world().await;
    w.deploy(Lang::Rust);
    let mut first = w.host("2s");
    // Warm: the first job compiles nothing further and shows the host runs.
    let warm = w.ended(&w.enqueue(3)).await;
    assert_eq!(warm.state, JobState::Completed, "{:?}", warm.last_error);

    let release = w.api.hold_next();
    let id = w.enqueue(1);
    w.api.wait_sent(2, Duration::from_secs(30)).await;
    first.sigkill();
    first.wait_exit(Duration::from_secs(10));
    drop(release);
    let _second = w.host("2s");
    let job = w.ended(&id).await;
    assert_eq!(job.state, JobState::Completed, "{:?}", job.last_error);
    assert_eq!(job.history.len(), 2, "run twice: {:?}", job.history);
    let to_ada: Vec<_> = w
        .api
        .sent()
        .into_iter()
        .filter(|e| e.body["to"] == "ada@example.com")
        .collect();
    assert_eq!(to_ada.len(), 1, "one email although the job ran twice");
    assert!(
        w.api.requests() >= 3,
        "the second run asked the provider again"
    );
    let rows = w.log_rows().await;
    assert_eq!(
        rows.iter().filter(|(job, _, _)| *job == id).count(),
        1,
        "{rows:?}"
    );
}

/// The provider answers 500 twice, then sends: the job is retried with its backoff and one
/// email goes out. Then a 400: the job is dead-lettered at once, and the alert hook hears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_is_retried_and_a_4xx_dead_letters_with_an_alert() {
    let w = world().await;
    w.deploy(Lang::Rust);
    let _host = w.host("30s");
    w.api.script(&[500, 500]);
    let job = w.ended(&w.enqueue(1)).await;
    assert_eq!(job.state, JobState::Completed, "{:?}", job.last_error);
    assert_eq!(job.history.len(), 3, "two retries: {:?}", job.history);
    assert_eq!(w.api.sent().len(), 1);
    assert_eq!(w.api.requests(), 3);

    w.api.script(&[400]);
    let dead = w.ended(&w.enqueue(3)).await;
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.history.len(), 1, "a 4xx is not retried");
    assert!(
        dead.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("400"),
        "{:?}",
        dead.last_error
    );
    assert_eq!(w.api.sent().len(), 1, "nothing sent to Cy");
    assert!(w.log_rows().await.iter().all(|(_, user, _)| *user == 1));
    eventually("the dead-letter alert", Duration::from_secs(30), || async {
        w.hook
            .seen()
            .iter()
            .any(|s| String::from_utf8_lossy(&s.body).contains(&dead.id))
            .then_some(())
    })
    .await;
}

/// The database URL (and its password) and the provider's key stay on the hosts: not in
/// Redis, not in a host's log, not in the API's answers or `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_url_and_the_api_key_stay_on_the_hosts() {
    let w = world().await;
    w.deploy(Lang::Rust);
    let http = crate::support::free_loopback_addr();
    let db_url = w.pg.url();
    let host = HostProcess::builder(&w.redis.url())
        .envs(&[
            ("WASMQ_SECRET_APP_DB_URL", db_url.as_str()),
            ("WASMQ_SECRET_EMAIL_API_KEY", API_KEY),
            ("RUST_LOG", "trace"),
        ])
        .args(["--queues", Q, "--http", &http])
        .start();
    let job = w.ended(&w.enqueue(1)).await;
    assert_eq!(job.state, JobState::Completed, "{:?}", job.last_error);
    let secrets = [db_url.as_str(), w.pg.password(), API_KEY];
    let mut seen = String::new();
    for (key, value) in w.redis.snapshot().await {
        seen.push_str(&key);
        seen.push_str(&String::from_utf8_lossy(&value));
    }
    for path in [
        "/metrics",
        "/api/handlers",
        &format!("/api/queues/{Q}/jobs/{}", job.id),
    ] {
        let body = reqwest::get(format!("http://{http}{path}"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        seen.push_str(&body);
    }
    seen.push_str(&host.log_text());
    for secret in secrets {
        assert!(!seen.contains(secret), "{secret:?} leaked");
    }
}
