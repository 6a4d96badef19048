//! What the binary prints when it cannot start: each cause once (STYLE.md: a variant puts its
//! cause in its message or exposes it as `source`, never both, and `main` prints the chain),
//! and a Redis that is down reads as Redis being down, not as a bad configuration.

use std::net::TcpListener;
use std::process::{Command, Stdio};

use crate::support::free_loopback_addr;
use crate::support::guests::handler;
use crate::support::redis::RedisServer;

/// Runs `wasmq <args>` expecting it to refuse to start; returns its stderr.
fn refused(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wasmq"))
        .args(args)
        .env_remove("WASMQ_API_TOKEN")
        .env_remove("WASMQ_HTTP")
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[tokio::test]
async fn a_missing_handler_file_is_named_once_with_its_cause_once() {
    let redis = RedisServer::start();
    let stderr = refused(&[
        "run",
        "--redis",
        &redis.url(),
        "--queues",
        "q",
        "--handler",
        "echo=/nonexistent/echo.wasm",
    ]);
    assert!(
        stderr.contains("handler echo: reading /nonexistent/echo.wasm: No such file"),
        "{stderr}"
    );
    assert_eq!(count(&stderr, "No such file"), 1, "{stderr}");
    assert_eq!(count(&stderr, "/nonexistent/echo.wasm"), 1, "{stderr}");
    assert!(!stderr.contains("invalid configuration"), "{stderr}");

    let stderr = refused(&["exec", "/nonexistent/echo.wasm"]);
    assert_eq!(count(&stderr, "No such file"), 1, "{stderr}");
}

#[test]
fn redis_down_at_start_up_reads_as_redis_down_once() {
    // A port that was free a moment ago: nothing listens there.
    let addr = free_loopback_addr();
    let url = format!("redis://{addr}");
    let stderr = refused(&[
        "run",
        "--redis",
        &url,
        "--queues",
        "q",
        "--handler",
        &handler("echo", "echo"),
    ]);
    assert!(stderr.contains("connecting to redis"), "{stderr}");
    assert!(!stderr.contains("invalid configuration"), "{stderr}");
    assert_eq!(count(&stderr, "redis request failed"), 1, "{stderr}");
    assert_eq!(count(&stderr, "refused"), 1, "{stderr}");
}

#[tokio::test]
async fn a_busy_port_is_named_once_with_its_cause_once() {
    let redis = RedisServer::start();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let stderr = refused(&["serve", "--redis", &redis.url(), "--http", &addr]);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert_eq!(count(&stderr, "in use"), 1, "{stderr}");
    assert_eq!(count(&stderr, &addr), 1, "{stderr}");
}
