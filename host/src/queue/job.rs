//! The job model: states, options, validation, backoff maths and the decoding of a job hash.
//!
//! **Invariant:** nothing here does I/O or knows about Redis connections; every function is
//! pure, so the rules a job lives by are unit-tested without a server. The Lua scripts in
//! `scripts/` implement the same rules on the server side (backoff in `lib.lua`, validation in
//! `enqueue.lua`); `docs/protocol.md` is the written contract between the two.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Default payload limit of a queue, unless its config hash sets `max_payload_bytes`.
pub const DEFAULT_MAX_PAYLOAD_BYTES: u64 = 512 * 1024;
/// Default cap on the bytes the durable steps of a queue's dead jobs hold in all, unless the
/// queue sets `dead_step_bytes` (dead_steps.lua; lib.lua's CONFIG_DEFAULTS says the same).
pub const DEFAULT_DEAD_STEP_BYTES: u64 = 64 * 1024 * 1024;
/// Default limit on a completed job's stored result, unless the queue sets `max_result_bytes`.
pub const DEFAULT_MAX_RESULT_BYTES: u64 = 512 * 1024;
/// Completed jobs a queue keeps by default (the newest ones), unless it sets `completed_keep`.
pub const DEFAULT_COMPLETED_KEEP: i64 = 1000;
/// Approximate length the events stream is trimmed to, unless the queue sets `events_maxlen`.
pub const DEFAULT_EVENTS_MAXLEN: u64 = 10_000;
/// Attempts a job gets when the producer does not say.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Most bytes of an attempt's log that its history entry keeps (`MAX_LOGS_LEN` in lib.lua).
pub const MAX_ATTEMPT_LOG_LEN: usize = 4096;
/// Most attempts a job may have. Every attempt stays in the job's history, so this bounds it.
pub const MAX_ATTEMPTS: u32 = 1000;
/// Priorities run from `MIN_PRIORITY` to `MAX_PRIORITY`; higher runs first; 0 is the default.
pub const MIN_PRIORITY: i32 = -1000;
/// See [`MIN_PRIORITY`].
pub const MAX_PRIORITY: i32 = 1000;
/// Longest job id, queue name and handler name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Error messages are cut to this many bytes before they are stored in a job's history.
pub const MAX_ERROR_LEN: usize = 4096;
/// Longest delay, timeout and backoff, and latest run-at time, in ms (about 31,700 years):
/// the bound `enqueue.lua` puts on its millisecond fields, so a job the client accepts is one
/// the script accepts.
pub const MAX_MS: u64 = 1_000_000_000_000_000;

/// Every state a job can be in. This is the one canonical list: the Redis sets, the `state`
/// field of a job hash, the API and the CLI use these words.
///
/// ```text
///  enqueue ─┬─▶ waiting ──fetch──▶ active ──complete──▶ completed ──(retention)──▶ deleted
///           │      ▲  ▲              │ │ └──release──▶ waiting (attempt not counted)
///           └─▶ delayed│             │ └──fail / lease expired──▶ retry ──(due)──▶ waiting
///               (due)──┘             └──fail, attempts exhausted or permanent──▶ dead
///  dead ──replay──▶ waiting;  dead ──purge──▶ deleted;  waiting/delayed/retry/active ──cancel──▶ dead
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Ready to run; ordered by priority, then FIFO. Set `wasmq:{q}:waiting`.
    Waiting,
    /// Enqueued with a delay or run-at in the future. Set `wasmq:{q}:delayed`, scored by due time.
    Delayed,
    /// Leased by a host that is running it. Set `wasmq:{q}:active`, scored by lease expiry.
    Active,
    /// An attempt failed and the job waits out its backoff. Set `wasmq:{q}:retry`, by due time.
    Retry,
    /// Finished successfully; kept per the queue's retention. Set `wasmq:{q}:completed`.
    Completed,
    /// Attempts exhausted or failed permanently: the dead-letter queue. Set `wasmq:{q}:dead`.
    /// Never deleted except by a person (purge) or replayed.
    Dead,
}

impl JobState {
    /// All states, in lifecycle order.
    pub const ALL: [JobState; 6] = [
        JobState::Waiting,
        JobState::Delayed,
        JobState::Active,
        JobState::Retry,
        JobState::Completed,
        JobState::Dead,
    ];

    /// The word used in Redis (`state` field, key suffix) and everywhere else.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Delayed => "delayed",
            JobState::Active => "active",
            JobState::Retry => "retry",
            JobState::Completed => "completed",
            JobState::Dead => "dead",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown job state {s:?}"))
    }
}

/// How long a job waits before its next attempt after an attempt failed.
///
/// The delay after failed attempt `n` (1-based) is `d · (1 + jitter · (2u − 1))`, capped at
/// `cap` and rounded to the millisecond, where `u` is uniform in `[0, 1)` and
/// `d = base` (fixed) or `d = min(cap, base · 2^(n−1))` (exponential). So the jitter spreads
/// retries by ±`jitter` of the delay, and a retry never waits longer than the cap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backoff {
    /// The same delay before every retry.
    Fixed { delay: Duration, jitter: f64 },
    /// `base · 2^(n−1)` after attempt `n`, capped.
    Exponential {
        base: Duration,
        cap: Duration,
        jitter: f64,
    },
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::Exponential {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(3600),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// Exponential backoff from `base` with the default cap (1 h, or `base` when longer, as
    /// `enqueue.lua` does for a job that gives no cap) and jitter (±20 %).
    pub fn exponential(base: Duration) -> Self {
        Backoff::Exponential {
            base,
            cap: base.max(Duration::from_secs(3600)),
            jitter: 0.2,
        }
    }

    /// Fixed backoff without jitter.
    pub fn fixed(delay: Duration) -> Self {
        Backoff::Fixed { delay, jitter: 0.0 }
    }

    /// The same backoff with another jitter fraction (0 to 1).
    pub fn with_jitter(self, fraction: f64) -> Self {
        match self {
            Backoff::Fixed { delay, .. } => Backoff::Fixed {
                delay,
                jitter: fraction,
            },
            Backoff::Exponential { base, cap, .. } => Backoff::Exponential {
                base,
                cap,
                jitter: fraction,
            },
        }
    }

    /// The jitter fraction.
    pub fn jitter(&self) -> f64 {
        match *self {
            Backoff::Fixed { jitter, .. } | Backoff::Exponential { jitter, .. } => jitter,
        }
    }

    /// The delay before the next attempt once attempt `failed_attempt` (1-based) failed,
    /// given `unit` drawn uniformly from `[0, 1)`. Mirrors `backoff_ms` in `scripts/lib.lua`.
    pub fn delay(&self, failed_attempt: u32, unit: f64) -> Duration {
        Duration::from_millis(self.delay_ms(failed_attempt, unit))
    }

    /// [`Backoff::delay`] in milliseconds.
    pub fn delay_ms(&self, failed_attempt: u32, unit: f64) -> u64 {
        let (nominal, cap, jitter) = self.nominal_ms(failed_attempt);
        let jittered = nominal * (1.0 + jitter * (2.0 * unit - 1.0));
        let capped = match cap {
            Some(cap) => jittered.min(cap),
            None => jittered,
        };
        // The float-to-int cast saturates, so an absurd base cannot wrap around.
        capped.max(0.0).round() as u64
    }

    /// The shortest and longest delay after attempt `failed_attempt`, over all jitter draws.
    pub fn delay_bounds_ms(&self, failed_attempt: u32) -> (u64, u64) {
        (
            self.delay_ms(failed_attempt, 0.0),
            self.delay_ms(failed_attempt, 1.0),
        )
    }

    fn nominal_ms(&self, failed_attempt: u32) -> (f64, Option<f64>, f64) {
        match *self {
            Backoff::Fixed { delay, jitter } => (delay.as_millis() as f64, None, jitter),
            Backoff::Exponential { base, cap, jitter } => {
                let cap = cap.as_millis() as f64;
                let exponent = failed_attempt.saturating_sub(1).min(60) as i32;
                let nominal = (base.as_millis() as f64 * 2f64.powi(exponent)).min(cap);
                (nominal, Some(cap), jitter)
            }
        }
    }

    /// The `backoff*` fields of a job hash (see docs/protocol.md).
    fn fields(&self) -> [(&'static str, String); 4] {
        match *self {
            Backoff::Fixed { delay, jitter } => [
                ("backoff", "fixed".to_string()),
                ("backoff_ms", delay.as_millis().to_string()),
                ("backoff_cap_ms", "0".to_string()),
                ("backoff_jitter", jitter.to_string()),
            ],
            Backoff::Exponential { base, cap, jitter } => [
                ("backoff", "exponential".to_string()),
                ("backoff_ms", base.as_millis().to_string()),
                ("backoff_cap_ms", cap.as_millis().to_string()),
                ("backoff_jitter", jitter.to_string()),
            ],
        }
    }

    fn from_fields(kind: &str, base_ms: u64, cap_ms: u64, jitter: f64) -> Result<Self, String> {
        let base = Duration::from_millis(base_ms);
        match kind {
            "fixed" => Ok(Backoff::Fixed {
                delay: base,
                jitter,
            }),
            "exponential" => Ok(Backoff::Exponential {
                base,
                cap: Duration::from_millis(cap_ms),
                jitter,
            }),
            other => Err(format!("unknown backoff kind {other:?}")),
        }
    }

    fn validate(&self) -> Result<(), String> {
        let (base, cap) = match *self {
            Backoff::Fixed { delay, .. } => (delay, delay),
            Backoff::Exponential { base, cap, .. } => (base, cap),
        };
        if base.max(cap).as_millis() > u128::from(MAX_MS) {
            return Err(format!("backoff delays must be at most {MAX_MS} ms"));
        }
        let jitter = self.jitter();
        if !(0.0..=1.0).contains(&jitter) {
            return Err(format!("backoff jitter must be within 0..=1, got {jitter}"));
        }
        if let Backoff::Exponential { base, cap, .. } = self
            && cap < base
        {
            return Err(format!(
                "backoff cap ({cap:?}) must not be below its base ({base:?})"
            ));
        }
        Ok(())
    }
}

/// Parses the CLI form: `exponential:1s`, `exponential:1s:10m` (base, cap), `fixed:2s`.
impl FromStr for Backoff {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split(':');
        let kind = parts.next().unwrap_or_default();
        let duration = |part: Option<&str>, what: &str| -> Result<Option<Duration>, String> {
            part.map(|text| {
                humantime::parse_duration(text).map_err(|err| format!("bad {what} {text:?}: {err}"))
            })
            .transpose()
        };
        let first = duration(parts.next(), "delay")?;
        let second = duration(parts.next(), "cap")?;
        if parts.next().is_some() {
            return Err(format!("too many parts in backoff {s:?}"));
        }
        let backoff = match (kind, first, second) {
            ("exponential", Some(base), None) => Backoff::exponential(base),
            ("exponential", Some(base), Some(cap)) => Backoff::Exponential {
                base,
                cap,
                jitter: 0.2,
            },
            ("fixed", Some(delay), None) => Backoff::fixed(delay),
            _ => {
                return Err(format!(
                    "backoff {s:?} is not exponential:<base>[:<cap>] or fixed:<delay>"
                ));
            }
        };
        backoff.validate()?;
        Ok(backoff)
    }
}

/// A handler's retry policy, as its deployment sets it (`wasmq handler deploy --max-attempts
/// --backoff`). It applies to the parts of a job's policy that the job's producer left out
/// (see [`OwnPolicy`]); a producer's own choice wins.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RetryPolicy {
    pub max_attempts: Option<u32>,
    pub backoff: Option<Backoff>,
}

impl RetryPolicy {
    /// Whether the policy sets nothing (jobs keep their own or the queue default).
    pub fn is_empty(&self) -> bool {
        self.max_attempts.is_none() && self.backoff.is_none()
    }

    /// The attempts a job gets under this policy: its own when it set them (`own`), else this
    /// policy's, else what the job hash holds (the queue default).
    pub fn max_attempts_for(&self, own: OwnPolicy, stored: u32) -> u32 {
        match self.max_attempts {
            Some(n) if !own.max_attempts => n,
            _ => stored,
        }
    }

    /// The form `fail.lua` and `recover.lua` take (see `parse_policy` in `scripts/lib.lua`):
    /// `<max_attempts>|<kind>|<base ms>|<cap ms>|<jitter>`, parts left empty when unset; the
    /// empty string for an empty policy.
    pub(crate) fn wire(&self) -> String {
        if self.is_empty() {
            return String::new();
        }
        let attempts = self.max_attempts.map(|n| n.to_string()).unwrap_or_default();
        let backoff = match self.backoff.map(|b| b.fields()) {
            Some([(_, kind), (_, base), (_, cap), (_, jitter)]) => {
                format!("{kind}|{base}|{cap}|{jitter}")
            }
            None => "|||".to_string(),
        };
        format!("{attempts}|{backoff}")
    }
}

/// Which parts of its retry policy a job's producer chose (the job hash's `own_policy`, written
/// by `enqueue.lua`); the parts it did not choose follow its handler's [`RetryPolicy`], if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OwnPolicy {
    pub max_attempts: bool,
    pub backoff: bool,
}

impl OwnPolicy {
    /// Parses the hash field: `attempts`, `backoff`, both comma-separated, or empty.
    pub fn parse(text: &str) -> OwnPolicy {
        let mut own = OwnPolicy::default();
        for part in text.split(',') {
            match part.trim() {
                "attempts" => own.max_attempts = true,
                "backoff" => own.backoff = true,
                _ => {}
            }
        }
        own
    }
}

/// When a new job may first run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunAt {
    /// As soon as a worker is free.
    #[default]
    Now,
    /// This long after enqueue, measured on the Redis server's clock.
    Delay(Duration),
    /// At this wall-clock time (compared with the Redis server's clock). A time in the past
    /// means now.
    At(SystemTime),
}

/// When a job that has not started by then is dead-lettered with outcome `expired` instead of
/// running late (field `expires_at`; checked whenever a fetch would start it, retries too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// This long after enqueue (Redis clock), 1 ms..=[`MAX_KEY_MS`].
    In(Duration),
    /// At this wall-clock time (Redis clock).
    At(SystemTime),
}

/// The most milliseconds a dedupe TTL, a debounce window or max wait, or an `Expiry::In` may
/// be (enqueue.lua's bound).
pub const MAX_KEY_MS: u64 = 1_000_000_000_000;

/// Throttle: while the key lives (`ttl` from the enqueue that took it), another job with the
/// same key is not created, whatever became of the first; the enqueue answers with the first
/// job's id (docs/protocol.md, "Deduplication").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dedupe {
    pub key: String,
    pub ttl: Duration,
}

/// Debounce: the last enqueue within `window` wins. While the key has a pending job (not
/// started), an enqueue replaces that job's payload and pushes its start back to now + window,
/// but never past its first enqueue + `max_wait`; the answer names the pending job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debounce {
    pub key: String,
    pub window: Duration,
    pub max_wait: Option<Duration>,
}

/// Everything a producer chooses about a job besides its handler and payload.
#[derive(Debug, Clone, PartialEq)]
pub struct JobOptions {
    /// Caller-given id: enqueueing an id that already exists in the queue writes nothing and
    /// returns the existing job. `None` generates a fresh id ([`generate_job_id`]).
    pub id: Option<String>,
    /// Higher runs first, within [`MIN_PRIORITY`]..=[`MAX_PRIORITY`]; FIFO within a priority.
    pub priority: i32,
    /// Delay or run-at.
    pub run_at: RunAt,
    /// Attempts in total, at least 1. `None` leaves it to the handler's retry policy, else
    /// [`DEFAULT_MAX_ATTEMPTS`].
    pub max_attempts: Option<u32>,
    /// Delay between attempts. `None` leaves it to the handler's retry policy, else
    /// [`Backoff::default`].
    pub backoff: Option<Backoff>,
    /// Per-attempt deadline; `None` leaves it to the handler's configured default.
    pub timeout: Option<Duration>,
    /// Group key (e.g. a tenant id): the queue's per-group rate limit applies to each group,
    /// and groups take turns, so one group's backlog cannot hold up another's jobs.
    pub group: Option<String>,
    /// The job's generation (the field `depth`): 0 for a producer's job; hosts give a child
    /// job its parent's plus one, and refuse children past their depth limit
    /// (docs/workflows.md).
    pub depth: u32,
    /// The W3C trace context the job belongs to ([`validate_traceparent`]): the producer's
    /// span, which the attempts' spans continue (docs/observability.md).
    pub traceparent: Option<String>,
    /// The W3C `tracestate` that goes with [`JobOptions::traceparent`] (vendor data, passed
    /// on as it is); only with a traceparent.
    pub tracestate: Option<String>,
    /// Dead-letter the job (outcome `expired`) if it has not started by then.
    pub expires: Option<Expiry>,
    /// Throttle key ([`Dedupe`]).
    pub dedupe: Option<Dedupe>,
    /// Debounce key ([`Debounce`]); takes no delay, run-at or dedupe key.
    pub debounce: Option<Debounce>,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            id: None,
            priority: 0,
            run_at: RunAt::Now,
            max_attempts: None,
            backoff: None,
            timeout: None,
            group: None,
            depth: 0,
            traceparent: None,
            tracestate: None,
            expires: None,
            dedupe: None,
            debounce: None,
        }
    }
}

/// A job to enqueue: handler, payload and options. Build with [`NewJob::new`] and the `with_*`
/// methods.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// The handler (component) name that runs the job.
    pub handler: String,
    /// Opaque bytes handed to the handler.
    pub payload: Vec<u8>,
    pub options: JobOptions,
}

impl NewJob {
    pub fn new(handler: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        NewJob {
            handler: handler.into(),
            payload: payload.into(),
            options: JobOptions::default(),
        }
    }

    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.options.id = Some(id.into());
        self
    }

    pub fn with_priority(mut self, priority: i32) -> Self {
        self.options.priority = priority;
        self
    }

    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.options.run_at = RunAt::Delay(delay);
        self
    }

    pub fn with_run_at(mut self, at: SystemTime) -> Self {
        self.options.run_at = RunAt::At(at);
        self
    }

    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.options.max_attempts = Some(attempts);
        self
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.options.backoff = Some(backoff);
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// Puts the job in a group (e.g. a tenant id): see [`JobOptions::group`].
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.options.group = Some(group.into());
        self
    }

    /// A child job's generation (see [`JobOptions::depth`]).
    pub fn with_depth(mut self, depth: u32) -> Self {
        self.options.depth = depth;
        self
    }

    /// Puts the job in the trace `traceparent` (a W3C `traceparent` header value, e.g. the
    /// producer's current span): see [`JobOptions::traceparent`].
    pub fn with_traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.options.traceparent = Some(traceparent.into());
        self
    }

    /// The W3C `tracestate` passed on with the job's traceparent.
    pub fn with_tracestate(mut self, tracestate: impl Into<String>) -> Self {
        self.options.tracestate = Some(tracestate.into());
        self
    }

    /// Dead-letters the job as `expired` if it has not started by then ([`Expiry`]).
    pub fn with_expiry(mut self, expiry: Expiry) -> Self {
        self.options.expires = Some(expiry);
        self
    }

    /// A throttle key ([`Dedupe`]).
    pub fn with_dedupe(mut self, key: impl Into<String>, ttl: Duration) -> Self {
        self.options.dedupe = Some(Dedupe {
            key: key.into(),
            ttl,
        });
        self
    }

    /// A debounce key ([`Debounce`]).
    pub fn with_debounce(
        mut self,
        key: impl Into<String>,
        window: Duration,
        max_wait: Option<Duration>,
    ) -> Self {
        self.options.debounce = Some(Debounce {
            key: key.into(),
            window,
            max_wait,
        });
        self
    }

    /// Checks everything that does not depend on the queue's config (the payload limit is the
    /// queue's, checked by `enqueue.lua`). Returns the reason when the job is invalid.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(id) = &self.options.id {
            validate_job_id(id)?;
        }
        validate_name("handler name", &self.handler)?;
        if let Some(group) = &self.options.group {
            validate_name("group", group)?;
        }
        validate_trace_context(
            self.options.traceparent.as_deref(),
            self.options.tracestate.as_deref(),
        )?;
        let options = &self.options;
        if !(MIN_PRIORITY..=MAX_PRIORITY).contains(&options.priority) {
            return Err(format!(
                "priority {} is outside {MIN_PRIORITY}..={MAX_PRIORITY}",
                options.priority
            ));
        }
        if let Some(attempts) = options.max_attempts
            && !(1..=MAX_ATTEMPTS).contains(&attempts)
        {
            return Err(format!(
                "max attempts must be within 1..={MAX_ATTEMPTS}, got {attempts}"
            ));
        }
        // Times travel in whole ms: a timeout under 1 ms would be stored as 0, which means
        // the handler's default.
        if let Some(timeout) = options.timeout
            && !(1..=u128::from(MAX_MS)).contains(&timeout.as_millis())
        {
            return Err(format!(
                "timeout must be within 1 ms..={MAX_MS} ms, got {timeout:?}"
            ));
        }
        match options.run_at {
            RunAt::Delay(delay) if delay.as_millis() > u128::from(MAX_MS) => {
                return Err(format!("delay must be at most {MAX_MS} ms, got {delay:?}"));
            }
            RunAt::At(at) if unix_ms(at) > MAX_MS => {
                return Err(format!(
                    "run-at must be at most {MAX_MS} ms after the Unix epoch, got {}",
                    unix_ms(at)
                ));
            }
            _ => {}
        }
        validate_flow(options)?;
        options.backoff.as_ref().map_or(Ok(()), Backoff::validate)
    }

    /// The field/value pairs that `enqueue.lua` takes for this job (all but the id), in the
    /// order docs/protocol.md lists them.
    pub fn wire_fields(&self) -> Vec<(&'static str, Vec<u8>)> {
        let options = &self.options;
        let mut fields: Vec<(&'static str, Vec<u8>)> = vec![
            ("handler", self.handler.as_bytes().to_vec()),
            ("payload", self.payload.clone()),
            ("priority", options.priority.to_string().into_bytes()),
        ];
        if let Some(attempts) = options.max_attempts {
            fields.push(("max_attempts", attempts.to_string().into_bytes()));
        }
        match options.run_at {
            RunAt::Now => {}
            RunAt::Delay(delay) => {
                fields.push(("delay_ms", delay.as_millis().to_string().into_bytes()));
            }
            RunAt::At(at) => {
                fields.push(("run_at_ms", unix_ms(at).to_string().into_bytes()));
            }
        }
        if let Some(timeout) = options.timeout {
            fields.push(("timeout_ms", timeout.as_millis().to_string().into_bytes()));
        }
        for (name, value) in options.backoff.iter().flat_map(Backoff::fields) {
            fields.push((name, value.into_bytes()));
        }
        if let Some(group) = &options.group {
            fields.push(("group", group.as_bytes().to_vec()));
        }
        if options.depth > 0 {
            fields.push(("depth", options.depth.to_string().into_bytes()));
        }
        if let Some(traceparent) = &options.traceparent {
            fields.push(("traceparent", traceparent.as_bytes().to_vec()));
        }
        if let Some(tracestate) = &options.tracestate {
            fields.push(("tracestate", tracestate.as_bytes().to_vec()));
        }
        match options.expires {
            None => {}
            Some(Expiry::In(after)) => {
                fields.push(("expires_in_ms", after.as_millis().to_string().into_bytes()));
            }
            Some(Expiry::At(at)) => {
                fields.push(("expires_at_ms", unix_ms(at).to_string().into_bytes()));
            }
        }
        if let Some(dedupe) = &options.dedupe {
            fields.push(("dedupe_key", dedupe.key.as_bytes().to_vec()));
            fields.push((
                "dedupe_ttl_ms",
                dedupe.ttl.as_millis().to_string().into_bytes(),
            ));
        }
        if let Some(debounce) = &options.debounce {
            fields.push(("debounce_key", debounce.key.as_bytes().to_vec()));
            let window = debounce.window.as_millis().to_string();
            fields.push(("debounce_ms", window.into_bytes()));
            if let Some(max_wait) = debounce.max_wait {
                let max_wait = max_wait.as_millis().to_string();
                fields.push(("debounce_max_wait_ms", max_wait.into_bytes()));
            }
        }
        fields
    }
}

/// A duration that travels in whole ms within 1..=[`MAX_KEY_MS`].
fn validate_key_ms(what: &str, d: Duration) -> Result<(), String> {
    if (1..=u128::from(MAX_KEY_MS)).contains(&d.as_millis()) {
        Ok(())
    } else {
        Err(format!(
            "{what} must be within 1 ms..={MAX_KEY_MS} ms, got {d:?}"
        ))
    }
}

/// The expiry, dedupe and debounce options, as enqueue.lua checks them.
fn validate_flow(options: &JobOptions) -> Result<(), String> {
    match options.expires {
        Some(Expiry::In(after)) => validate_key_ms("expires-in", after)?,
        Some(Expiry::At(at)) if unix_ms(at) > MAX_MS => {
            return Err(format!(
                "expires-at must be at most {MAX_MS} ms after the Unix epoch, got {}",
                unix_ms(at)
            ));
        }
        _ => {}
    }
    if let Some(dedupe) = &options.dedupe {
        validate_name("dedupe key", &dedupe.key)?;
        validate_key_ms("dedupe TTL", dedupe.ttl)?;
    }
    if let Some(debounce) = &options.debounce {
        validate_name("debounce key", &debounce.key)?;
        validate_key_ms("debounce window", debounce.window)?;
        if let Some(max_wait) = debounce.max_wait {
            validate_key_ms("debounce max wait", max_wait)?;
        }
        if options.run_at != RunAt::Now || options.dedupe.is_some() {
            return Err("a debounce key takes no delay, run-at or dedupe key".to_string());
        }
    }
    Ok(())
}

/// Milliseconds since the Unix epoch; times before the epoch count as 0.
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The wall-clock time of a millisecond timestamp from Redis.
pub fn system_time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Queue names become part of every key (`wasmq:{<queue>}:...`), inside the hash tag, so they
/// are restricted to characters that cannot break the tag or the key layout.
pub fn validate_queue_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "queue name must be 1 to {MAX_NAME_LEN} bytes long, got {}",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        return Err(format!(
            "queue name {name:?} contains {bad:?}; use ASCII letters, digits, '-', '_', '.', ':'"
        ));
    }
    Ok(())
}

/// Job ids: 1 to [`MAX_NAME_LEN`] printable ASCII characters without spaces (`%p`/`%w` in Lua).
pub fn validate_job_id(id: &str) -> Result<(), String> {
    validate_name("job id", id)
}

/// Handler names, as jobs name them: the same rule as job ids.
pub fn validate_handler_name(name: &str) -> Result<(), String> {
    validate_name("handler name", name)
}

/// The longest `tracestate` a job keeps: the 512 bytes W3C asks every hop to pass on.
pub const MAX_TRACESTATE_LEN: usize = 512;

/// A W3C Trace Context `traceparent` (<https://www.w3.org/TR/trace-context/>), in the one form
/// every version shares: `VV-TTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTT-PPPPPPPPPPPPPPPP-FF`, 55
/// characters of lowercase hex and dashes, version not `ff`, trace id and parent id not all
/// zeros. A malformed one is refused, not dropped: a producer that meant to link its trace
/// learns at once that it did not.
pub fn validate_traceparent(value: &str) -> Result<(), String> {
    let fields: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = matches!(
        fields.as_slice(),
        [version, trace, parent, flags]
            if hex(version, 2) && *version != "ff" && hex(trace, 32) && hex(parent, 16)
                && hex(flags, 2)
                && trace.bytes().any(|b| b != b'0') && parent.bytes().any(|b| b != b'0')
    );
    if ok {
        Ok(())
    } else {
        let shown = truncate_utf8(value, 64);
        Err(format!(
            "traceparent {shown:?} is not a W3C traceparent (version-traceid-parentid-flags: \
             2, 32, 16 and 2 lowercase hex digits, ids not all zeros)"
        ))
    }
}

/// A W3C `tracestate`: 1 to [`MAX_TRACESTATE_LEN`] printable ASCII characters (spaces
/// allowed), kept as given.
pub fn validate_tracestate(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > MAX_TRACESTATE_LEN {
        return Err(format!(
            "tracestate must be 1 to {MAX_TRACESTATE_LEN} bytes long, got {}",
            value.len()
        ));
    }
    if !value.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err("tracestate must be printable ASCII".to_string());
    }
    Ok(())
}

/// Checks a job's trace context: each part's form, and no tracestate without a traceparent.
pub fn validate_trace_context(
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> Result<(), String> {
    if let Some(traceparent) = traceparent {
        validate_traceparent(traceparent)?;
    }
    if let Some(tracestate) = tracestate {
        if traceparent.is_none() {
            return Err("tracestate needs a traceparent".to_string());
        }
        validate_tracestate(tracestate)?;
    }
    Ok(())
}

fn validate_name(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(format!(
            "{what} is {} bytes long, over the limit of {MAX_NAME_LEN}",
            value.len()
        ));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{what} {value:?} must be printable ASCII without spaces"
        ));
    }
    Ok(())
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A fresh job id: a ULID (26 Crockford base32 characters: 48 bits of milliseconds since the
/// epoch, then 80 random bits). Ids sort by creation time and need no round trip to make.
pub fn generate_job_id(now_ms: u64, random: u128) -> String {
    let value: u128 = (u128::from(now_ms & 0xFFFF_FFFF_FFFF) << 80) | (random & ((1 << 80) - 1));
    (0..26)
        .rev()
        .map(|i| char::from(CROCKFORD[((value >> (i * 5)) & 0x1F) as usize]))
        .collect()
}

/// One attempt of a job, as kept in its `history` field (a JSON array).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1-based attempt number.
    pub attempt: u32,
    /// `ok`, or the outcome class of a failure: `lease_expired`, `result_too_large`, or
    /// whatever the worker reported (`timeout`, `trap`, `fail`...).
    pub outcome: String,
    /// The error message (empty on success).
    #[serde(default)]
    pub error: String,
    /// Host id of the worker that ran (or lost) the attempt.
    #[serde(default)]
    pub host: String,
    /// When the attempt was fetched, in ms since the epoch (Redis clock).
    #[serde(default)]
    pub started_at: u64,
    /// When the attempt ended (or its lease was found expired), ms since the epoch.
    #[serde(default)]
    pub finished_at: u64,
    /// The handler version that ran the attempt (`<registry version>:<sha256 prefix>`, or
    /// `local:<sha256 prefix>` for a host's `--handler` file); `None` when unknown (an expired
    /// lease, or a job recorded before versions were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What the attempt logged (stdout, stderr, `log` calls), one `<source>: <message>` line
    /// each, cut to [`MAX_ATTEMPT_LOG_LEN`] bytes; `None` when it logged nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<String>,
    /// The last progress (0-100) the attempt reported, if it reported any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    /// The attempt's call record: its outbound HTTP requests and SQL statements, at most
    /// [`MAX_ATTEMPT_CALLS`], in order of start. `None` when it made none, and for an attempt
    /// whose end no host recorded (`lease_expired`) or recorded before hosts kept calls. An
    /// entry that does not read as a [`CallEntry`] is left out (the rest of the history
    /// still reads).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_calls"
    )]
    pub calls: Option<Vec<CallEntry>>,
    /// Calls past [`MAX_ATTEMPT_CALLS`]: counted, not recorded.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_u64"
    )]
    pub calls_dropped: Option<u64>,
    /// A `suspended` attempt's durable sleep: its name and its length in ms (`suspend.lua`
    /// writes both since call records; an older entry has only its error text, `sleeping
    /// <ms> ms (sleep:<name>)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_u64"
    )]
    pub sleep_ms: Option<u64>,
}

/// Most calls an attempt's record keeps (`runtime/calls.rs`); the rest are only counted.
pub const MAX_ATTEMPT_CALLS: usize = 50;

/// One outbound HTTP request or SQL statement of an attempt, as its history entry keeps it
/// (compact keys; docs/protocol.md, "Call records"). It never holds a header, a body, a URL's
/// path or query, a statement's text, a parameter or a connection URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CallEntry {
    /// `http` or `sql`.
    #[serde(rename = "k")]
    pub kind: String,
    /// When it started, in ms from the start of the attempt on its host (the host's
    /// monotonic clock).
    #[serde(rename = "at", default)]
    pub at_ms: u64,
    /// How long it took, in ms (an HTTP request: to the response's head).
    #[serde(rename = "ms", default)]
    pub duration_ms: u64,
    /// HTTP: the method.
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// HTTP: `scheme://authority` only.
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// HTTP: the response's status code.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why there is no status (HTTP: `denied`, `timeout`, `error`), or `error` for a SQL
    /// statement that failed.
    #[serde(rename = "o", default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// SQL: the statement's command keyword (`SELECT`, `INSERT`, ...), when it is a known one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// SQL: the database grant's name the guest opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<String>,
}

/// `calls` of a history entry: the entries that read, or `None`; never an error, so an entry
/// written by hand cannot make the job's history unreadable.
fn lenient_calls<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Vec<CallEntry>>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    let serde_json::Value::Array(items) = value else {
        return Ok(None);
    };
    let calls: Vec<CallEntry> = items
        .into_iter()
        .filter_map(|item| serde_json::from_value(item).ok())
        .collect();
    Ok((!calls.is_empty()).then_some(calls))
}

/// A count of a history entry, `None` unless it reads as one.
fn lenient_u64<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<u64>, D::Error> {
    Ok(serde_json::Value::deserialize(d)?.as_u64())
}

/// A job as stored in Redis, decoded from its hash (see docs/protocol.md for every field).
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    pub queue: String,
    pub handler: String,
    pub payload: Vec<u8>,
    pub state: JobState,
    pub priority: i32,
    /// Attempts started so far (counting the running one when active).
    pub attempt: u32,
    /// The attempts and backoff the job's hash holds: its producer's, else the queue default
    /// until an attempt fails under a handler with a retry policy, which then writes its own
    /// (for the parts `own_policy` does not cover).
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// What of its retry policy the producer set.
    pub own_policy: OwnPolicy,
    /// Per-attempt deadline; `None` means the handler's default.
    pub timeout: Option<Duration>,
    /// Times in ms since the epoch, on the Redis server's clock.
    pub created_at_ms: u64,
    /// When a delayed job or a retry is due.
    pub run_at_ms: Option<u64>,
    /// When the current (or last) attempt was fetched.
    pub started_at_ms: Option<u64>,
    /// When the job completed or was dead-lettered.
    pub finished_at_ms: Option<u64>,
    /// Lease expiry of an active job.
    pub lease_expires_at_ms: Option<u64>,
    /// Host id of the holder of the current (or last) lease.
    pub host: Option<String>,
    /// The handler's result, for a completed job.
    pub result: Option<Vec<u8>>,
    /// The last failure's error and outcome class.
    pub last_error: Option<String>,
    pub last_outcome: Option<String>,
    /// Every finished attempt, oldest first.
    pub history: Vec<Attempt>,
    /// Times the job was replayed from the dead-letter queue.
    pub replays: u32,
    /// The job's group, if it was enqueued with one.
    pub group: Option<String>,
    /// Why its durable steps were deleted while it was dead, if they were: the only reason
    /// is `dead_letter_byte_cap` (the queue's `dead_step_bytes`, dead_steps.lua).
    pub steps_dropped: Option<String>,
    /// Who cancelled it (an API token's name, `cli`, what a client passed) and why, for a job
    /// dead-lettered by a cancel (`last_outcome` `cancelled`); `None` when not given.
    pub cancelled_by: Option<String>,
    pub cancel_reason: Option<String>,
    /// The W3C trace context it was enqueued with, if any (see [`JobOptions::traceparent`]).
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl Job {
    /// Decodes a job hash (`HGETALL wasmq:{queue}:job:<id>`). A missing or garbled field is an
    /// error naming the field, never a panic: the hash may have been written by anything.
    pub fn from_hash(queue: &str, id: &str, hash: HashMap<String, Vec<u8>>) -> Result<Job, String> {
        let mut fields = HashFields(hash);
        let handler = required("handler", fields.text("handler")?)?;
        let state = required("state", fields.text("state")?)?.parse::<JobState>()?;
        let payload = fields.take("payload").unwrap_or_default();
        let priority = fields.number("priority")?.unwrap_or(0);
        let attempt = fields.number("attempt")?.unwrap_or(0);
        let max_attempts = required("max_attempts", fields.number("max_attempts")?)?;
        let backoff = fields.backoff()?;
        let own_policy = OwnPolicy::parse(&fields.text("own_policy")?.unwrap_or_default());
        let timeout_ms: Option<u64> = fields.number("timeout_ms")?;
        let created_at_ms = required("created_at", fields.number("created_at")?)?;
        let run_at_ms = fields.number("run_at")?;
        let started_at_ms = fields.number("started_at")?;
        let finished_at_ms = fields.number("finished_at")?;
        let host = fields.text("host")?.filter(|h| !h.is_empty());
        let last_error = fields
            .take("last_error")
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let last_outcome = fields.text("last_outcome")?;
        let replays = fields.number("replays")?.unwrap_or(0);
        let group = fields.text("group")?.filter(|g| !g.is_empty());
        let steps_dropped = fields.text("steps_dropped")?.filter(|s| !s.is_empty());
        let cancelled_by = fields.text("cancelled_by")?.filter(|s| !s.is_empty());
        let cancel_reason = fields.text("cancel_reason")?.filter(|s| !s.is_empty());
        let (traceparent, tracestate) = fields.trace_context();
        let history = fields.history()?;
        let result = fields.take("result");
        Ok(Job {
            id: id.to_string(),
            queue: queue.to_string(),
            handler,
            payload,
            state,
            priority,
            attempt,
            max_attempts,
            backoff,
            own_policy,
            timeout: timeout_ms.filter(|ms| *ms > 0).map(Duration::from_millis),
            created_at_ms,
            run_at_ms,
            started_at_ms,
            finished_at_ms,
            lease_expires_at_ms: None,
            host,
            result,
            last_error,
            last_outcome,
            history,
            replays,
            group,
            steps_dropped,
            cancelled_by,
            cancel_reason,
            traceparent,
            tracestate,
        })
    }
}

/// The fields of a job hash being decoded ([`Job::from_hash`]): each taken once, its errors
/// naming it.
struct HashFields(HashMap<String, Vec<u8>>);

impl HashFields {
    fn take(&mut self, name: &str) -> Option<Vec<u8>> {
        self.0.remove(name)
    }

    /// The field as text; an error when it is not UTF-8.
    fn text(&mut self, name: &str) -> Result<Option<String>, String> {
        self.take(name)
            .map(|bytes| String::from_utf8(bytes).map_err(|_| format!("field {name} is not UTF-8")))
            .transpose()
    }

    /// The field as a number (`None` when missing or empty); an error when it is not one.
    fn number<T: FromStr>(&mut self, name: &str) -> Result<Option<T>, String> {
        self.text(name)?
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<T>()
                    .map_err(|_| format!("field {name} is not a valid number: {v:?}"))
            })
            .transpose()
    }

    /// The job's backoff (exponential from 1 s, capped at an hour, no jitter, unless its
    /// fields say otherwise).
    fn backoff(&mut self) -> Result<Backoff, String> {
        let kind = self
            .text("backoff")?
            .unwrap_or_else(|| "exponential".into());
        let ms = self.number("backoff_ms")?;
        let cap_ms = self.number("backoff_cap_ms")?;
        let jitter = self.number::<f64>("backoff_jitter")?;
        Backoff::from_fields(
            &kind,
            ms.unwrap_or(1000),
            cap_ms.unwrap_or(3_600_000),
            jitter.unwrap_or(0.0),
        )
    }

    /// The job's W3C trace context. A trace context is a hint for tracing, never a reason to
    /// refuse a job: one that is not valid (written by hand) is left out.
    fn trace_context(&mut self) -> (Option<String>, Option<String>) {
        let traceparent = self
            .text("traceparent")
            .ok()
            .flatten()
            .filter(|t| validate_traceparent(t).is_ok());
        let tracestate = self
            .text("tracestate")
            .ok()
            .flatten()
            .filter(|t| traceparent.is_some() && validate_tracestate(t).is_ok());
        (traceparent, tracestate)
    }

    /// The job's attempt history (empty when it has none).
    fn history(&mut self) -> Result<Vec<Attempt>, String> {
        match self.take("history") {
            None => Ok(Vec::new()),
            Some(bytes) if bytes.is_empty() => Ok(Vec::new()),
            // Lua may have cut an error message inside a UTF-8 sequence; decode lossily
            // rather than refuse the whole history.
            Some(bytes) => serde_json::from_str(&String::from_utf8_lossy(&bytes))
                .map_err(|err| format!("field history is not a JSON attempt list: {err}")),
        }
    }
}

/// `value`, or the error that the field `name` is missing.
fn required<T>(name: &str, value: Option<T>) -> Result<T, String> {
    value.ok_or_else(|| format!("field {name} is missing"))
}

/// Cuts `message` to at most `max` bytes on a character boundary.
pub fn truncate_utf8(message: &str, max: usize) -> &str {
    &message[..message.floor_char_boundary(max)]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn exponential_backoff_doubles_per_attempt_without_jitter() {
        let backoff = Backoff::Exponential {
            base: secs(1),
            cap: secs(3600),
            jitter: 0.0,
        };
        let delays: Vec<u64> = (1..=5).map(|n| backoff.delay_ms(n, 0.7)).collect();
        assert_eq!(delays, [1000, 2000, 4000, 8000, 16000]);
    }

    #[test]
    fn exponential_backoff_never_exceeds_its_cap() {
        let backoff = Backoff::Exponential {
            base: secs(1),
            cap: secs(10),
            jitter: 0.5,
        };
        for n in [4, 5, 30, 1000, u32::MAX] {
            for unit in [0.0, 0.5, 0.999_999] {
                assert!(
                    backoff.delay_ms(n, unit) <= 10_000,
                    "attempt {n}, unit {unit}"
                );
            }
        }
        assert_eq!(backoff.delay_bounds_ms(30), (5_000, 10_000));
    }

    #[test]
    fn jitter_spreads_the_delay_by_its_fraction_both_ways() {
        let backoff = Backoff::exponential(secs(1)).with_jitter(0.2);
        assert_eq!(backoff.delay_bounds_ms(3), (3_200, 4_800));
        assert_eq!(backoff.delay_ms(3, 0.5), 4_000);
    }

    #[test]
    fn fixed_backoff_is_the_same_for_every_attempt() {
        let backoff = Backoff::fixed(secs(2));
        assert_eq!(backoff.delay_ms(1, 0.3), 2000);
        assert_eq!(backoff.delay_ms(9, 0.3), 2000);
    }

    #[test]
    fn backoff_parses_the_cli_forms() {
        assert_eq!(
            "exponential:1s".parse::<Backoff>().unwrap(),
            Backoff::exponential(secs(1))
        );
        assert_eq!(
            "exponential:500ms:1m".parse::<Backoff>().unwrap(),
            Backoff::Exponential {
                base: Duration::from_millis(500),
                cap: secs(60),
                jitter: 0.2
            }
        );
        assert_eq!(
            "fixed:2s".parse::<Backoff>().unwrap(),
            Backoff::fixed(secs(2))
        );
        for bad in [
            "",
            "linear:1s",
            "fixed",
            "fixed:2s:3s",
            "exponential:1x",
            "exponential:10s:1s",
        ] {
            assert!(bad.parse::<Backoff>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn invalid_options_are_refused_with_a_reason() {
        let table: Vec<(NewJob, &str)> = vec![
            (NewJob::new("", "x"), "handler name must not be empty"),
            (NewJob::new("h h", "x"), "printable ASCII"),
            (
                NewJob::new("h", "x").with_id(""),
                "job id must not be empty",
            ),
            (
                NewJob::new("h", "x").with_id("a".repeat(129)),
                "over the limit",
            ),
            (
                NewJob::new("h", "x").with_max_attempts(0),
                "max attempts must be within",
            ),
            (
                NewJob::new("h", "x").with_max_attempts(1001),
                "max attempts must be within",
            ),
            (NewJob::new("h", "x").with_priority(1001), "priority"),
            (
                NewJob::new("h", "x").with_timeout(Duration::ZERO),
                "timeout",
            ),
            (
                NewJob::new("h", "x").with_backoff(Backoff::fixed(secs(1)).with_jitter(1.5)),
                "jitter",
            ),
        ];
        for (job, reason) in table {
            let err = job.validate().unwrap_err();
            assert!(err.contains(reason), "{err:?} should mention {reason:?}");
        }
        assert!(
            NewJob::new("send-email", "x")
                .with_priority(-1000)
                .validate()
                .is_ok()
        );
    }

    /// Found by fuzz/ (enqueue_options): jobs the client accepted and enqueue.lua refused
    /// (a millisecond field over its bound), or stored other than asked (a timeout under 1 ms
    /// stored as 0, the handler's default).
    #[test]
    fn options_the_script_would_refuse_or_store_otherwise_are_refused() {
        let years = |n: u64| Duration::from_secs(n * 365 * 24 * 3600);
        let table: Vec<(NewJob, &str)> = vec![
            (
                NewJob::new("h", "x").with_delay(Duration::from_millis(10_000_000_000_000_000)),
                "delay must be at most",
            ),
            (
                NewJob::new("h", "x").with_run_at(system_time(MAX_MS + 1)),
                "run-at must be at most",
            ),
            (
                NewJob::new("h", "x").with_timeout(Duration::from_micros(500)),
                "timeout must be within 1 ms",
            ),
            (
                NewJob::new("h", "x").with_timeout(years(40_000)),
                "timeout must be within 1 ms",
            ),
            (
                NewJob::new("h", "x").with_backoff(Backoff::fixed(years(40_000))),
                "backoff delays must be at most",
            ),
            (
                NewJob::new("h", "x").with_backoff(Backoff::Exponential {
                    base: secs(1),
                    cap: years(40_000),
                    jitter: 0.2,
                }),
                "backoff delays must be at most",
            ),
        ];
        for (job, reason) in table {
            let err = job.validate().unwrap_err();
            assert!(err.contains(reason), "{err:?} should mention {reason:?}");
        }
        let at_the_bounds = NewJob::new("h", "x")
            .with_delay(Duration::from_millis(MAX_MS))
            .with_timeout(Duration::from_millis(1))
            .with_backoff(Backoff::fixed(Duration::from_millis(MAX_MS)));
        assert_eq!(at_the_bounds.validate(), Ok(()));
        assert_eq!(
            NewJob::new("h", "x")
                .with_run_at(system_time(MAX_MS))
                .validate(),
            Ok(())
        );
    }

    #[test]
    fn queue_names_cannot_break_the_hash_tag() {
        for good in ["emails", "a", "team.reports:v2", "x_y-z"] {
            assert!(validate_queue_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a{b", "a}b", "with space", "ümlaut", &"q".repeat(129)] {
            assert!(validate_queue_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_ids_are_ulids_that_sort_by_time() {
        let a = generate_job_id(1_700_000_000_000, u128::MAX);
        let b = generate_job_id(1_700_000_000_001, 0);
        assert_eq!(a.len(), 26);
        assert!(a < b);
        assert!(validate_job_id(&a).is_ok());
        assert_eq!(generate_job_id(0, 0), "0".repeat(26));
    }

    #[test]
    fn wire_fields_carry_every_option() {
        let job = NewJob::new("h", "p")
            .with_priority(5)
            .with_delay(Duration::from_millis(1500))
            .with_max_attempts(7)
            .with_timeout(secs(30))
            .with_backoff(Backoff::fixed(secs(2)));
        let fields: HashMap<&str, String> = job
            .wire_fields()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
            .collect();
        assert_eq!(fields["priority"], "5");
        assert_eq!(fields["delay_ms"], "1500");
        assert_eq!(fields["max_attempts"], "7");
        assert_eq!(fields["timeout_ms"], "30000");
        assert_eq!(fields["backoff"], "fixed");
        assert_eq!(fields["backoff_ms"], "2000");
    }

    fn hash(pairs: &[(&str, &str)]) -> HashMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn a_job_hash_decodes_with_its_history() {
        let job = Job::from_hash(
            "q",
            "j1",
            hash(&[
                ("handler", "h"),
                ("state", "dead"),
                ("payload", "abc"),
                ("attempt", "2"),
                ("max_attempts", "2"),
                ("created_at", "1700000000000"),
                ("backoff", "fixed"),
                ("backoff_ms", "250"),
                (
                    "history",
                    r#"[{"attempt":1,"outcome":"trap","error":"boom","host":"h1","started_at":1,"finished_at":2}]"#,
                ),
            ]),
        )
        .unwrap();
        assert_eq!(job.state, JobState::Dead);
        assert_eq!(job.payload, b"abc");
        assert_eq!(job.backoff, Backoff::fixed(Duration::from_millis(250)));
        assert_eq!(job.history.len(), 1);
        assert_eq!(job.history[0].error, "boom");
    }

    #[test]
    fn a_malformed_job_hash_is_an_error_not_a_panic() {
        let base = [
            ("handler", "h"),
            ("state", "waiting"),
            ("max_attempts", "3"),
            ("created_at", "1"),
        ];
        assert!(Job::from_hash("q", "j", hash(&base)).is_ok());
        let broken: Vec<(&str, &str)> = vec![
            ("state", "sleeping"),
            ("attempt", "-1"),
            ("max_attempts", "many"),
            ("history", "{not json"),
            ("backoff", "linear"),
        ];
        for (field, value) in broken {
            let mut pairs: Vec<(&str, &str)> = base.to_vec();
            pairs.retain(|(k, _)| *k != field);
            pairs.push((field, value));
            let err = Job::from_hash("q", "j", hash(&pairs)).unwrap_err();
            assert!(err.contains(field) || err.contains(value), "{field}: {err}");
        }
        assert!(Job::from_hash("q", "j", HashMap::new()).is_err());
    }

    #[test]
    fn truncation_keeps_utf8_whole() {
        assert_eq!(truncate_utf8("héllo", 2), "h");
        assert_eq!(truncate_utf8("abc", 10), "abc");
    }
}
