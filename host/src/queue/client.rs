//! [`Client`]: the Rust face of the protocol. Each method is one script call (one round trip)
//! or, for plain reads, one pipeline; batches go in one call, so a worker pays a round trip per
//! batch, not per job.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use redis::Value;

use super::error::{QueueError, Result};
use super::job::{
    Job, JobState, MAX_ATTEMPT_LOG_LEN, MAX_ERROR_LEN, NewJob, OwnPolicy, RetryPolicy,
    generate_job_id, truncate_utf8, unix_ms, validate_job_id, validate_traceparent,
    validate_tracestate,
};
use super::keys::QueueKeys;
use super::limit::RateLimit;
use super::reply::Reply;
use super::scripts::{Call, SCRIPTS};
use super::workflow::{Child, encode_children};
use crate::connection::{ConnectOptions, RedisConnection, RedisTarget};

/// Longest handler version label an attempt's history records.
pub(super) const MAX_VERSION_LEN: usize = 128;

/// Most jobs one call handles (enqueue_bulk, fetch, recover_expired, promote; the scripts
/// refuse more): one script call blocks Redis while it runs, so batches stay bounded.
pub const MAX_BULK: usize = 10_000;

/// How long a single call may take before the client gives up on the reply. Scripts are short;
/// a bulk enqueue of [`MAX_BULK`] jobs takes tens of milliseconds.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long past its own timeout a wake-up wait ([`Waiter::wait`]) may take to answer before
/// its connection is taken for dead.
const WAIT_MARGIN: Duration = Duration::from_secs(5);

/// A connection to the queues in one Redis or one Redis Cluster. Cheap to clone: clones share
/// one multiplexed connection (per cluster node), which reconnects by itself when Redis goes
/// away and comes back.
#[derive(Clone)]
pub struct Client {
    redis: RedisTarget,
    pub(super) conn: RedisConnection,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("redis", &self.redis.redacted_url())
            .finish_non_exhaustive()
    }
}

/// The result of enqueueing one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub id: String,
    /// False when a job with this id already existed: nothing was written.
    pub created: bool,
    /// The job's state (for an existing job, its current state).
    pub state: JobState,
}

/// The number of jobs in each state of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub waiting: u64,
    pub delayed: u64,
    pub active: u64,
    pub retry: u64,
    pub completed: u64,
    pub dead: u64,
    pub paused: bool,
}

impl Counts {
    pub fn get(&self, state: JobState) -> u64 {
        match state {
            JobState::Waiting => self.waiting,
            JobState::Delayed => self.delayed,
            JobState::Active => self.active,
            JobState::Retry => self.retry,
            JobState::Completed => self.completed,
            JobState::Dead => self.dead,
        }
    }
}

/// Per-queue settings, kept in the hash `wasmq:{q}:config` (see docs/protocol.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// Largest payload enqueue accepts.
    pub max_payload_bytes: u64,
    /// Largest result complete stores; a bigger one dead-letters its job.
    pub max_result_bytes: u64,
    /// Completed jobs kept, newest first; `None` keeps all, `Some(0)` keeps none.
    pub completed_keep: Option<u64>,
    /// Completed jobs older than this are deleted; `None` keeps them regardless of age.
    pub completed_max_age: Option<Duration>,
    /// Approximate length of the events stream; 0 turns events off.
    pub events_maxlen: u64,
    /// Most job starts per window in the whole queue, across every host; `None` is unlimited.
    pub rate: Option<RateLimit>,
    /// Most job starts per window in each group (jobs enqueued with a group); `None` is
    /// unlimited. Groups take turns whether limited or not.
    pub group_rate: Option<RateLimit>,
    /// Most bytes the durable steps of the queue's dead jobs may hold in all; past it those
    /// of the jobs that died first are deleted (the jobs stay, marked `steps_dropped`).
    /// `None`: no cap.
    pub dead_step_bytes: Option<u64>,
    /// Most jobs not finished (waiting, delayed, retry, active: the backlog) that enqueue
    /// accepts: a call whose new jobs
    /// would pass it is refused with [`QueueError::QueueFull`]. `None` is unlimited.
    pub max_waiting: Option<u64>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_payload_bytes: super::job::DEFAULT_MAX_PAYLOAD_BYTES,
            max_result_bytes: super::job::DEFAULT_MAX_RESULT_BYTES,
            completed_keep: Some(super::job::DEFAULT_COMPLETED_KEEP.unsigned_abs()),
            completed_max_age: None,
            events_maxlen: super::job::DEFAULT_EVENTS_MAXLEN,
            rate: None,
            group_rate: None,
            dead_step_bytes: Some(super::job::DEFAULT_DEAD_STEP_BYTES),
            max_waiting: None,
        }
    }
}

/// A job leased to this host by [`Client::fetch`]: what the handler needs, plus the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedJob {
    pub id: String,
    pub queue: String,
    pub handler: String,
    pub payload: Vec<u8>,
    /// 1-based number of this attempt.
    pub attempt: u32,
    /// The attempts the job hash holds (see [`Job::max_attempts`]); a handler's retry policy
    /// may replace it for jobs whose `own_policy` leaves attempts out
    /// ([`RetryPolicy::max_attempts_for`]).
    pub max_attempts: u32,
    /// What of its retry policy the job's producer set.
    pub own_policy: OwnPolicy,
    /// Per-attempt deadline; `None` means the handler's default.
    pub timeout: Option<Duration>,
    pub priority: i32,
    pub created_at_ms: u64,
    /// The W3C trace context the job was enqueued with (valid, or `None`), which the
    /// attempt's spans continue and its child jobs inherit.
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// The lease token: complete, fail, extend and release must present it.
    pub token: String,
    /// When the lease runs out (Redis clock, ms since the epoch) unless extended.
    pub lease_expires_at_ms: u64,
    /// Its generation: 0 for a job a producer enqueued, its parent's plus one for a child
    /// job (the job field `depth`; absent, as in jobs older than it, reads as 0).
    pub depth: u32,
}

impl LeasedJob {
    /// The job's lease, for [`Client::extend`] and [`Client::release`].
    pub fn lease(&self) -> Lease {
        Lease {
            id: self.id.clone(),
            token: self.token.clone(),
        }
    }
}

/// A job id and the token of the lease on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    pub id: String,
    pub token: String,
}

/// One batch from [`Client::fetch_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub jobs: Vec<LeasedJob>,
    /// Redis time of the fetch, ms since the epoch.
    pub now_ms: u64,
    /// When fewer jobs than asked were leased: the earliest time more may be leased (a
    /// delayed or retry job is due, or a rate limit's window frees), so an idle worker knows
    /// how long it may sleep.
    pub next_due_ms: Option<u64>,
    /// Waiting ids without a job hash behind them, or left over from a job that is in its own
    /// state's set, dropped (the keyspace was edited by hand). A malformed job is not dropped
    /// but moved to the dead-letter queue (docs/protocol.md, "Malformed jobs").
    pub dropped: u64,
    /// Whether a rate limit (the queue's, or a group's) held back jobs that were waiting.
    pub rate_limited: bool,
}

impl Fetched {
    /// Decodes `fetch.lua`'s reply to a fetch that sent the lease token `token`: what
    /// [`Client::fetch_batch`] does with it (and [`Client::complete_and_fetch`] with the `fetched`
    /// part of its reply). Anything that is not the documented shape is an
    /// [`QueueError::UnexpectedReply`], never a panic: `fuzz/` feeds it arbitrary replies.
    pub fn decode(value: Value, queue: &str, token: &str) -> Result<Fetched> {
        fetched(&Reply::of("fetch"), value, queue, token)
    }
}

/// A successful attempt, for [`Client::complete`].
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub id: String,
    pub token: String,
    pub result: Vec<u8>,
    /// The handler version that ran the attempt, for its history entry ('' when unknown).
    pub version: String,
    /// What the attempt logged, and its last progress, for its history entry.
    pub logs: String,
    pub progress: Option<u8>,
    /// Child jobs to write with the completion (through the queue's outbox; see
    /// docs/workflows.md), each with its id set.
    pub children: Vec<Child>,
    /// `children` as the outbox stores them, when encoded ahead
    /// ([`Completion::encode_children`]).
    encoded_children: Option<Vec<u8>>,
}

impl Completion {
    pub fn new(job: &LeasedJob, result: impl Into<Vec<u8>>) -> Completion {
        Completion {
            id: job.id.clone(),
            token: job.token.clone(),
            result: result.into(),
            version: String::new(),
            logs: String::new(),
            progress: None,
            children: Vec::new(),
            encoded_children: None,
        }
    }

    /// Child jobs to enqueue if, and only if, this completion is recorded.
    pub fn with_children(mut self, children: Vec<Child>) -> Completion {
        self.children = children;
        self.encoded_children = None;
        self
    }

    /// `encoded`: the children as the outbox stores them (`encode_children` of exactly
    /// `self.children`), encoded ahead so that the call recording a batch of completions
    /// only copies them. `None` leaves the encoding to that call.
    pub(crate) fn with_encoded_children(mut self, encoded: Option<Vec<u8>>) -> Completion {
        self.encoded_children = encoded;
        self
    }

    /// Records what the attempt logged (cut to [`MAX_ATTEMPT_LOG_LEN`] bytes) and its last
    /// progress.
    pub fn with_logs(mut self, logs: impl Into<String>, progress: Option<u8>) -> Completion {
        self.logs = logs.into();
        self.progress = progress;
        self
    }

    /// Records which handler version ran the attempt.
    pub fn with_version(mut self, version: impl Into<String>) -> Completion {
        self.version = version.into();
        self
    }
}

/// A failed attempt, for [`Client::fail`].
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub id: String,
    pub token: String,
    /// Outcome class, as the runtime names it: `retry`, `fail`, `timeout`, `trap`, `memory_limit`...
    pub outcome: String,
    pub error: String,
    /// A permanent failure dead-letters the job at once, whatever attempts are left.
    pub permanent: bool,
    /// The handler version that ran the attempt, for its history entry ('' when unknown).
    pub version: String,
    /// The handler's retry policy, applied to what the job did not set itself.
    pub policy: RetryPolicy,
    /// What the attempt logged, and its last progress, for its history entry.
    pub logs: String,
    pub progress: Option<u8>,
}

impl Failure {
    pub fn new(job: &LeasedJob, outcome: impl Into<String>, error: impl Into<String>) -> Failure {
        Failure {
            id: job.id.clone(),
            token: job.token.clone(),
            outcome: outcome.into(),
            error: error.into(),
            permanent: false,
            version: String::new(),
            policy: RetryPolicy::default(),
            logs: String::new(),
            progress: None,
        }
    }

    /// Records what the attempt logged (cut to [`MAX_ATTEMPT_LOG_LEN`] bytes) and its last
    /// progress.
    pub fn with_logs(mut self, logs: impl Into<String>, progress: Option<u8>) -> Failure {
        self.logs = logs.into();
        self.progress = progress;
        self
    }

    /// Records which handler version ran the attempt, and applies that handler's retry policy.
    pub fn with_handler(mut self, version: impl Into<String>, policy: RetryPolicy) -> Failure {
        self.version = version.into();
        self.policy = policy;
        self
    }

    /// Marks the failure permanent: straight to the dead-letter queue.
    pub fn permanent(mut self) -> Failure {
        self.permanent = true;
        self
    }
}

/// Why a lease-checked call (complete, fail, extend, release) left a job alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseRejection {
    /// No such job (completed and deleted by retention, cancelled, purged).
    NotFound,
    /// The job is no longer active: its lease expired and it was recovered, or it finished.
    NotActive(String),
    /// The job is active under another lease: someone else holds it now.
    TokenMismatch,
}

impl LeaseRejection {
    pub(super) fn parse(reason: &str) -> LeaseRejection {
        match reason {
            "not_found" => LeaseRejection::NotFound,
            "token_mismatch" => LeaseRejection::TokenMismatch,
            other => LeaseRejection::NotActive(
                other
                    .strip_prefix("not_active:")
                    .unwrap_or(other)
                    .to_string(),
            ),
        }
    }
}

/// Outcome of [`Client::complete`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CompleteReport {
    pub completed: Vec<String>,
    pub rejected: Vec<(String, LeaseRejection)>,
    /// Jobs whose result was over `max_result_bytes`: dead-lettered, outcome `result_too_large`.
    pub result_too_large: Vec<String>,
}

/// Where a failed (or lease-expired) job went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailOutcome {
    /// Back to `retry` (or straight to `waiting` when the backoff is 0), due at this time.
    Retry { run_at_ms: u64 },
    /// To the dead-letter queue.
    Dead,
}

/// Outcome of [`Client::fail`] and [`Client::recover_expired`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FailReport {
    pub outcomes: Vec<(String, FailOutcome)>,
    pub rejected: Vec<(String, LeaseRejection)>,
}

/// Outcome of [`Client::extend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extended {
    /// The new lease expiry of the jobs that were extended.
    pub lease_expires_at_ms: u64,
    pub rejected: Vec<(String, LeaseRejection)>,
}

/// Outcome of [`Client::release`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Released {
    pub released: Vec<String>,
    pub rejected: Vec<(String, LeaseRejection)>,
}

/// Outcome of replay, purge: the jobs acted on, and the others with the state they are in
/// (`not_found` when there is no such job).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DlqReport {
    pub done: Vec<String>,
    pub skipped: Vec<(String, String)>,
}

/// Outcome of cancelling one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled,
    NotFound,
    /// The job is active, completed or dead: nothing to cancel.
    NotCancellable(JobState),
}

/// One entry of a queue's events stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvent {
    /// The stream entry id (`<ms>-<n>`); pass it to [`Client::events`] to read on from here.
    pub stream_id: String,
    /// enqueued, promoted, active, completed, retried, dead, released, cancelled, replayed,
    /// purged, paused, resumed.
    pub event: String,
    /// `(job id, attempt)` for every job the transition moved, at most 100: a call that moves
    /// more writes several entries.
    pub jobs: Vec<(String, u32)>,
}

/// Blocks until a queue has work, on its own connection (a blocking BLPOP would stall every
/// other call sharing a multiplexed connection). Get one from [`Client::waiter`].
pub struct Waiter {
    redis: RedisTarget,
    conn: Option<RedisConnection>,
}

impl Waiter {
    /// Waits until an enqueue (or another wake-up, see docs/protocol.md) signals `queue`, or
    /// `timeout` passes. Returns whether a wake-up arrived. Wake-ups are hints: fetch anyway
    /// on timeout, since a delayed job may have come due.
    pub async fn wait(&mut self, queue: &str, timeout: Duration) -> Result<bool> {
        let keys = QueueKeys::new(queue)?;
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let conn = self.redis.connect_blocking().await?;
                self.conn.insert(conn)
            }
        };
        let seconds = timeout.as_secs_f64().max(0.001);
        // The connection has no response timeout (the server holds BLPOP for `timeout`), so
        // a server that never answers (hung, or a cluster node that restarted under a
        // request the client still waits on) is cut here instead of stalling the fetcher.
        let reply = tokio::time::timeout(
            timeout.saturating_add(WAIT_MARGIN),
            redis::cmd("BLPOP")
                .arg(keys.wake())
                .arg(format!("{seconds:.3}"))
                .query_async::<Option<(String, String)>>(conn),
        )
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer to BLPOP within {WAIT_MARGIN:?} past its timeout"),
            )))
        });
        match reply {
            Ok(popped) => Ok(popped.is_some()),
            Err(err) => {
                // Start over on a fresh connection next time.
                self.conn = None;
                Err(err.into())
            }
        }
    }
}

fn random_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A seed for the scripts' jitter; Redis's `math.randomseed` takes a 32-bit signed integer.
fn random_seed() -> u32 {
    rand::random::<u32>() >> 1
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Client {
    /// Connects to Redis at `url`: `redis://host:port/db` for one server,
    /// `redis+cluster://host:port,host:port` for a Redis Cluster (`crate::connection`).
    pub async fn connect(url: &str) -> Result<Client> {
        let redis = RedisTarget::open(url)?;
        // Few retries per (re)connect: a refused connection fails fast (the CLI answers at
        // once), and the manager tries again on the next call anyway.
        let conn = redis
            .connect(ConnectOptions {
                response_timeout: Some(RESPONSE_TIMEOUT),
                connection_timeout: Duration::from_secs(5),
                retries: 2,
            })
            .await?;
        Ok(Client { redis, conn })
    }

    /// A [`Waiter`] with its own connection, for idle workers.
    pub fn waiter(&self) -> Waiter {
        Waiter {
            redis: self.redis.clone(),
            conn: None,
        }
    }

    pub(super) async fn invoke(&self, invocation: &Call<'_>) -> Result<Value> {
        let mut conn = self.conn.clone();
        invocation
            .invoke(&mut conn)
            .await
            .map_err(QueueError::from_script)
    }

    pub(super) fn invocation<'a>(target: impl Into<Call<'a>>, keys: &[String]) -> Call<'a> {
        let mut invocation = target.into();
        for key in keys {
            invocation.key(key);
        }
        invocation
    }

    // ----- producers ------------------------------------------------------------------------

    /// Enqueues one job. With a caller-given id that already exists, writes nothing and
    /// returns the existing job's state with `created: false`.
    pub async fn enqueue(&self, queue: &str, job: &NewJob) -> Result<Enqueued> {
        let (job, span) = crate::telemetry::send_for_enqueue(queue, job);
        let mut out = span.ended(self.enqueue_bulk(queue, std::slice::from_ref(&*job)).await)?;
        out.pop()
            .ok_or_else(|| Reply::of("enqueue").error("no reply for the job"))
    }

    /// Enqueues up to [`MAX_BULK`] jobs in one atomic call: if any job is invalid or oversize,
    /// nothing is written. Replies are in the order of `jobs`.
    pub async fn enqueue_bulk(&self, queue: &str, jobs: &[NewJob]) -> Result<Vec<Enqueued>> {
        let keys = QueueKeys::new(queue)?;
        if jobs.len() > MAX_BULK {
            return Err(QueueError::InvalidArgument(format!(
                "enqueue_bulk takes at most {MAX_BULK} jobs, got {}",
                jobs.len()
            )));
        }
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let now = unix_ms(SystemTime::now());
        let mut invocation = Self::invocation(
            &SCRIPTS.enqueue,
            &[
                keys.job_prefix(),
                keys.config(),
                keys.waiting(),
                keys.delayed(),
                keys.seq(),
                keys.events(),
                keys.wake(),
                keys.group_prefix(),
                keys.groups(),
            ],
        );
        invocation.arg(jobs.len());
        for job in jobs {
            job.validate().map_err(|reason| QueueError::InvalidJob {
                id: job.options.id.clone(),
                reason,
            })?;
            let id = match &job.options.id {
                Some(id) => id.clone(),
                None => generate_job_id(now, rand::random()),
            };
            let fields = job.wire_fields();
            invocation.arg(id).arg(fields.len());
            for (name, value) in fields {
                invocation.arg(name).arg(value);
            }
        }
        let value = self.invoke(&invocation).await?;
        let reply = Reply::of("enqueue");
        let out = reply
            .array(value)?
            .into_iter()
            .map(|item| {
                let [id, outcome, state] = reply.tuple(item)?;
                let state = reply.string(state)?;
                Ok(Enqueued {
                    id: reply.string(id)?,
                    created: reply.string(outcome)? == "created",
                    state: state.parse().map_err(|err: String| reply.error(err))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if out.len() != jobs.len() {
            return Err(reply.error(format!("{} replies for {} jobs", out.len(), jobs.len())));
        }
        Ok(out)
    }

    /// Cancels jobs that have not started (waiting, delayed, retry): they are deleted.
    pub async fn cancel(
        &self,
        queue: &str,
        ids: &[String],
    ) -> Result<Vec<(String, CancelOutcome)>> {
        let keys = QueueKeys::new(queue)?;
        let mut invocation = Self::invocation(
            &SCRIPTS.cancel,
            &[
                keys.job_prefix(),
                keys.config(),
                keys.waiting(),
                keys.delayed(),
                keys.retry(),
                keys.events(),
                keys.group_prefix(),
                keys.groups(),
                keys.steps_prefix(),
            ],
        );
        for id in ids {
            invocation.arg(id);
        }
        let reply = Reply::of("cancel");
        reply
            .pairs(self.invoke(&invocation).await?)?
            .into_iter()
            .map(|(id, outcome)| {
                let outcome = match outcome.as_str() {
                    "cancelled" => CancelOutcome::Cancelled,
                    "not_found" => CancelOutcome::NotFound,
                    state => CancelOutcome::NotCancellable(
                        state.parse().map_err(|err: String| reply.error(err))?,
                    ),
                };
                Ok((id, outcome))
            })
            .collect()
    }

    // ----- inspection -----------------------------------------------------------------------

    /// One job, or `None` if there is no job with this id in the queue.
    pub async fn get(&self, queue: &str, id: &str) -> Result<Option<Job>> {
        let keys = QueueKeys::new(queue)?;
        validate_job_id(id).map_err(|reason| QueueError::InvalidJob {
            id: Some(id.to_string()),
            reason,
        })?;
        let mut conn = self.conn.clone();
        let (hash, expiry): (HashMap<String, Vec<u8>>, Option<f64>) = redis::pipe()
            .hgetall(keys.job(id))
            .zscore(keys.active(), id)
            .query_async(&mut conn)
            .await?;
        if hash.is_empty() {
            return Ok(None);
        }
        let mut job = decode_job(queue, id, hash)?;
        job.lease_expires_at_ms = expiry.map(|ms| ms as u64);
        Ok(Some(job))
    }

    /// The number of jobs in each state, and whether the queue is paused.
    pub async fn counts(&self, queue: &str) -> Result<Counts> {
        let keys = QueueKeys::new(queue)?;
        let invocation = Self::invocation(
            &SCRIPTS.counts,
            &[
                keys.config(),
                keys.waiting(),
                keys.delayed(),
                keys.active(),
                keys.retry(),
                keys.completed(),
                keys.dead(),
                keys.group_prefix(),
                keys.groups(),
            ],
        );
        let reply = Reply::of("counts");
        let [
            waiting,
            delayed,
            active,
            retry,
            completed,
            dead,
            paused,
            _now,
        ] = reply.tuple(self.invoke(&invocation).await?)?;
        Ok(Counts {
            waiting: reply.uint(waiting)?,
            delayed: reply.uint(delayed)?,
            active: reply.uint(active)?,
            retry: reply.uint(retry)?,
            completed: reply.uint(completed)?,
            dead: reply.uint(dead)?,
            paused: reply.int(paused)? == 1,
        })
    }

    /// One page of the jobs in `state`, in the state's order: waiting by run order,
    /// delayed/retry by due time, active by lease expiry, completed/dead oldest first.
    pub async fn list(
        &self,
        queue: &str,
        state: JobState,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<Job>> {
        let keys = QueueKeys::new(queue)?;
        let mut invocation = Self::invocation(
            &SCRIPTS.list,
            &[
                keys.job_prefix(),
                keys.state(state),
                keys.active(),
                keys.group_prefix(),
                keys.groups(),
            ],
        );
        invocation.arg(offset).arg(limit).arg(state.as_str());
        let reply = Reply::of("list");
        reply
            .array(self.invoke(&invocation).await?)?
            .into_iter()
            .map(|item| {
                let [id, flat, expiry] = reply.tuple(item)?;
                let id = reply.string(id)?;
                let flat = reply.array(flat)?;
                let mut hash = HashMap::with_capacity(flat.len() / 2);
                let mut iter = flat.into_iter();
                while let (Some(field), Some(value)) = (iter.next(), iter.next()) {
                    hash.insert(reply.string(field)?, reply.bytes(value)?);
                }
                if hash.is_empty() {
                    return Err(QueueError::MalformedJob {
                        queue: queue.to_string(),
                        id,
                        reason: format!(
                            "listed in {state} but its hash is missing or not a hash \
                             (`wasmq queue check` repairs it)"
                        ),
                    });
                }
                let mut job = decode_job(queue, &id, hash)?;
                let expiry = reply.uint(expiry)?;
                job.lease_expires_at_ms = (expiry > 0).then_some(expiry);
                Ok(job)
            })
            .collect()
    }

    /// Events after stream id `after` (`None`: from the start), at most `count`.
    pub async fn events(
        &self,
        queue: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<StreamEvent>> {
        let keys = QueueKeys::new(queue)?;
        let start = after.map_or_else(|| "-".to_string(), |id| format!("({id}"));
        let mut conn = self.conn.clone();
        let value: Value = redis::cmd("XRANGE")
            .arg(keys.events())
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        let reply = Reply::of("XRANGE events");
        reply
            .array(value)?
            .into_iter()
            .map(|entry| {
                let [stream_id, fields] = reply.tuple(entry)?;
                let mut event = StreamEvent {
                    stream_id: reply.string(stream_id)?,
                    event: String::new(),
                    jobs: Vec::new(),
                };
                let fields = reply.array(fields)?;
                let mut iter = fields.into_iter();
                while let (Some(field), Some(value)) = (iter.next(), iter.next()) {
                    match reply.string(field)?.as_str() {
                        "event" => event.event = reply.string(value)?,
                        "jobs" => {
                            let text = reply.string(value)?;
                            let jobs: Vec<(String, u32)> = serde_json::from_str(&text)
                                .map_err(|err| reply.error(format!("jobs field: {err}")))?;
                            event.jobs = jobs;
                        }
                        _ => {}
                    }
                }
                Ok(event)
            })
            .collect()
    }

    /// The queue's settings (defaults for unset fields).
    pub async fn config(&self, queue: &str) -> Result<QueueConfig> {
        let keys = QueueKeys::new(queue)?;
        let mut conn = self.conn.clone();
        let hash: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(keys.config())
            .query_async(&mut conn)
            .await?;
        let mut config = QueueConfig::default();
        let number = |name: &str| -> Result<Option<i64>> {
            hash.get(name)
                .map(|text| {
                    text.parse::<i64>().map_err(|_| {
                        QueueError::InvalidArgument(format!(
                            "config field {name} of queue {queue} is not an integer: {text:?}"
                        ))
                    })
                })
                .transpose()
        };
        if let Some(n) = number("max_payload_bytes")? {
            config.max_payload_bytes = n.max(0).unsigned_abs();
        }
        if let Some(n) = number("max_result_bytes")? {
            config.max_result_bytes = n.max(0).unsigned_abs();
        }
        if let Some(n) = number("completed_keep")? {
            config.completed_keep = (n >= 0).then_some(n.unsigned_abs());
        }
        if let Some(n) = number("completed_max_age_ms")? {
            config.completed_max_age = (n > 0).then(|| Duration::from_millis(n.unsigned_abs()));
        }
        if let Some(n) = number("events_maxlen")? {
            config.events_maxlen = n.max(0).unsigned_abs();
        }
        let limit = |max: &str, window: &str| -> Result<Option<RateLimit>> {
            let max = number(max)?.unwrap_or(0).max(0).unsigned_abs();
            let window = number(window)?.unwrap_or(0).max(0).unsigned_abs();
            Ok(RateLimit::from_fields(max, window))
        };
        if let Some(n) = number("dead_step_bytes")? {
            config.dead_step_bytes = (n >= 0).then_some(n.unsigned_abs());
        }
        config.rate = limit("rate_max", "rate_window_ms")?;
        config.group_rate = limit("group_rate_max", "group_rate_window_ms")?;
        config.max_waiting = number("max_waiting")?
            .filter(|n| *n > 0)
            .map(i64::unsigned_abs);
        Ok(config)
    }

    /// Writes the queue's settings (one HSET; the pause flag is left alone).
    pub async fn set_config(&self, queue: &str, config: &QueueConfig) -> Result<()> {
        let keys = QueueKeys::new(queue)?;
        let keep = config
            .completed_keep
            .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let max_age = config.completed_max_age.map_or(0, millis);
        let mut conn = self.conn.clone();
        let () = redis::cmd("HSET")
            .arg(keys.config())
            .arg("max_payload_bytes")
            .arg(config.max_payload_bytes)
            .arg("max_result_bytes")
            .arg(config.max_result_bytes)
            .arg("completed_keep")
            .arg(keep)
            .arg("completed_max_age_ms")
            .arg(max_age)
            .arg("events_maxlen")
            .arg(config.events_maxlen)
            .arg("rate_max")
            .arg(config.rate.map_or(0, |r| r.max))
            .arg("rate_window_ms")
            .arg(config.rate.map_or(0, |r| r.window_ms()))
            .arg("group_rate_max")
            .arg(config.group_rate.map_or(0, |r| r.max))
            .arg("group_rate_window_ms")
            .arg(config.group_rate.map_or(0, |r| r.window_ms()))
            .arg("dead_step_bytes")
            .arg(
                config
                    .dead_step_bytes
                    .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)),
            )
            .arg("max_waiting")
            .arg(config.max_waiting.unwrap_or(0))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Stops fetch from leasing this queue's jobs. Returns false if it was already paused.
    pub async fn pause(&self, queue: &str) -> Result<bool> {
        let keys = QueueKeys::new(queue)?;
        let invocation = Self::invocation(&SCRIPTS.pause, &[keys.config(), keys.events()]);
        Ok(Reply::of("pause").int(self.invoke(&invocation).await?)? == 1)
    }

    /// Lets fetch lease this queue's jobs again. Returns false if it was not paused.
    pub async fn resume(&self, queue: &str) -> Result<bool> {
        let keys = QueueKeys::new(queue)?;
        let invocation = Self::invocation(
            &SCRIPTS.resume,
            &[
                keys.config(),
                keys.events(),
                keys.waiting(),
                keys.wake(),
                keys.groups(),
            ],
        );
        Ok(Reply::of("resume").int(self.invoke(&invocation).await?)? == 1)
    }

    // ----- dead-letter queue ----------------------------------------------------------------

    /// One page of the dead-letter queue, oldest first.
    pub async fn dead_letters(&self, queue: &str, offset: u64, limit: u64) -> Result<Vec<Job>> {
        self.list(queue, JobState::Dead, offset, limit).await
    }

    /// Moves the given dead jobs back to waiting, attempts reset to 0, history kept.
    pub async fn replay(&self, queue: &str, ids: &[String]) -> Result<DlqReport> {
        self.dlq_call(queue, "replay", ids, 0).await
    }

    /// Replays the `limit` oldest dead jobs.
    pub async fn replay_oldest(&self, queue: &str, limit: u64) -> Result<DlqReport> {
        self.dlq_call(queue, "replay", &[], limit).await
    }

    /// Deletes the given dead jobs for good.
    pub async fn purge(&self, queue: &str, ids: &[String]) -> Result<DlqReport> {
        self.dlq_call(queue, "purge", ids, 0).await
    }

    /// Deletes the `limit` oldest dead jobs for good.
    pub async fn purge_oldest(&self, queue: &str, limit: u64) -> Result<DlqReport> {
        self.dlq_call(queue, "purge", &[], limit).await
    }

    async fn dlq_call(
        &self,
        queue: &str,
        which: &'static str,
        ids: &[String],
        limit: u64,
    ) -> Result<DlqReport> {
        let keys = QueueKeys::new(queue)?;
        let mut invocation = if which == "replay" {
            Self::invocation(
                &SCRIPTS.replay,
                &[
                    keys.job_prefix(),
                    keys.config(),
                    keys.dead(),
                    keys.waiting(),
                    keys.seq(),
                    keys.events(),
                    keys.wake(),
                    keys.group_prefix(),
                    keys.groups(),
                ],
            )
        } else {
            Self::invocation(
                &SCRIPTS.purge,
                &[
                    keys.job_prefix(),
                    keys.config(),
                    keys.dead(),
                    keys.events(),
                    keys.steps_prefix(),
                ],
            )
        };
        invocation.arg(limit);
        for id in ids {
            invocation.arg(id);
        }
        let reply = Reply::of(which);
        let [done, skipped] = reply.tuple(self.invoke(&invocation).await?)?;
        Ok(DlqReport {
            done: reply.strings(done)?,
            skipped: reply.pairs(skipped)?,
        })
    }

    // ----- workers --------------------------------------------------------------------------

    /// Leases up to `max` jobs to `host` for `lease` (see [`Client::fetch_batch`]).
    pub async fn fetch(
        &self,
        queue: &str,
        max: usize,
        lease: Duration,
        host: &str,
    ) -> Result<Vec<LeasedJob>> {
        Ok(self.fetch_batch(queue, max, lease, host).await?.jobs)
    }

    /// Leases up to `max` waiting jobs, highest priority first and FIFO within a priority,
    /// after promoting due delayed and retry jobs; one script call. Each job's `attempt` is
    /// counted from here. Returns nothing while the queue is paused.
    pub async fn fetch_batch(
        &self,
        queue: &str,
        max: usize,
        lease: Duration,
        host: &str,
    ) -> Result<Fetched> {
        let keys = QueueKeys::new(queue)?;
        let lease_ms = millis(lease);
        if max == 0 || max > MAX_BULK || lease_ms == 0 {
            return Err(QueueError::InvalidArgument(format!(
                "fetch needs max in 1..={MAX_BULK} and a lease of at least 1 ms"
            )));
        }
        let token = random_token();
        let mut invocation = Self::invocation(&SCRIPTS.fetch, &fetch_keys(&keys));
        invocation.arg(max).arg(lease_ms).arg(&token).arg(host);
        let value = self.invoke(&invocation).await?;
        Fetched::decode(value, queue, &token)
    }

    /// Renews the leases (heartbeat) to `lease` from now, on Redis's clock. Jobs this host no
    /// longer holds are rejected and left alone.
    pub async fn extend(&self, queue: &str, leases: &[Lease], lease: Duration) -> Result<Extended> {
        let keys = QueueKeys::new(queue)?;
        let lease_ms = millis(lease);
        if lease_ms == 0 {
            return Err(QueueError::InvalidArgument(
                "extend needs a lease of at least 1 ms".to_string(),
            ));
        }
        let mut invocation = Self::invocation(&SCRIPTS.extend, &[keys.job_prefix(), keys.active()]);
        invocation.arg(lease_ms);
        for lease in leases {
            invocation.arg(&lease.id).arg(&lease.token);
        }
        let reply = Reply::of("extend");
        let [expires, rejected] = reply.tuple(self.invoke(&invocation).await?)?;
        Ok(Extended {
            lease_expires_at_ms: reply.uint(expires)?,
            rejected: rejections(&reply, rejected)?,
        })
    }

    /// Completes jobs with their results in one call (active -> completed, then retention).
    pub async fn complete(&self, queue: &str, done: &[Completion]) -> Result<CompleteReport> {
        let keys = QueueKeys::new(queue)?;
        if done.is_empty() {
            return Ok(CompleteReport::default());
        }
        let mut invocation = Self::invocation(
            &SCRIPTS.complete,
            &[
                keys.job_prefix(),
                keys.config(),
                keys.active(),
                keys.completed(),
                keys.dead(),
                keys.events(),
                keys.steps_prefix(),
                keys.outbox(),
            ],
        );
        push_completions(&mut invocation, done)?;
        let reply = Reply::of("complete");
        let [completed, rejected, too_large] = reply.tuple(self.invoke(&invocation).await?)?;
        complete_report(&reply, completed, rejected, too_large)
    }

    /// Completes jobs and leases up to `max` next jobs of the same queue, in one call: what
    /// [`Client::complete`] then [`Client::fetch_batch`] would do, atomically and in one round
    /// trip, for a worker whose finished attempts left room for as many new ones. The fetch does
    /// not depend on the completions: one refused (the lease was lost) is reported in
    /// `rejected` and the jobs are leased all the same; a paused or rate-limited queue leases
    /// nothing and the completions are recorded all the same. `max` may be 0 (only complete).
    pub async fn complete_and_fetch(
        &self,
        queue: &str,
        done: &[Completion],
        max: usize,
        lease: Duration,
        host: &str,
    ) -> Result<(CompleteReport, Fetched)> {
        let keys = QueueKeys::new(queue)?;
        let lease_ms = millis(lease);
        if max > MAX_BULK || lease_ms == 0 {
            return Err(QueueError::InvalidArgument(format!(
                "complete_and_fetch needs max in 0..={MAX_BULK} and a lease of at least 1 ms"
            )));
        }
        let token = random_token();
        let mut invocation = Self::invocation(&SCRIPTS.complete_fetch, &fetch_keys(&keys));
        invocation
            .key(keys.completed())
            .key(keys.dead())
            .key(keys.steps_prefix())
            .key(keys.outbox());
        invocation.arg(max).arg(lease_ms).arg(&token).arg(host);
        push_completions(&mut invocation, done)?;
        let reply = Reply::of("complete_fetch");
        let [completed, rejected, too_large, leased] =
            reply.tuple(self.invoke(&invocation).await?)?;
        Ok((
            complete_report(&reply, completed, rejected, too_large)?,
            fetched(&reply, leased, queue, &token)?,
        ))
    }

    /// Records failed attempts in one call: each job retries after its backoff, or goes to the
    /// dead-letter queue when out of attempts or the failure is permanent.
    pub async fn fail(&self, queue: &str, failures: &[Failure]) -> Result<FailReport> {
        let keys = QueueKeys::new(queue)?;
        if failures.is_empty() {
            return Ok(FailReport::default());
        }
        let mut invocation = Self::invocation(&SCRIPTS.fail, &fail_keys(&keys));
        invocation.arg(random_seed());
        for failure in failures {
            invocation
                .arg(&failure.id)
                .arg(&failure.token)
                .arg(truncate_utf8(&failure.outcome, 64))
                .arg(truncate_utf8(&failure.error, MAX_ERROR_LEN))
                .arg(if failure.permanent { "1" } else { "0" })
                .arg(truncate_utf8(&failure.version, MAX_VERSION_LEN))
                .arg(failure.policy.wire())
                .arg(truncate_utf8(&failure.logs, MAX_ATTEMPT_LOG_LEN))
                .arg(progress_arg(failure.progress));
        }
        let reply = Reply::of("fail");
        let [outcomes, rejected] = reply.tuple(self.invoke(&invocation).await?)?;
        Ok(FailReport {
            outcomes: fail_outcomes(&reply, outcomes)?,
            rejected: rejections(&reply, rejected)?,
        })
    }

    /// Dead-letters jobs at once ([`Client::fail`] with every failure permanent).
    pub async fn dead_letter(&self, queue: &str, failures: &[Failure]) -> Result<FailReport> {
        let permanent: Vec<Failure> = failures.iter().cloned().map(Failure::permanent).collect();
        self.fail(queue, &permanent).await
    }

    /// Returns active jobs to waiting without counting the attempt (graceful shutdown).
    pub async fn release(&self, queue: &str, leases: &[Lease]) -> Result<Released> {
        let keys = QueueKeys::new(queue)?;
        if leases.is_empty() {
            return Ok(Released::default());
        }
        let mut invocation = Self::invocation(
            &SCRIPTS.release,
            &[
                keys.job_prefix(),
                keys.config(),
                keys.active(),
                keys.waiting(),
                keys.events(),
                keys.wake(),
                keys.group_prefix(),
                keys.groups(),
            ],
        );
        for lease in leases {
            invocation.arg(&lease.id).arg(&lease.token);
        }
        let reply = Reply::of("release");
        let [released, rejected] = reply.tuple(self.invoke(&invocation).await?)?;
        Ok(Released {
            released: reply.strings(released)?,
            rejected: rejections(&reply, rejected)?,
        })
    }

    /// Fails up to `limit` jobs whose lease expired, as attempts with outcome `lease_expired`:
    /// each retries after its backoff or goes dead. Any host may run it, at any time.
    ///
    /// `policies` are the retry policies of the handlers the caller knows: a recovered job of
    /// one of them is retried or dead-lettered under it, as [`Client::fail`] would.
    pub async fn recover_expired(
        &self,
        queue: &str,
        limit: usize,
        policies: &[(String, RetryPolicy)],
    ) -> Result<FailReport> {
        let keys = QueueKeys::new(queue)?;
        if limit == 0 || limit > MAX_BULK {
            return Err(QueueError::InvalidArgument(format!(
                "recover_expired needs limit in 1..={MAX_BULK}"
            )));
        }
        let mut invocation = Self::invocation(&SCRIPTS.recover, &fail_keys(&keys));
        invocation.arg(limit).arg(random_seed());
        for (handler, policy) in policies.iter().filter(|(_, p)| !p.is_empty()) {
            invocation.arg(handler).arg(policy.wire());
        }
        let reply = Reply::of("recover");
        let [outcomes] = reply.tuple(self.invoke(&invocation).await?)?;
        Ok(FailReport {
            outcomes: fail_outcomes(&reply, outcomes)?,
            rejected: Vec::new(),
        })
    }

    /// Moves up to `limit` due delayed and retry jobs to waiting. Returns how many moved and
    /// when the next scheduled job is due. (Fetch promotes too; this is for catching up.)
    pub async fn promote(&self, queue: &str, limit: usize) -> Result<(u64, Option<u64>)> {
        let keys = QueueKeys::new(queue)?;
        if limit == 0 || limit > MAX_BULK {
            return Err(QueueError::InvalidArgument(format!(
                "promote needs limit in 1..={MAX_BULK}"
            )));
        }
        let mut invocation = Self::invocation(
            &SCRIPTS.promote,
            &[
                keys.job_prefix(),
                keys.config(),
                keys.waiting(),
                keys.delayed(),
                keys.retry(),
                keys.seq(),
                keys.events(),
                keys.wake(),
                keys.group_prefix(),
                keys.groups(),
            ],
        );
        invocation.arg(limit);
        let reply = Reply::of("promote");
        let [moved, next_due] = reply.tuple(self.invoke(&invocation).await?)?;
        let next_due = reply.uint(next_due)?;
        Ok((reply.uint(moved)?, (next_due > 0).then_some(next_due)))
    }
}

/// The per-job arguments of complete.lua and complete_fetch.lua: id, token, result, version,
/// logs, progress, children (docs/protocol.md).
fn push_completions(invocation: &mut Call<'_>, done: &[Completion]) -> Result<()> {
    for completion in done {
        invocation
            .arg(&completion.id)
            .arg(&completion.token)
            .arg(completion.result.as_slice())
            .arg(truncate_utf8(&completion.version, MAX_VERSION_LEN))
            .arg(truncate_utf8(&completion.logs, MAX_ATTEMPT_LOG_LEN))
            .arg(progress_arg(completion.progress));
        match &completion.encoded_children {
            Some(bytes) => invocation.arg(bytes.as_slice()),
            None => invocation.arg(encode_children(&completion.children)?),
        };
    }
    Ok(())
}

/// A progress as the scripts take it: digits, or empty for none.
pub(super) fn progress_arg(progress: Option<u8>) -> String {
    progress.map(|p| p.min(100).to_string()).unwrap_or_default()
}

fn fetch_keys(keys: &QueueKeys) -> [String; 12] {
    [
        keys.job_prefix(),
        keys.config(),
        keys.waiting(),
        keys.delayed(),
        keys.retry(),
        keys.active(),
        keys.seq(),
        keys.events(),
        keys.wake(),
        keys.rate(),
        keys.group_prefix(),
        keys.groups(),
    ]
}

fn fail_keys(keys: &QueueKeys) -> [String; 11] {
    [
        keys.job_prefix(),
        keys.config(),
        keys.active(),
        keys.retry(),
        keys.dead(),
        keys.waiting(),
        keys.seq(),
        keys.events(),
        keys.wake(),
        keys.group_prefix(),
        keys.groups(),
    ]
}

/// Decodes fetch.lua's reply (also the `fetched` part of complete_fetch.lua's); `token` is the
/// lease token the call sent.
fn fetched(reply: &Reply, value: Value, queue: &str, token: &str) -> Result<Fetched> {
    let [now, expires, jobs, next_due, dropped, held] = reply.tuple(value)?;
    let lease_expires_at_ms = reply.uint(expires)?;
    let jobs = reply
        .array(jobs)?
        .into_iter()
        .map(|item| {
            let [
                id,
                handler,
                payload,
                attempt,
                max_attempts,
                timeout,
                priority,
                created,
                own_policy,
                depth,
                traceparent,
                tracestate,
            ] = reply.tuple(item)?;
            let number = |value: Value, what: &str| -> Result<i64> {
                reply
                    .int(value)
                    .map_err(|_| reply.error(format!("{what} is not a number")))
            };
            let timeout_ms = number(timeout, "timeout_ms")?;
            let trace = trace_context(reply.bytes(traceparent)?, reply.bytes(tracestate)?);
            Ok(LeasedJob {
                id: reply.string(id)?,
                queue: queue.to_string(),
                handler: reply.string(handler)?,
                payload: reply.bytes(payload)?,
                attempt: u32::try_from(number(attempt, "attempt")?).unwrap_or(u32::MAX),
                max_attempts: u32::try_from(number(max_attempts, "max_attempts")?).unwrap_or(1),
                own_policy: OwnPolicy::parse(&reply.string(own_policy)?),
                timeout: (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms.unsigned_abs())),
                priority: i32::try_from(number(priority, "priority")?).unwrap_or(0),
                created_at_ms: number(created, "created_at")?.max(0).unsigned_abs(),
                traceparent: trace.0,
                tracestate: trace.1,
                token: token.to_string(),
                lease_expires_at_ms,
                depth: u32::try_from(number(depth, "depth")?).unwrap_or(u32::MAX),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let next_due = reply.uint(next_due)?;
    let dropped = reply.uint(dropped)?;
    if dropped > 0 {
        tracing::warn!(
            queue,
            dropped,
            "fetch dropped waiting ids with no job behind them"
        );
    }
    Ok(Fetched {
        jobs,
        now_ms: reply.uint(now)?,
        next_due_ms: (next_due > 0).then_some(next_due),
        dropped,
        rate_limited: reply.uint(held)? > 0,
    })
}

/// A leased job's trace context, from fetch's reply: a traceparent that is not valid (a hash
/// edited by hand) is no reason to refuse the job, so it and its tracestate are left out.
fn trace_context(traceparent: Vec<u8>, tracestate: Vec<u8>) -> (Option<String>, Option<String>) {
    let Ok(traceparent) = String::from_utf8(traceparent) else {
        return (None, None);
    };
    if validate_traceparent(&traceparent).is_err() {
        return (None, None);
    }
    let tracestate = String::from_utf8(tracestate)
        .ok()
        .filter(|t| validate_tracestate(t).is_ok());
    (Some(traceparent), tracestate)
}

fn complete_report(
    reply: &Reply,
    completed: Value,
    rejected: Value,
    too_large: Value,
) -> Result<CompleteReport> {
    Ok(CompleteReport {
        completed: reply.strings(completed)?,
        rejected: rejections(reply, rejected)?,
        result_too_large: reply.strings(too_large)?,
    })
}

pub(super) fn rejections(reply: &Reply, value: Value) -> Result<Vec<(String, LeaseRejection)>> {
    Ok(reply
        .pairs(value)?
        .into_iter()
        .map(|(id, reason)| (id, LeaseRejection::parse(&reason)))
        .collect())
}

fn fail_outcomes(reply: &Reply, value: Value) -> Result<Vec<(String, FailOutcome)>> {
    reply
        .array(value)?
        .into_iter()
        .map(|item| {
            let [id, next, at] = reply.tuple(item)?;
            let id = reply.string(id)?;
            let outcome = match reply.string(next)?.as_str() {
                "dead" => FailOutcome::Dead,
                "retry" => FailOutcome::Retry {
                    run_at_ms: reply.uint(at)?,
                },
                other => return Err(reply.error(format!("unknown fail outcome {other:?}"))),
            };
            Ok((id, outcome))
        })
        .collect()
}

fn decode_job(queue: &str, id: &str, hash: HashMap<String, Vec<u8>>) -> Result<Job> {
    Job::from_hash(queue, id, hash).map_err(|reason| QueueError::MalformedJob {
        queue: queue.to_string(),
        id: id.to_string(),
        reason,
    })
}
