//! Leases: a worker's hold on the jobs it runs. [`Client::fetch_batch`] leases jobs
//! (`fetch.lua`), [`Client::extend`] renews the leases, [`Client::release`] gives them back
//! on shutdown, [`Client::recover_expired`] fails the attempts whose lease ran out, and
//! [`Client::promote`] moves due delayed and retry jobs to waiting. The acks are `ack.rs`.

use std::time::Duration;

use redis::Value;

use super::FailReport;
use super::client::{Client, MAX_BULK, millis, random_seed, random_token};
use super::error::{QueueError, Result};
use super::job::{OwnPolicy, RetryPolicy, validate_traceparent, validate_tracestate};
use super::keys::QueueKeys;
use super::reply::{Reply, fail_outcomes, rejections};
use super::scripts::{Call, SCRIPTS};

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

impl Client {
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
        let mut invocation = Call::on(&SCRIPTS.fetch, &keys);
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
        let mut invocation = Call::on(&SCRIPTS.extend, &keys);
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

    /// Returns active jobs to waiting without counting the attempt (graceful shutdown).
    pub async fn release(&self, queue: &str, leases: &[Lease]) -> Result<Released> {
        let keys = QueueKeys::new(queue)?;
        if leases.is_empty() {
            return Ok(Released::default());
        }
        let mut invocation = Call::on(&SCRIPTS.release, &keys);
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
        let mut invocation = Call::on(&SCRIPTS.recover, &keys);
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
        let mut invocation = Call::on(&SCRIPTS.promote, &keys);
        invocation.arg(limit);
        let reply = Reply::of("promote");
        let [moved, next_due] = reply.tuple(self.invoke(&invocation).await?)?;
        let next_due = reply.uint(next_due)?;
        Ok((reply.uint(moved)?, (next_due > 0).then_some(next_due)))
    }
}

/// Decodes fetch.lua's reply (also the `fetched` part of complete_fetch.lua's); `token` is the
/// lease token the call sent.
pub(super) fn fetched(reply: &Reply, value: Value, queue: &str, token: &str) -> Result<Fetched> {
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
