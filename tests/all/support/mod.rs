//! Shared test helpers: guest components, private redis-server processes, wasmq host
//! processes, a `wasmq serve` and its HTTP client, common queue set-up and waits, and polling
//! with a deadline.

#![allow(dead_code)]

pub mod api;
pub mod cli;
pub mod cluster;
pub mod email_api;
pub mod guests;
pub mod host;
pub mod http_server;
pub mod jobs;
pub mod otlp;
pub mod postgres;
pub mod redis;
pub mod smtp;
pub mod tools;

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `probe` until it yields a value, failing the test after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A loopback address with a port that was free a moment ago, for a server a test starts
/// (`--http`): the system picks the port, then it is let go for the server to take.
pub fn free_loopback_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free loopback port")
        .local_addr()
        .expect("its address")
        .port();
    format!("127.0.0.1:{port}")
}

/// The resident memory of process `pid` now (`VmRSS`) and at its peak so far (`VmHWM`), bytes.
pub fn resident(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read its status");
    let field = |name: &str| -> u64 {
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"));
        kib * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}
