//! Compile bombs (issue #20): a small component that takes gigabytes and minutes to compile is
//! refused within the compile limits by the deploy CLI, naming the limit, and nothing is
//! written.
//!
//! The bombs are scaled for CI: each test sets limits (hundreds of MB, seconds) that a bomb
//! passes within a few seconds, so no test compiles one for long.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::corpus::table::{BLOCK_BOMB_DEPTH, LOOP_BOMB_DEPTH, block_bomb, loop_bomb};
use crate::support::cli::{ok, wasmq};
use crate::support::guests;
use crate::support::redis::RedisServer;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn a_compile_bomb_is_refused_at_deploy_naming_the_limit_and_nothing_is_written() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let memory_bomb = write(dir.path(), "loops.wasm", &loop_bomb(LOOP_BOMB_DEPTH));
    let time_bomb = write(dir.path(), "blocks.wasm", &block_bomb(BLOCK_BOMB_DEPTH));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let before = runtime.block_on(redis.snapshot());

    let started = Instant::now();
    let out = wasmq(
        &redis,
        &[
            "handler",
            "deploy",
            "bomb",
            &memory_bomb,
            "--compile-memory",
            "256MiB",
            "--compile-timeout",
            "60s",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("compile memory limit (256.0 MiB"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let out = wasmq(
        &redis,
        &[
            "handler",
            "deploy",
            "bomb",
            &time_bomb,
            "--compile-memory",
            "512MiB",
            "--compile-timeout",
            "1s",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("compile time limit (1s"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    assert!(
        runtime.block_on(redis.snapshot()) == before,
        "a refused deploy wrote to Redis"
    );

    // The same limits let an ordinary handler through, at once.
    let echo = guests::rust("echo");
    let out = ok(&wasmq(
        &redis,
        &[
            "handler",
            "deploy",
            "greet",
            echo.to_str().unwrap(),
            "--compile-memory",
            "256MiB",
            "--compile-timeout",
            "20s",
        ],
    ));
    assert!(out.contains("deployed greet version 1"), "{out}");
}
