//! Reading a queue: one job ([`Client::get`]), the counts per state, a page of a state's
//! jobs ([`Client::list`]) and the events stream. Finding jobs by a filter, a bounded page at a
//! time, is `search.rs`'s [`Client::search`].

use std::collections::HashMap;

use redis::Value;

use super::client::Client;
use super::error::{QueueError, Result};
use super::job::{Job, JobState, validate_job_id};
use super::keys::QueueKeys;
use super::reply::Reply;
use super::scripts::{Call, SCRIPTS};

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

impl Client {
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
        let invocation = Call::on(&SCRIPTS.counts, &keys);
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
        let mut invocation = Call::listing(&SCRIPTS.list, &keys, state);
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
}

fn decode_job(queue: &str, id: &str, hash: HashMap<String, Vec<u8>>) -> Result<Job> {
    Job::from_hash(queue, id, hash).map_err(|reason| QueueError::MalformedJob {
        queue: queue.to_string(),
        id: id.to_string(),
        reason,
    })
}
