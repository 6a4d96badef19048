//! Producing: [`Client::enqueue`] and [`Client::enqueue_bulk`] (`enqueue.lua`, the script
//! producers in any language run verbatim), [`Client::cancel`] of jobs in any state but
//! finished (`cancel.lua`) and [`Client::cancel_matching`], the paged cancel of every job of a
//! handler or a group that has not started (`cancel_filter.lua`).

use std::time::SystemTime;

use super::client::{Client, MAX_BULK};
use super::error::{QueueError, Result};
use super::job::{JobState, NewJob, generate_job_id, unix_ms};
use super::keys::QueueKeys;
use super::reply::Reply;
use super::scripts::{Call, SCRIPTS};

/// The result of enqueueing one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The job's id; for a job deduplicated or debounced, the id of the job that stands for it
    /// (the one that took the dedupe key, or the debounce key's pending job).
    pub id: String,
    /// False when nothing was created: a job with this id already existed, or the job was
    /// deduplicated or debounced ([`Enqueued::outcome`]).
    pub created: bool,
    /// The state of the job `id` names (for an existing job, its current state); `None` only
    /// for a deduplicated job whose first job is no longer kept (completed and trimmed,
    /// cancelled, purged).
    pub state: Option<JobState>,
    pub outcome: EnqueueOutcome,
}

/// What an enqueue did with one job (enqueue.lua's reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueOutcome {
    Created,
    /// A job with this id exists: nothing written.
    Exists,
    /// Its dedupe key was taken within its TTL: nothing written; `id` names the first job.
    Deduplicated,
    /// Its debounce key had a pending job: that job (`id`) took this payload and a later start.
    Debounced,
}

/// Outcome of cancelling one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Dead-lettered with outcome `cancelled` (a running job's attempt is stopped).
    Cancelled,
    NotFound,
    /// The job is completed or dead: nothing to cancel.
    NotCancellable(JobState),
}

/// Who cancels and why, kept on a cancelled job (`cancelled_by`, `cancel_reason`, and its
/// history entry); each is cut to 256 bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CancelBy {
    /// An API token's name, `cli`, or what a client passes; empty for none.
    pub by: String,
    /// Empty for none.
    pub reason: String,
}

impl CancelBy {
    pub fn new(by: impl Into<String>, reason: impl Into<String>) -> CancelBy {
        CancelBy {
            by: by.into(),
            reason: reason.into(),
        }
    }
}

/// Which jobs [`Client::cancel_matching`] cancels: those of a handler, or of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelFilter {
    Handler(String),
    Group(String),
}

/// One page of [`Client::cancel_matching`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelPage {
    /// The cursor to pass for the next page; `None` when the scan is done.
    pub cursor: Option<String>,
    /// The jobs this page cancelled.
    pub cancelled: Vec<String>,
    /// How many job ids this page looked at.
    pub examined: u64,
}

/// The most job ids one [`Client::cancel_matching`] page may look at.
pub const MAX_CANCEL_PAGE: usize = 10_000;

impl Client {
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
        let mut invocation = Call::on(&SCRIPTS.enqueue, &keys);
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
                let outcome = match reply.string(outcome)?.as_str() {
                    "created" => EnqueueOutcome::Created,
                    "exists" => EnqueueOutcome::Exists,
                    "deduplicated" => EnqueueOutcome::Deduplicated,
                    "debounced" => EnqueueOutcome::Debounced,
                    other => return Err(reply.error(format!("unknown outcome {other:?}"))),
                };
                let state = match state.as_str() {
                    "" if outcome == EnqueueOutcome::Deduplicated => None,
                    _ => Some(state.parse().map_err(|err: String| reply.error(err))?),
                };
                Ok(Enqueued {
                    id: reply.string(id)?,
                    created: outcome == EnqueueOutcome::Created,
                    state,
                    outcome,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if out.len() != jobs.len() {
            return Err(reply.error(format!("{} replies for {} jobs", out.len(), jobs.len())));
        }
        Ok(out)
    }

    /// Cancels jobs, with no one named as cancelling them ([`Client::cancel_by`]).
    pub async fn cancel(
        &self,
        queue: &str,
        ids: &[String],
    ) -> Result<Vec<(String, CancelOutcome)>> {
        self.cancel_by(queue, ids, &CancelBy::default()).await
    }

    /// Cancels jobs whatever their state but completed and dead: each is dead-lettered with
    /// outcome `cancelled`, `who` recorded on it, and not retried. A running job's lease ends
    /// in the same call and its host is told to stop the attempt, whose outcome is then
    /// refused (its children and pending steps are not written).
    pub async fn cancel_by(
        &self,
        queue: &str,
        ids: &[String],
        who: &CancelBy,
    ) -> Result<Vec<(String, CancelOutcome)>> {
        let keys = QueueKeys::new(queue)?;
        let mut invocation = Call::on(&SCRIPTS.cancel, &keys);
        invocation.arg(&who.by).arg(&who.reason);
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

    /// Cancels one page of the jobs of `filter` that have not started (waiting, delayed,
    /// retry), looking at about `limit` (1..=[`MAX_CANCEL_PAGE`]) job ids from `cursor`
    /// (`None` to start): one script call. Pass the returned cursor until it is `None`.
    pub async fn cancel_matching(
        &self,
        queue: &str,
        filter: &CancelFilter,
        who: &CancelBy,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<CancelPage> {
        let keys = QueueKeys::new(queue)?;
        if !(1..=MAX_CANCEL_PAGE).contains(&limit) {
            return Err(QueueError::InvalidArgument(format!(
                "a cancel page looks at 1 to {MAX_CANCEL_PAGE} jobs, not {limit}"
            )));
        }
        let (kind, name) = match filter {
            CancelFilter::Handler(name) => ("handler", name),
            CancelFilter::Group(name) => ("group", name),
        };
        if name.is_empty() {
            return Err(QueueError::InvalidArgument(format!(
                "cancel by {kind} needs a {kind} name"
            )));
        }
        let mut invocation = Call::on(&SCRIPTS.cancel_filter, &keys);
        invocation
            .arg(&who.by)
            .arg(&who.reason)
            .arg(kind)
            .arg(name)
            .arg(cursor.unwrap_or("0"))
            .arg(limit);
        let reply = Reply::of("cancel_filter");
        let [next, cancelled, examined] = reply.tuple(self.invoke(&invocation).await?)?;
        let next = reply.string(next)?;
        Ok(CancelPage {
            cursor: (next != "0").then_some(next),
            cancelled: reply
                .array(cancelled)?
                .into_iter()
                .map(|id| reply.string(id))
                .collect::<Result<Vec<_>>>()?,
            examined: reply.uint(examined)?,
        })
    }
}
