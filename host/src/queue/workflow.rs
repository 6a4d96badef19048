//! Durable workflows, the queue's side (docs/workflows.md): the steps of a job, the sleep that
//! suspends it, and the child jobs its completion writes.
//!
//! - Steps live in `wasmq:{q}:steps:<id>`, one hash per job in the job's slot: read with one
//!   `HGETALL` ([`Client::load_steps`]), written by `step_save.lua` under the job's lease
//!   ([`Client::save_step`]), deleted when the job completes, is cancelled or purged. A dead
//!   job keeps them (a replay resumes from them) until the queue's dead jobs hold more than its
//!   `dead_step_bytes`: then `dead_steps.lua` ([`Client::trim_dead_steps`]) deletes those of
//!   the jobs that died first and marks each job `steps_dropped`.
//! - A sleep is `suspend.lua` ([`Client::suspend`]): active -> delayed, the attempt not
//!   counted, the sleep's field written into the steps in the same call.
//! - Children cannot be written by the completion itself when they go to other queues (other
//!   slots on Redis Cluster), so the completion writes them to the parent queue's outbox
//!   (`wasmq:{q}:outbox:<parent id>`, and the parent into `wasmq:{q}:outbox`), atomically with
//!   the completion and only if it is recorded. Delivery ([`Client::deliver_outbox`]) enqueues
//!   each child under its fixed id, which `enqueue.lua` deduplicates, then forgets the entry;
//!   a crash in between makes the next delivery a no-op for the children already there. The
//!   host that completed the parent delivers at once; [`Client::recover_outbox`] lets any host
//!   deliver what a host that died in between left behind.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::client::{Client, LeaseRejection, LeasedJob, MAX_VERSION_LEN, progress_arg, rejections};
use super::error::{QueueError, Result};
use super::job::{
    MAX_ATTEMPT_LOG_LEN, NewJob, RunAt, truncate_utf8, validate_job_id, validate_queue_name,
};
use super::keys::QueueKeys;
use super::limit::RateLimit;
use super::reply::Reply;
use super::scripts::SCRIPTS;

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

/// A child job: enqueued in `queue` once its parent's completion is recorded. Its id is set
/// (`job.options.id`), so that delivering it twice enqueues it once.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    pub queue: String,
    pub job: NewJob,
}

impl Child {
    /// Checks what enqueue would check, except the target queue's payload limit (a child over
    /// it is refused at delivery, and logged).
    pub fn validate(&self) -> std::result::Result<(), String> {
        validate_queue_name(&self.queue)?;
        match &self.job.options.id {
            Some(id) => validate_job_id(id)?,
            None => return Err("a child job needs an id".to_string()),
        }
        self.job.validate()
    }
}

/// A child as the outbox stores it (JSON, payload in base64).
#[derive(Serialize, Deserialize)]
struct WireChild {
    queue: String,
    id: String,
    handler: String,
    payload: String,
    #[serde(default)]
    priority: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delay_ms: Option<u64>,
    /// Its generation (entries written before it existed read as 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    depth: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tracestate: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The outbox entry of `children`: empty for none.
pub(crate) fn encode_children(children: &[Child]) -> Result<Vec<u8>> {
    if children.is_empty() {
        return Ok(Vec::new());
    }
    let wire: Vec<WireChild> = children
        .iter()
        .map(|child| {
            child.validate().map_err(|reason| QueueError::InvalidJob {
                id: child.job.options.id.clone(),
                reason,
            })?;
            Ok(WireChild {
                queue: child.queue.clone(),
                id: child.job.options.id.clone().unwrap_or_default(),
                handler: child.job.handler.clone(),
                payload: base64::engine::general_purpose::STANDARD.encode(&child.job.payload),
                priority: child.job.options.priority,
                delay_ms: match child.job.options.run_at {
                    RunAt::Delay(delay) => {
                        Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
                    }
                    _ => None,
                },
                depth: child.job.options.depth,
                traceparent: child.job.options.traceparent.clone(),
                tracestate: child.job.options.tracestate.clone(),
            })
        })
        .collect::<Result<_>>()?;
    serde_json::to_vec(&wire).map_err(|err| QueueError::InvalidArgument(err.to_string()))
}

fn decode_children(bytes: &[u8]) -> std::result::Result<Vec<Child>, String> {
    let wire: Vec<WireChild> = serde_json::from_slice(bytes).map_err(|err| err.to_string())?;
    wire.into_iter()
        .map(|w| {
            let payload = base64::engine::general_purpose::STANDARD
                .decode(w.payload.as_bytes())
                .map_err(|err| format!("child {}: payload: {err}", w.id))?;
            let mut job = NewJob::new(w.handler, payload)
                .with_id(w.id)
                .with_priority(w.priority)
                .with_depth(w.depth);
            if let Some(ms) = w.delay_ms {
                job = job.with_delay(Duration::from_millis(ms));
            }
            job.options.traceparent = w.traceparent;
            job.options.tracestate = w.tracestate;
            Ok(Child {
                queue: w.queue,
                job,
            })
        })
        .collect()
}

/// An attempt that reached a durable sleep, for [`Client::suspend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspension {
    pub id: String,
    pub token: String,
    /// The sleep's field in the job's steps (`sleep:<name>`).
    pub field: String,
    pub delay: Duration,
    /// The handler version that ran the attempt, what it logged and its last progress, for
    /// its history entry.
    pub version: String,
    pub logs: String,
    pub progress: Option<u8>,
}

impl Suspension {
    pub fn new(job: &LeasedJob, field: impl Into<String>, delay: Duration) -> Suspension {
        Suspension {
            id: job.id.clone(),
            token: job.token.clone(),
            field: field.into(),
            delay,
            version: String::new(),
            logs: String::new(),
            progress: None,
        }
    }

    pub fn with_version(mut self, version: impl Into<String>) -> Suspension {
        self.version = version.into();
        self
    }

    pub fn with_logs(mut self, logs: impl Into<String>, progress: Option<u8>) -> Suspension {
        self.logs = logs.into();
        self.progress = progress;
        self
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

/// Outcome of [`Client::throttle_start`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThrottleStart {
    /// The start is logged: run the job.
    Admitted,
    /// The handler's throttle is full for the job's key; it frees in this long.
    Wait(Duration),
    /// The lease does not hold the job.
    Rejected(LeaseRejection),
}

/// Outcome of delivering outbox entries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutboxReport {
    /// The parents whose entries were delivered and removed.
    pub delivered: Vec<String>,
    /// Children enqueued now (not counting those already there).
    pub created: u64,
    /// Children the target queue refused (bad name, over its payload limit), with why: dropped.
    pub refused: Vec<(String, String)>,
    /// The parents whose entries stay because a child's queue is full (`max_waiting`): a
    /// later delivery goes on with them.
    pub waiting: Vec<String>,
}

/// Most children one enqueue call of a delivery carries.
pub const DELIVERY_BATCH: usize = 100;

/// Whether `err` refuses the jobs of a call, rather than failing it: one of them is invalid or
/// too large, or the queue is full. Delivering one child at a time tells which.
fn refusal(err: &QueueError) -> bool {
    matches!(
        err,
        QueueError::InvalidJob { .. }
            | QueueError::InvalidQueue(_)
            | QueueError::PayloadTooLarge { .. }
            | QueueError::QueueFull { .. }
    )
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
        let mut invocation = Self::invocation(
            &SCRIPTS.dead_steps,
            &[
                keys.job_prefix(),
                keys.config(),
                keys.dead(),
                keys.steps_prefix(),
                keys.dead_steps(),
                keys.dead_steps_bytes(),
                keys.dead_steps_meta(),
            ],
        );
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
        let mut invocation = Self::invocation(
            &SCRIPTS.step_save,
            &[
                keys.job_prefix(),
                keys.steps_prefix(),
                keys.config(),
                keys.events(),
            ],
        );
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
        let mut invocation = Self::invocation(
            &SCRIPTS.suspend,
            &[
                keys.job_prefix(),
                keys.config(),
                keys.active(),
                keys.delayed(),
                keys.events(),
                keys.steps_prefix(),
            ],
        );
        for s in suspensions {
            invocation
                .arg(&s.id)
                .arg(&s.token)
                .arg(&s.field)
                .arg(u64::try_from(s.delay.as_millis()).unwrap_or(u64::MAX))
                .arg(truncate_utf8(&s.version, MAX_VERSION_LEN))
                .arg(truncate_utf8(&s.logs, MAX_ATTEMPT_LOG_LEN))
                .arg(progress_arg(s.progress));
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

    /// Admits the start of a leased job under its handler's throttle (`limit` starts per
    /// window per key, the key being the job's group), logging it, or says how long until the
    /// throttle has room; the caller then gives the job back with [`Client::suspend`] and an
    /// empty field.
    pub async fn throttle_start(
        &self,
        queue: &str,
        id: &str,
        token: &str,
        handler: &str,
        limit: RateLimit,
    ) -> Result<ThrottleStart> {
        let keys = QueueKeys::new(queue)?;
        let mut invocation = Self::invocation(
            &SCRIPTS.throttle,
            &[keys.job_prefix(), keys.throttle_prefix()],
        );
        invocation
            .arg(id)
            .arg(token)
            .arg(handler)
            .arg(limit.max)
            .arg(limit.window_ms());
        let reply = Reply::of("throttle");
        let [verdict, detail] = reply.tuple(self.invoke(&invocation).await?)?;
        Ok(match reply.int(verdict)? {
            1 => ThrottleStart::Admitted,
            0 => ThrottleStart::Wait(Duration::from_millis(reply.uint(detail)?)),
            _ => ThrottleStart::Rejected(LeaseRejection::parse(&reply.string(detail)?)),
        })
    }

    /// Delivers the outbox entries of `parents` (completed jobs of `queue`): enqueues each
    /// child under its id (a child already there is left alone), then removes the entries.
    /// Children go in calls of at most [`DELIVERY_BATCH`], the task yielding between calls, so
    /// that a parent with a thousand children does not hold a runtime thread or Redis for long.
    /// A child whose queue is full (`max_waiting`) is not dropped: its parent's entry stays,
    /// listed in [`OutboxReport::waiting`], for a later delivery (`recover_outbox`) when the
    /// queue has room. A Redis failure leaves the undelivered entries for a later delivery.
    pub async fn deliver_outbox(&self, queue: &str, parents: &[String]) -> Result<OutboxReport> {
        let keys = QueueKeys::new(queue)?;
        let mut report = OutboxReport::default();
        for parent in parents {
            let mut conn = self.conn.clone();
            let entry: Option<Vec<u8>> = redis::cmd("GET")
                .arg(keys.outbox_entry(parent))
                .query_async(&mut conn)
                .await?;
            let children = match entry.as_deref().map(decode_children) {
                None => Vec::new(),
                Some(Ok(children)) => children,
                Some(Err(reason)) => {
                    // Only a hand edit makes an entry this host's code wrote unreadable;
                    // keeping it would retry it forever.
                    tracing::error!(%queue, parent = %parent, %reason, "dropping an outbox entry that does not decode");
                    Vec::new()
                }
            };
            if !self
                .deliver_children(queue, parent, children, &mut report)
                .await?
            {
                report.waiting.push(parent.clone());
                continue;
            }
            let mut invocation = Self::invocation(&SCRIPTS.outbox_done, &[keys.outbox()]);
            invocation.arg(parent);
            self.invoke(&invocation).await?;
            report.delivered.push(parent.clone());
        }
        Ok(report)
    }

    /// Enqueues the children of one outbox entry, in order, in calls of at most
    /// [`DELIVERY_BATCH`] jobs of one queue. False when a child's queue is full: the children
    /// before it are enqueued, and the entry must stay.
    async fn deliver_children(
        &self,
        queue: &str,
        parent: &str,
        children: Vec<Child>,
        report: &mut OutboxReport,
    ) -> Result<bool> {
        let mut rest = children.as_slice();
        while let Some(first) = rest.first() {
            let run = rest
                .iter()
                .take(DELIVERY_BATCH)
                .take_while(|c| c.queue == first.queue)
                .count();
            let (batch, after) = rest.split_at(run);
            rest = after;
            let jobs: Vec<NewJob> = batch.iter().map(|c| c.job.clone()).collect();
            match self.enqueue_bulk(&first.queue, &jobs).await {
                Ok(enqueued) => {
                    report.created += enqueued.iter().filter(|e| e.created).count() as u64;
                }
                Err(err) if refusal(&err) => {
                    // Which child, or how many fit, is not known: one at a time.
                    for child in batch {
                        if !self.deliver_one(queue, parent, child, report).await? {
                            return Ok(false);
                        }
                    }
                }
                // Redis failed, or a key of the child's queue is of another type: nothing
                // of this call was written, and the entry stays for a later delivery.
                Err(err) => return Err(err),
            }
            tokio::task::yield_now().await;
        }
        Ok(true)
    }

    /// Enqueues one child; false when its queue is full (nothing written).
    async fn deliver_one(
        &self,
        queue: &str,
        parent: &str,
        child: &Child,
        report: &mut OutboxReport,
    ) -> Result<bool> {
        let id = child.job.options.id.clone().unwrap_or_default();
        match self.enqueue(&child.queue, &child.job).await {
            Ok(enqueued) => report.created += u64::from(enqueued.created),
            Err(QueueError::QueueFull { .. }) => {
                tracing::debug!(%queue, parent = %parent, child = %id, child_queue = %child.queue, "a child job waits in the outbox for room in its queue");
                return Ok(false);
            }
            Err(QueueError::Redis(err)) => return Err(QueueError::Redis(err)),
            // A key of the child's queue of another type: nothing was written, and
            // the entry stays in the outbox until a person fixes the key.
            Err(err @ QueueError::WrongType { .. }) => return Err(err),
            Err(refused) => {
                tracing::warn!(%queue, parent = %parent, child = %id, child_queue = %child.queue, error = %refused, "a child job was refused by its queue and dropped");
                report.refused.push((id, refused.to_string()));
            }
        }
        Ok(true)
    }

    /// Delivers up to `limit` outbox entries of `queue` written at least `age` ago: those the
    /// host that completed their parent did not deliver (it died, or Redis failed it).
    pub async fn recover_outbox(
        &self,
        queue: &str,
        age: Duration,
        limit: usize,
    ) -> Result<OutboxReport> {
        let keys = QueueKeys::new(queue)?;
        let mut invocation = Self::invocation(&SCRIPTS.outbox_due, &[keys.outbox()]);
        invocation
            .arg(u64::try_from(age.as_millis()).unwrap_or(u64::MAX))
            .arg(limit);
        let reply = Reply::of("outbox_due");
        let parents = reply.strings(self.invoke(&invocation).await?)?;
        self.deliver_outbox(queue, &parents).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn children_round_trip_through_the_outbox_encoding() {
        let children = vec![
            Child {
                queue: "mail".into(),
                job: NewJob::new("send", vec![0, 159, 255])
                    .with_id("q/p:c1")
                    .with_priority(-3)
                    .with_delay(Duration::from_millis(1500))
                    .with_depth(4),
            },
            Child {
                queue: "q".into(),
                job: NewJob::new("h", b"{}".to_vec())
                    .with_id("q/p:c2")
                    .with_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
                    .with_tracestate("a=1"),
            },
        ];
        let bytes = encode_children(&children).unwrap();
        assert_eq!(decode_children(&bytes).unwrap(), children);
        assert!(encode_children(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_child_without_an_id_or_with_a_bad_queue_is_refused() {
        let no_id = Child {
            queue: "q".into(),
            job: NewJob::new("h", Vec::new()),
        };
        assert!(no_id.validate().is_err());
        let bad_queue = Child {
            queue: "a{b".into(),
            job: NewJob::new("h", Vec::new()).with_id("x"),
        };
        assert!(bad_queue.validate().is_err());
    }
}
