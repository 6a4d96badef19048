//! The one integration test binary: every suite is a module here, so it links once.
//! Helpers that start real processes (redis-server, the wasmq binary) and build the guest
//! components live in `support`.

#![allow(clippy::unwrap_used)]

mod alerts;
mod api;
mod cache;
mod calls;
mod cancel;
mod chaos;
mod children;
mod cluster;
mod compile;
mod corpus;
mod corruption;
mod costs;
mod dashboard;
mod dev;
mod errors;
mod events;
mod exec;
mod group_concurrency;
mod hardening;
mod kv;
mod languages;
mod logs;
mod memory;
mod metrics;
mod otel;
mod outbound;
mod queue;
mod rate_limit;
mod registry;
mod runtime;
mod schedules;
mod search;
mod secrets;
mod sql;
mod steps;
mod support;
mod timeline;
mod tls;
mod welcome;
mod worker;
