//! wasmq: a worker host that takes background jobs from Redis and runs each job's handler as a
//! sandboxed WebAssembly component.
//!
//! The core concepts, one line each:
//! - [`Runtime`] - the wasmtime engine, linker and epoch ticker shared by every job of a host.
//! - [`Handler`] - a validated, compiled handler component, pre-linked so each job only
//!   instantiates it.
//! - [`ArtifactCache`] - compiled handlers on disk, so a restart loads them without compiling.
//! - [`JobInput`] - one attempt of one job as the handler sees it.
//! - [`JobLimits`] - the hard limits of one attempt: deadline, memory cap, fuel.
//! - [`capability::Grants`] - what a handler version may reach outside its sandbox (outbound
//!   HTTP to allow-listed hosts, config, secrets), resolved on a host into
//!   [`capability::Capabilities`] and given to a [`Handler`] with `with_capabilities`.
//! - [`Outcome`] - how an attempt ended: ok, guest retry/fail, a classified failure, or
//!   suspended at a durable sleep.
//! - [`WorkflowStore`] - where an attempt's durable steps are kept (the worker's is Redis).
//! - [`connection::RedisTarget`] - where Redis is: one server (`redis://`) or a Redis Cluster
//!   (`redis+cluster://`), and the one connection type every Redis user goes through.
//! - [`queue::Client`] - the Redis protocol for jobs: enqueue, fetch, complete, fail, DLQ.
//! - [`worker::Worker`] - the host behind `wasmq run`: fetch loop, slots, leases, shutdown.
//! - [`alerts::Alerts`] - alerts (a signed webhook, Slack, e-mail) on dead-lettered jobs and
//!   queue backlogs, retried.
//! - [`metrics::Metrics`] - the Prometheus metrics a host keeps, served at `/metrics`.
//! - [`events::send`] - an event starts every handler subscribed to its name, a job each.
//! - [`api::Server`] - the HTTP API (`wasmq serve`, `wasmq run --http`) and its OpenAPI document.
//!
//! The binary (`host/src/main.rs`) is a thin layer over [`cli`].

pub mod alerts;
pub mod api;
pub mod capability;
pub mod chain;
pub mod cli;
pub mod connection;
pub mod events;
pub mod local_redis;
pub mod metrics;
pub mod queue;
pub mod registry;
mod runtime;
pub mod schedule;
pub mod telemetry;
pub mod units;
pub mod worker;

pub use runtime::{
    ArtifactCache, Backlog, BoxFuture, CacheError, CacheLookup, ChildJob, CompileConfig,
    DEFAULT_COMPILE_MEMORY, DEFAULT_COMPILE_TIMEOUT, DEFAULT_MAX_JOB_STEP_BYTES, Handler, JobInput,
    JobLimits, LoadError, LoadSource, LogLine, LogSource, MAX_CHILDREN, MAX_CHILDREN_BYTES,
    MAX_RETURNED_BYTES, MAX_SLEEP, MAX_STEP_BYTES, MAX_STEPS, Outcome, OutcomeClass, RunReport,
    Runtime, RuntimeConfig, WorkflowStore, child_id, namespaced_child_id,
};
