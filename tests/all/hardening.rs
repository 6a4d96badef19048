//! What an outside attack on the CLI found, each as the behaviour that now holds: input that
//! names nothing, sizes no host can run, payloads over a queue's limit, a secret in a file
//! others can read, and job contents printed to a terminal.

use std::process::{Command, Output, Stdio};

use crate::support::guests;
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
