//! Acks: what a worker records when an attempt ends. [`Completion`], [`Failure`] (and
//! `steps.rs`'s `Suspension`) are the attempt records, each an [`AttemptRecord`] and what its
//! end adds; [`Client::complete`],
//! [`Client::complete_and_fetch`] (the completions and the next lease in one call) and
//! [`Client::fail`] write them, each refusing a job whose lease this worker no longer holds.

use std::time::Duration;

use redis::Value;

use super::children::{Child, encode_children};
use super::client::{Client, MAX_BULK, millis, random_seed, random_token};
use super::error::{QueueError, Result};
use super::job::{MAX_ATTEMPT_LOG_LEN, MAX_ERROR_LEN, RetryPolicy, truncate_utf8};
use super::keys::QueueKeys;
use super::lease::{Fetched, LeaseRejection, LeasedJob, fetched};
use super::reply::{Reply, fail_outcomes, rejections};
use super::scripts::{Call, SCRIPTS};

/// Longest handler version label an attempt's history records.
pub(super) const MAX_VERSION_LEN: usize = 128;

/// What every attempt record carries, however the attempt ended: the job and the lease it
/// ends, and what the attempt leaves in the job's history. [`Completion`], [`Failure`] and
/// [`Suspension`](super::Suspension) each hold one, and share its builders
/// ([`RecordsAttempt`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub id: String,
    /// The lease the attempt ran under: a call refuses the record when it no longer holds.
    pub token: String,
    /// The handler version that ran the attempt ('' when unknown).
    pub version: String,
    /// What the attempt logged (cut to [`MAX_ATTEMPT_LOG_LEN`] bytes when written), and its
    /// last progress.
    pub logs: String,
    pub progress: Option<u8>,
    /// The attempt's call record as the scripts take it: '' when it made no call, else a JSON
    /// array of [`CallEntry`](super::CallEntry)s ending with the number of calls dropped when
    /// there were any (docs/protocol.md, "Call records").
    pub calls: String,
}

impl AttemptRecord {
    /// The record of an attempt of `job` under its lease, with nothing logged yet.
    pub fn of(job: &LeasedJob) -> AttemptRecord {
        AttemptRecord {
            id: job.id.clone(),
            token: job.token.clone(),
            version: String::new(),
            logs: String::new(),
            progress: None,
            calls: String::new(),
        }
    }
}

/// The builders every attempt record shares.
pub trait RecordsAttempt: Sized {
    /// The part every record has.
    fn record_mut(&mut self) -> &mut AttemptRecord;

    /// Records what the attempt logged (cut to [`MAX_ATTEMPT_LOG_LEN`] bytes) and its last
    /// progress.
    fn with_logs(mut self, logs: impl Into<String>, progress: Option<u8>) -> Self {
        let record = self.record_mut();
        record.logs = logs.into();
        record.progress = progress;
        self
    }

    /// Records the attempt's call record (see [`AttemptRecord::calls`]).
    fn with_calls(mut self, calls: impl Into<String>) -> Self {
        self.record_mut().calls = calls.into();
        self
    }

    /// Records which handler version ran the attempt.
    fn with_version(mut self, version: impl Into<String>) -> Self {
        self.record_mut().version = version.into();
        self
    }
}

/// A successful attempt, for [`Client::complete`].
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub record: AttemptRecord,
    pub result: Vec<u8>,
    /// Child jobs to write with the completion (through the queue's outbox; see
    /// docs/workflows.md), each with its id set.
    pub children: Vec<Child>,
    /// `children` as the outbox stores them, when encoded ahead
    /// ([`Completion::encode_children`]).
    encoded_children: Option<Vec<u8>>,
}

impl RecordsAttempt for Completion {
    fn record_mut(&mut self) -> &mut AttemptRecord {
        &mut self.record
    }
}

impl Completion {
    pub fn new(job: &LeasedJob, result: impl Into<Vec<u8>>) -> Completion {
        Completion {
            record: AttemptRecord::of(job),
            result: result.into(),
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
}

/// A failed attempt, for [`Client::fail`].
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub record: AttemptRecord,
    /// Outcome class, as the runtime names it: `retry`, `fail`, `timeout`, `trap`, `memory_limit`...
    pub outcome: String,
    pub error: String,
    /// A permanent failure dead-letters the job at once, whatever attempts are left.
    pub permanent: bool,
    /// The handler's retry policy, applied to what the job did not set itself.
    pub policy: RetryPolicy,
}

impl RecordsAttempt for Failure {
    fn record_mut(&mut self) -> &mut AttemptRecord {
        &mut self.record
    }
}

impl Failure {
    pub fn new(job: &LeasedJob, outcome: impl Into<String>, error: impl Into<String>) -> Failure {
        Failure {
            record: AttemptRecord::of(job),
            outcome: outcome.into(),
            error: error.into(),
            permanent: false,
            policy: RetryPolicy::default(),
        }
    }

    /// Records which handler version ran the attempt, and applies that handler's retry policy.
    pub fn with_handler(self, version: impl Into<String>, policy: RetryPolicy) -> Failure {
        let mut failure = self.with_version(version);
        failure.policy = policy;
        failure
    }

    /// Marks the failure permanent: straight to the dead-letter queue.
    pub fn permanent(mut self) -> Failure {
        self.permanent = true;
        self
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

impl Client {
    /// Completes jobs with their results in one call (active -> completed, then retention).
    pub async fn complete(&self, queue: &str, done: &[Completion]) -> Result<CompleteReport> {
        let keys = QueueKeys::new(queue)?;
        if done.is_empty() {
            return Ok(CompleteReport::default());
        }
        let mut invocation = Call::on(&SCRIPTS.complete, &keys);
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
        let mut invocation = Call::on(&SCRIPTS.complete_fetch, &keys);
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
        let mut invocation = Call::on(&SCRIPTS.fail, &keys);
        invocation.arg(random_seed());
        for failure in failures {
            invocation
                .arg(&failure.record.id)
                .arg(&failure.record.token)
                .arg(truncate_utf8(&failure.outcome, 64))
                .arg(truncate_utf8(&failure.error, MAX_ERROR_LEN))
                .arg(if failure.permanent { "1" } else { "0" })
                .arg(truncate_utf8(&failure.record.version, MAX_VERSION_LEN))
                .arg(failure.policy.wire())
                .arg(truncate_utf8(&failure.record.logs, MAX_ATTEMPT_LOG_LEN))
                .arg(progress_arg(failure.record.progress))
                .arg(&failure.record.calls);
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
}

/// The per-job arguments of complete.lua and complete_fetch.lua: id, token, result, version,
/// logs, progress, children, calls (docs/protocol.md).
fn push_completions(invocation: &mut Call<'_>, done: &[Completion]) -> Result<()> {
    for completion in done {
        invocation
            .arg(&completion.record.id)
            .arg(&completion.record.token)
            .arg(completion.result.as_slice())
            .arg(truncate_utf8(&completion.record.version, MAX_VERSION_LEN))
            .arg(truncate_utf8(&completion.record.logs, MAX_ATTEMPT_LOG_LEN))
            .arg(progress_arg(completion.record.progress));
        match &completion.encoded_children {
            Some(bytes) => invocation.arg(bytes.as_slice()),
            None => invocation.arg(encode_children(&completion.children)?),
        };
        invocation.arg(&completion.record.calls);
    }
    Ok(())
}

/// A progress as the scripts take it: digits, or empty for none.
pub(super) fn progress_arg(progress: Option<u8>) -> String {
    progress.map(|p| p.min(100).to_string()).unwrap_or_default()
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
