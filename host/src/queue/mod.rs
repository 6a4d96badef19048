//! The Redis protocol for jobs: key names, one Lua script per state transition, the job model,
//! and the [`Client`] that producers and workers use. The written contract is
//! `docs/protocol.md`; a producer in any language can enqueue from it alone.
//!
//! - [`NewJob`] / [`JobOptions`] - a job to enqueue: handler, payload, priority, delay, id,
//!   attempts, [`Backoff`], timeout.
//! - [`Job`] / [`JobState`] / [`Attempt`] - a stored job, its state and its attempt history.
//! - [`Client`] - enqueue, inspect, DLQ, pause; and for workers fetch (lease), extend,
//!   complete, complete-and-fetch (both in one call), fail, release, recover expired leases.
//! - [`QueueKeys`] - the key names of one queue, all under the hash tag `{<queue>}`.
//! - [`Monitor`] - watching queues for alerts: a consumer group over the events streams,
//!   the backlog (waiting count, oldest waiting job), the per-queue alert state.
//! - [`Child`], [`Suspension`] - what durable workflows write: child jobs (delivered through
//!   the queue's outbox), durable steps ([`Client::save_step`]) and sleeps ([`Client::suspend`]).
//! - [`CheckReport`] - what [`Client::check`] (`wasmq queue check`) found out of step in a
//!   queue's keys (dangling ids, malformed jobs, jobs in no set or two), and repaired.
//! - [`StepSaves`], [`RecentAttempts`] - bounded reads for the dashboard's run timeline and
//!   duration percentiles ([`Client::step_saves`], [`Client::recent_attempts`]).
//! - [`JobSearch`], [`SearchPage`] - finding jobs by state, handler, group, id prefix, payload
//!   text and time, a page at a time from a cursor, each page's Redis work bounded
//!   ([`Client::search`]).
//! - [`RateLimit`] - at most N job starts per window, per queue or per group (`QueueConfig`),
//!   enforced by fetch across every host.
//!
//! **Invariant:** this is the only module that speaks to Redis about jobs, and every state
//! change is one script call, so a crash between two commands cannot lose or duplicate a job.
//! Deadlines and lease expiries use Redis `TIME`, never a host clock.
//!
//! Jobs run at least once: a lease that is not completed, failed or released in time expires
//! and the job runs again (`recover_expired`). It is worse to lose a job than to run it twice.

mod ack;
mod check;
mod children;
mod client;
mod config;
mod dead;
mod error;
mod inspect;
mod job;
mod keys;
mod kv;
mod lease;
mod limit;
mod monitor;
mod produce;
mod reply;
mod scripts;
mod search;
mod steps;
mod timeline;

pub use ack::{
    AttemptRecord, CompleteReport, Completion, FailOutcome, FailReport, Failure, RecordsAttempt,
};
pub use check::{CHECK_BATCH, CheckReport, Finding};
pub(crate) use children::encode_children;
pub use children::{Child, OutboxReport};
pub use client::{Client, MAX_BULK, Waiter};
pub use config::QueueConfig;
pub use dead::DlqReport;
pub use error::QueueError;
pub use inspect::{Counts, StreamEvent};
pub use job::{
    Attempt, Backoff, CallEntry, DEFAULT_COMPLETED_KEEP, DEFAULT_DEAD_STEP_BYTES,
    DEFAULT_EVENTS_MAXLEN, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_MAX_RESULT_BYTES, Debounce, Dedupe, Expiry, Job, JobOptions, JobState,
    MAX_ATTEMPT_CALLS, MAX_ATTEMPT_LOG_LEN, MAX_ATTEMPTS, MAX_KEY_MS, MAX_MS, MAX_NAME_LEN,
    MAX_PRIORITY, MIN_PRIORITY, NewJob, OwnPolicy, RetryPolicy, RunAt, generate_job_id,
    system_time, truncate_utf8, unix_ms, validate_handler_name, validate_job_id,
    validate_queue_name, validate_trace_context, validate_traceparent, validate_tracestate,
};
pub use keys::QueueKeys;
pub use kv::bucket_keys;
pub use lease::{Extended, Fetched, Lease, LeaseRejection, LeasedJob, Released};
pub use limit::{MAX_RATE, RateLimit, ThrottleStart};
pub use monitor::{Backlog, DeadJob, GroupRead, Monitor, ReadFrom, is_missing_group};
pub use produce::{
    CancelBy, CancelFilter, CancelOutcome, CancelPage, EnqueueOutcome, Enqueued, MAX_CANCEL_PAGE,
};
pub use scripts::{COUNTS_LUA, ENQUEUE_LUA, LIB_LUA};
pub use search::{
    JobSearch, MAX_SEARCH_TEXT, MalformedMatch, SEARCH_LIMIT_DEFAULT, SEARCH_LIMIT_MAX,
    SEARCH_SCAN_DEFAULT, SEARCH_SCAN_MAX, SearchPage, TimeField, TimePoint,
};
pub use steps::{DeadStepsReport, StepSave, SuspendReport, Suspension};
pub use timeline::{MAX_HISTORIES_BYTES, MAX_HISTORY_BYTES, RecentAttempts, SavedStep, StepSaves};
