//! Shared test helpers: guest components, private redis-server processes, the wasmq binary.

#![allow(dead_code)]

pub mod guests;
pub mod redis;
