//! Shared test helpers: guest components, private redis-server processes, wasmq host
//! processes, and polling with a deadline.

#![allow(dead_code)]

pub mod guests;
pub mod host;
pub mod redis;
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
