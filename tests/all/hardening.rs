//! What an outside attack on the CLI found, each as the behaviour that now holds: input that
//! names nothing, sizes no host can run, payloads over a queue's limit, a secret in a file
//! others can read, and job contents printed to a terminal.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use wasmq::queue::{JobState, NewJob, QueueConfig};

use crate::support::cli::{ok, wasmq};
use crate::support::eventually;
use crate::support::guests;
use crate::support::host::HostProcess;
use crate::support::redis::RedisServer;

const Q: &str = "hardened";

/// `wasmq run <args> --redis <url>`, expected to stop at once; its output.
fn run_refused(redis: &RedisServer, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_wasmq"))
        .arg("run")
        .args(args)
        .args(["--redis", &redis.url()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "wasmq run {args:?} started: {out:?}");
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn invalid_handler_names_are_refused_from_flags_and_the_config_file() {
    let redis = RedisServer::start();
    let echo = guests::rust("echo");
    let echo = echo.to_str().unwrap();
    for name in ["bad name", "tab\there", "\u{1b}[31mred"] {
        let flag = format!("{name}={echo}");
        let out = run_refused(&redis, &["--queues", Q, "--handler", &flag]);
        assert!(stderr(&out).contains("handler name"), "{name:?}: {out:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wasmq.toml");
    std::fs::write(&config, format!("[handlers.\"a b\"]\npath = {echo:?}\n")).unwrap();
    let out = run_refused(
        &redis,
        &["--queues", Q, "--config", config.to_str().unwrap()],
    );
    assert!(stderr(&out).contains("handler name"), "{out:?}");
}

#[tokio::test]
async fn a_queue_table_for_a_queue_the_host_does_not_serve_is_refused() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wasmq.toml");
    std::fs::write(&config, "queues = [\"a\"]\n[queue.b]\nconcurrency = 2\n").unwrap();
    let out = run_refused(&redis, &["--config", config.to_str().unwrap()]);
    assert!(stderr(&out).contains("[queue.b]"), "{out:?}");
    assert!(stderr(&out).contains("does not serve"), "{out:?}");
}

/// Starts a host with `toml` as its config file at `mode`; its log once it runs.
async fn log_of_host_with_config(redis: &RedisServer, toml: &str, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wasmq.toml");
    std::fs::write(&config, toml).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(mode)).unwrap();
    let host = HostProcess::builder(&redis.url())
        .args([
            "--queues",
            Q,
            "--no-cache",
            "--config",
            config.to_str().unwrap(),
        ])
        .start();
    eventually("the host to start", Duration::from_secs(30), || {
        let log = host.log_text();
        async move { log.contains("wasmq host running").then_some(log) }
    })
    .await
}

#[tokio::test]
async fn a_config_file_with_the_api_token_that_everyone_can_read_is_warned_about() {
    let redis = RedisServer::start();
    let toml = "api_token = \"tok-0123456789\"\n";
    let warning = "every user of this machine can read it";
    let open = log_of_host_with_config(&redis, toml, 0o644).await;
    assert!(open.contains(warning), "{open}");
    assert!(open.contains("chmod 600"), "{open}");
    assert!(!open.contains("tok-0123456789"), "{open}");
    let private = log_of_host_with_config(&redis, toml, 0o600).await;
    assert!(!private.contains(warning), "{private}");
    let no_secret = log_of_host_with_config(&redis, "batch = 8\n", 0o644).await;
    assert!(!no_secret.contains(warning), "{no_secret}");
}

#[tokio::test]
async fn job_prints_control_characters_escaped() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let hostile = "\u{1b}]0;pwned\u{7}\u{1b}[2J\rover\u{202e}txt";
    let id = client
        .enqueue(Q, &NewJob::new("h", hostile.as_bytes().to_vec()))
        .await
        .unwrap()
        .id;
    let out = ok(&wasmq(&redis, &["job", Q, &id]));
    assert!(!out.contains('\u{1b}'), "{out:?}");
    assert!(!out.contains('\r'), "{out:?}");
    assert!(!out.contains('\u{202e}'), "{out:?}");
    assert!(
        out.contains(r"\u{1b}]0;pwned\u{7}\u{1b}[2J\u{d}over\u{202e}txt"),
        "{out}"
    );
}

/// Bytes Redis has read from its clients since it started.
async fn redis_input_bytes(redis: &RedisServer) -> u64 {
    let mut conn = redis.connection().await;
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| line.strip_prefix("total_net_input_bytes:"))
        .map(|n| n.trim().parse::<u64>().unwrap())
        .sum()
}

#[tokio::test]
async fn an_oversize_payload_file_is_refused_before_it_is_sent() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(64 * 1024 * 1024)
        .unwrap();
    let before = redis_input_bytes(&redis).await;
    let out = wasmq(
        &redis,
        &["enqueue", Q, "h", "--payload-file", big.to_str().unwrap()],
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("over queue"), "{out:?}");
    let sent = redis_input_bytes(&redis).await - before;
    assert!(sent < 64 * 1024, "{sent} bytes reached Redis");
    assert_eq!(client.counts(Q).await.unwrap().get(JobState::Waiting), 0);
    // One that fits goes in.
    let small = dir.path().join("small.bin");
    std::fs::write(&small, b"fits").unwrap();
    let id = ok(&wasmq(
        &redis,
        &["enqueue", Q, "h", "--payload-file", small.to_str().unwrap()],
    ));
    let job = client.get(Q, id.trim()).await.unwrap().unwrap();
    assert_eq!(job.payload, b"fits");
}

#[tokio::test]
async fn a_schedule_whose_payload_is_over_the_queue_limit_is_refused_at_add() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let config = QueueConfig {
        max_payload_bytes: 100,
        ..QueueConfig::default()
    };
    client.set_config(Q, &config).await.unwrap();
    let add = |payload: &str| {
        wasmq(
            &redis,
            &[
                "schedule",
                "add",
                "nightly",
                "--cron",
                "0 3 * * *",
                "--queue",
                Q,
                "--handler",
                "h",
                "--payload",
                payload,
            ],
        )
    };
    let out = add(&"x".repeat(101));
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("over the limit of queue"), "{out:?}");
    assert!(ok(&wasmq(&redis, &["schedule", "list"])).contains("no schedules"));
    ok(&add(&"x".repeat(100)));
}

#[tokio::test]
async fn a_memory_cap_no_host_can_run_is_refused_at_deploy() {
    let redis = RedisServer::start();
    let echo = guests::rust("echo");
    let before = redis.snapshot().await;
    let out = wasmq(
        &redis,
        &[
            "handler",
            "deploy",
            "big",
            echo.to_str().unwrap(),
            "--memory",
            "1TB",
        ],
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains("over the most a host runs"),
        "{out:?}"
    );
    assert_eq!(redis.snapshot().await, before);
}

#[tokio::test]
async fn a_hosts_refusal_of_a_version_is_logged_once() {
    let redis = RedisServer::start();
    let echo = guests::rust("echo");
    let echo = echo.to_str().unwrap();
    let host = HostProcess::builder(&redis.url())
        .args(["--queues", Q, "--no-cache", "--memory-budget", "64MiB"])
        .start();
    // Over this host's budget: refused here (another host may run it).
    ok(&wasmq(
        &redis,
        &["handler", "deploy", "big", echo, "--memory", "128MiB"],
    ));
    // Registry changes after the refusal.
    for timeout in ["1s", "2s", "3s"] {
        ok(&wasmq(
            &redis,
            &["handler", "deploy", "small", echo, "--timeout", timeout],
        ));
    }
    eventually(
        "the third version of small",
        Duration::from_secs(30),
        || {
            let log = host.log_text();
            async move {
                log.lines()
                    .any(|l| l.contains("handler version installed") && l.contains("version=3"))
                    .then_some(())
            }
        },
    )
    .await;
    let log = host.log_text();
    assert_eq!(log.matches("refused on this host").count(), 1, "{log}");
}
