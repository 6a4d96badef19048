//! Producing: [`Client::enqueue`] and [`Client::enqueue_bulk`] (`enqueue.lua`, the script
//! producers in any language run verbatim) and [`Client::cancel`] of jobs not started.

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
    Cancelled,
    NotFound,
    /// The job is active, completed or dead: nothing to cancel.
    NotCancellable(JobState),
}

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

    /// Cancels jobs that have not started (waiting, delayed, retry): they are deleted.
    pub async fn cancel(
        &self,
        queue: &str,
        ids: &[String],
    ) -> Result<Vec<(String, CancelOutcome)>> {
        let keys = QueueKeys::new(queue)?;
        let mut invocation = Call::on(&SCRIPTS.cancel, &keys);
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
}
