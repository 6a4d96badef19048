//! Durable workflows, the queue's side (docs/workflows.md): the steps of a job and the sleep
//! that suspends it (its child jobs are `children.rs`).
//!
//! - Steps live in `wasmq:{q}:steps:<id>`, one hash per job in the job's slot: read with one
//!   `HGETALL` ([`Client::load_steps`]), written by `step_save.lua` under the job's lease
//!   ([`Client::save_step`]), deleted when the job completes, is cancelled or purged. A dead
//!   job keeps them (a replay resumes from them) until the queue's dead jobs hold more than its
//!   `dead_step_bytes`: then `dead_steps.lua` ([`Client::trim_dead_steps`]) deletes those of
//!   the jobs that died first and marks each job `steps_dropped`.
//! - A sleep is `suspend.lua` ([`Client::suspend`]): active -> delayed, the attempt not
//!   counted, the sleep's field written into the steps in the same call.

use std::collections::HashMap;
use std::time::Duration;

use super::ack::{AttemptRecord, MAX_VERSION_LEN, RecordsAttempt, progress_arg};
use super::client::Client;
use super::error::Result;
use super::job::{MAX_ATTEMPT_LOG_LEN, truncate_utf8};
use super::keys::QueueKeys;
use super::lease::{LeaseRejection, LeasedJob};
use super::reply::{Reply, rejections};
use super::scripts::{Call, SCRIPTS};

/// What [`Client::trim_dead_steps`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadStepsReport {
    /// Newly dead jobs with steps, counted in this call.
    pub counted: u64,
    /// The dead jobs whose steps it deleted, the first to die first.
    pub dropped: Vec<String>,
    /// The bytes the queue's dead jobs' steps hold now, as counted.
    pub held_bytes: u64,
}

/// An attempt that reached a durable sleep, for [`Client::suspend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspension {
    pub record: AttemptRecord,
    /// The sleep's field in the job's steps (`sleep:<name>`).
    pub field: String,
    pub delay: Duration,
}

impl RecordsAttempt for Suspension {
    fn record_mut(&mut self) -> &mut AttemptRecord {
        &mut self.record
    }
}

impl Suspension {
    pub fn new(job: &LeasedJob, field: impl Into<String>, delay: Duration) -> Suspension {
        Suspension {
            record: AttemptRecord::of(job),
            field: field.into(),
            delay,
        }
    }
}

/// Outcome of [`Client::suspend`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SuspendReport {
    /// The jobs now delayed, with when they are due again (ms).
    pub suspended: Vec<(String, u64)>,
    pub rejected: Vec<(String, LeaseRejection)>,
}

/// Outcome of [`Client::save_step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepSave {
    Saved,
    /// Nothing was written: this lease no longer holds the job.
    Rejected(LeaseRejection),
}

impl Client {
    /// Every field of a job's steps (`run:<name>`, `sleep:<name>`).
    pub async fn load_steps(&self, queue: &str, id: &str) -> Result<HashMap<String, Vec<u8>>> {
        let keys = QueueKeys::new(queue)?;
        let mut conn = self.conn.clone();
        Ok(redis::cmd("HGETALL")
            .arg(keys.steps(id))
            .query_async(&mut conn)
            .await?)
    }

    /// [`Client::load_steps`], unless they hold more than `max_bytes` (field names and values):
    /// then `None`, having held at most `max_bytes` and one `HSCAN` reply of them (a few
    /// fields). A worker reads a job's steps this way, so that steps saved under a larger
    /// limit (another host's, an older version's) cost it no more than its own.
    pub async fn load_steps_at_most(
        &self,
        queue: &str,
        id: &str,
        max_bytes: usize,
    ) -> Result<Option<HashMap<String, Vec<u8>>>> {
        /// Fields asked for per `HSCAN` (a hint; a small hash comes whole in one reply).
        const SCAN_COUNT: usize = 8;
        let keys = QueueKeys::new(queue)?;
        let key = keys.steps(id);
        let mut conn = self.conn.clone();
        let mut fields = HashMap::new();
        let mut bytes = 0usize;
        let mut cursor: u64 = 0;
        loop {
            let (next, page): (u64, Vec<(String, Vec<u8>)>) = redis::cmd("HSCAN")
                .arg(&key)
                .arg(cursor)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut conn)
                .await?;
            for (field, value) in page {
                bytes = bytes.saturating_add(field.len() + value.len());
                if bytes > max_bytes {
                    return Ok(None);
                }
                fields.insert(field, value);
            }
            if next == 0 {
                return Ok(Some(fields));
            }
            cursor = next;
        }
    }

    /// Counts the steps of up to `limit` jobs dead-lettered since the last call, then drops
    /// the steps of the jobs that died first while the queue's dead jobs hold more than its
    /// `dead_step_bytes` (`dead_steps.lua`). Every host's watchman calls it each tick.
    pub async fn trim_dead_steps(&self, queue: &str, limit: usize) -> Result<DeadStepsReport> {
        let keys = QueueKeys::new(queue)?;
        let mut invocation = Call::on(&SCRIPTS.dead_steps, &keys);
        invocation.arg(limit);
        let reply = Reply::of("dead_steps");
        let [counted, dropped, total] = reply.tuple(self.invoke(&invocation).await?)?;
        Ok(DeadStepsReport {
            counted: reply.uint(counted)?,
            dropped: reply.strings(dropped)?,
            held_bytes: reply.uint(total)?,
        })
    }

    /// Stores one field of an active job's steps, if `token` still holds its lease.
    pub async fn save_step(
        &self,
        queue: &str,
        id: &str,
        token: &str,
        field: &str,
        value: &[u8],
    ) -> Result<StepSave> {
        let keys = QueueKeys::new(queue)?;
        let mut invocation = Call::on(&SCRIPTS.step_save, &keys);
        invocation.arg(id).arg(token).arg(field).arg(value);
        let reply = Reply::of("step_save");
        let answer = reply.string(self.invoke(&invocation).await?)?;
        Ok(match answer.as_str() {
            "ok" => StepSave::Saved,
            reason => StepSave::Rejected(LeaseRejection::parse(reason)),
        })
    }

    /// Ends attempts at a durable sleep: each job is delayed by its sleep, its attempt not
    /// counted, and the sleep is marked elapsed for the attempt that follows.
    pub async fn suspend(&self, queue: &str, suspensions: &[Suspension]) -> Result<SuspendReport> {
        let keys = QueueKeys::new(queue)?;
        if suspensions.is_empty() {
            return Ok(SuspendReport::default());
        }
        let mut invocation = Call::on(&SCRIPTS.suspend, &keys);
        for s in suspensions {
            invocation
                .arg(&s.record.id)
                .arg(&s.record.token)
                .arg(&s.field)
                .arg(u64::try_from(s.delay.as_millis()).unwrap_or(u64::MAX))
                .arg(truncate_utf8(&s.record.version, MAX_VERSION_LEN))
                .arg(truncate_utf8(&s.record.logs, MAX_ATTEMPT_LOG_LEN))
                .arg(progress_arg(s.record.progress))
                .arg(&s.record.calls);
        }
        let reply = Reply::of("suspend");
        let [suspended, rejected] = reply.tuple(self.invoke(&invocation).await?)?;
        let suspended = reply
            .array(suspended)?
            .into_iter()
            .map(|item| {
                let [id, run_at] = reply.tuple(item)?;
                Ok((reply.string(id)?, reply.uint(run_at)?))
            })
            .collect::<Result<_>>()?;
        Ok(SuspendReport {
            suspended,
            rejected: rejections(&reply, rejected)?,
        })
    }
}
