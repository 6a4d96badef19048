//! Secrets stay out of what wasmq prints: every command that takes a Redis URL is run against an
//! unreachable Redis with a password in the URL (by flag and by environment), every `--help` is
//! printed with secrets in the environment, and a host with an alert webhook is run with its
//! log at INFO; no output may hold the password, the webhook's credentials or the API token.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::eventually;
use crate::support::host::HostProcess;
use crate::support::redis::RedisServer;

const REDIS_PASSWORD: &str = "Passw0rd-redis-7a1c";
const HOOK_PASSWORD: &str = "Passw0rd-hook-93be";
const HOOK_TOKEN: &str = "hooktoken-5d2f";
const API_TOKEN: &str = "api-token-0f4e8b";
const ALERT_SECRET: &str = "alert-secret-c3d9";
const SMTP_PASSWORD: &str = "smtp-password-8a61";
const SECRETS: &[&str] = &[
    REDIS_PASSWORD,
    HOOK_PASSWORD,
    HOOK_TOKEN,
    API_TOKEN,
    ALERT_SECRET,
    SMTP_PASSWORD,
];

/// A Redis URL nobody listens on, with a password.
fn unreachable_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("redis://app:{REDIS_PASSWORD}@127.0.0.1:{port}/0")
}

fn webhook() -> String {
    format!("http://hooks:{HOOK_PASSWORD}@127.0.0.1:9/services/T0/{HOOK_TOKEN}")
}

/// Fails the test when any output of `out` holds a secret.
#[track_caller]
fn assert_no_secret(what: &str, out: &Output) {
    for text in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(text);
        for secret in SECRETS {
            assert!(!text.contains(secret), "{what} printed {secret:?}:\n{text}");
        }
    }
}

/// `wasmq <args>` with every secret in the environment, RUST_LOG at debug.
fn wasmq(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wasmq"))
        .args(args)
        .env("WASMQ_API_TOKEN", API_TOKEN)
        .env("WASMQ_ALERT_WEBHOOK", webhook())
        .env("WASMQ_ALERT_SECRET", ALERT_SECRET)
        .env("WASMQ_SECRET_SMTP_PASSWORD", SMTP_PASSWORD)
        .env("RUST_LOG", "debug")
        .env_remove("WASMQ_HTTP")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn commands_that_cannot_reach_redis_do_not_print_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("h.wasm");
    std::fs::write(&wasm, b"\0asm\x0d\0\x01\0").unwrap();
    let wasm = wasm.to_str().unwrap();
    let commands: &[&[&str]] = &[
        &["serve", "--http", "127.0.0.1:0"],
        &["run", "--queues", "q", "--no-cache"],
        &["queue", "stats", "q"],
        &["queue", "pause", "q"],
        &["enqueue", "q", "h", "--payload", "x"],
        &["job", "q", "some-id"],
        &["dlq", "list", "q"],
        &["handler", "deploy", "h", wasm],
        &["handler", "list"],
        &["schedule", "list"],
        &["event", "send", "e"],
    ];
    for args in commands {
        let url = unreachable_url();
        let by_flag = wasmq(&[args, &["--redis", &url][..]].concat(), &[]);
        let by_env = wasmq(args, &[("WASMQ_REDIS_URL", &url)]);
        for (how, out) in [("--redis", &by_flag), ("WASMQ_REDIS_URL", &by_env)] {
            let what = format!("wasmq {} ({how})", args.join(" "));
            assert!(!out.status.success(), "{what} succeeded: {out:?}");
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("127.0.0.1"),
                "{what} does not say which Redis it could not reach: {out:?}"
            );
            assert_no_secret(&what, out);
        }
    }
}

#[test]
fn help_does_not_show_secret_environment_values() {
    let url = unreachable_url();
    let env = [("WASMQ_REDIS_URL", url.as_str())];
    for args in [
        &["run", "--help"][..],
        &["serve", "--help"],
        &["enqueue", "--help"],
        &["queue", "stats", "--help"],
        &["handler", "deploy", "--help"],
        &["schedule", "add", "--help"],
        &["event", "send", "--help"],
    ] {
        let out = wasmq(args, &env);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("WASMQ_REDIS_URL"),
            "{args:?}"
        );
        assert_no_secret(&format!("wasmq {}", args.join(" ")), &out);
    }
}

#[tokio::test]
async fn a_host_with_alerts_logs_the_webhook_without_its_credentials() {
    let redis = RedisServer::start();
    let host = HostProcess::builder(&redis.url())
        .envs(&[("RUST_LOG", "debug"), ("WASMQ_ALERT_SECRET", ALERT_SECRET)])
        .args(["--queues", "q", "--no-cache", "--alert-webhook", &webhook()])
        .start();
    let log = eventually(
        "the host to turn alerts on",
        Duration::from_secs(30),
        || {
            let log = host.log_text();
            async move { log.contains("alerts on").then_some(log) }
        },
    )
    .await;
    assert!(log.contains("http://127.0.0.1:9/..."), "{log}");
    for secret in SECRETS {
        assert!(!log.contains(secret), "the host logged {secret:?}:\n{log}");
    }
}
