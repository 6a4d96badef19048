//! Durable workflows, the worker's part: the Redis step store each attempt gets, and the
//! delivery of child jobs from the outbox.
//!
//! Lifecycle:
//! 1. The executor gives each attempt a [`RedisSteps`] for its job and lease: the runtime reads
//!    the job's steps through it once, at the first call that needs them, and saves each step
//!    under the lease before the handler goes on.
//! 2. A completed attempt's children ride on its completion ([`with_children`], which encodes
//!    them on a blocking thread, so the acker only copies them); the acker records them with it
//!    (into the queue's outbox, in the same call) and then [`deliver`]s them.
//! 3. The watchman calls [`recover`] every tick: entries older than [`OUTBOX_GRACE`] were left
//!    by a host that died (or lost Redis) between recording a completion and delivering its
//!    children, or wait for room in a full queue (`max_waiting`); delivering one twice
//!    enqueues nothing new (fixed child ids).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use crate::queue::{Child, Client, Completion, NewJob, StepSave, encode_children};
use crate::runtime::{Backlog, BoxFuture, ChildJob, WorkflowStore};

/// How old an outbox entry must be before any host delivers it: the host that wrote it
/// delivers within milliseconds, so older ones are left over.
pub(crate) const OUTBOX_GRACE: Duration = Duration::from_secs(10);

/// Most outbox entries one host delivers per queue per tick.
const RECOVER_BATCH: usize = 100;

/// One attempt's steps, in Redis, written under its lease.
pub(crate) struct RedisSteps {
    pub client: Client,
    pub queue: String,
    pub id: String,
    pub token: String,
    /// The runtime's `max_job_step_bytes`: steps over it are not read in full.
    pub max_bytes: usize,
    /// The job's generation, and the host's limit (`WorkerConfig::max_child_depth`).
    pub depth: u32,
    pub max_depth: u32,
}

impl WorkflowStore for RedisSteps {
    fn load(&self) -> BoxFuture<'_, Result<HashMap<String, Vec<u8>>, String>> {
        Box::pin(async move {
            match self
                .client
                .load_steps_at_most(&self.queue, &self.id, self.max_bytes)
                .await
            {
                Ok(Some(fields)) => Ok(fields),
                Ok(None) => Err(format!(
                    "the job's steps hold more than {} bytes, over the limit per job",
                    self.max_bytes
                )),
                Err(err) => Err(crate::chain::ErrorChain(&err).to_string()),
            }
        })
    }

    fn save(&self, field: String, value: Vec<u8>) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            match self
                .client
                .save_step(&self.queue, &self.id, &self.token, &field, &value)
                .await
            {
                Ok(StepSave::Saved) => Ok(()),
                Ok(StepSave::Rejected(why)) => Err(format!(
                    "this attempt no longer holds the job's lease ({why:?})"
                )),
                Err(err) => Err(crate::chain::ErrorChain(&err).to_string()),
            }
        })
    }

    fn check_child(&self, child: &ChildJob) -> Result<(), String> {
        to_child(child).validate()
    }

    fn child_depth(&self) -> Result<u32, String> {
        if self.depth >= self.max_depth {
            return Err(format!(
                "this job is a child job of depth {} (a child of a child of ...), the deepest \
                 this host allows (--max-child-depth {}): it may enqueue no children",
                self.depth, self.max_depth
            ));
        }
        Ok(self.depth + 1)
    }

    fn backlog(&self, queue: &str) -> BoxFuture<'_, Result<Option<Backlog>, String>> {
        let queue = queue.to_string();
        Box::pin(async move {
            let fail = |err: crate::queue::QueueError| format!("{err:#}");
            let Some(limit) = self.client.config(&queue).await.map_err(fail)?.max_waiting else {
                return Ok(None);
            };
            let counts = self.client.counts(&queue).await.map_err(fail)?;
            Ok(Some(Backlog {
                jobs: counts.waiting + counts.delayed + counts.retry + counts.active,
                limit,
            }))
        })
    }
}

fn to_child(child: &ChildJob) -> Child {
    let mut job = NewJob::new(child.handler.clone(), child.payload.clone())
        .with_id(child.id.clone())
        .with_priority(child.priority)
        .with_depth(child.depth);
    if let Some(delay) = child.delay {
        job = job.with_delay(delay);
    }
    Child {
        queue: child.queue.clone(),
        job,
    }
}

/// `completion` with the children of its attempt, encoded on a blocking thread: a parent with
/// a thousand children costs its own task that work, not the acker that records every job's
/// outcome (where twenty such parents held a neighbour's completion for seconds).
pub(crate) async fn with_children(
    completion: Completion,
    children: Vec<ChildJob>,
    trace: &(Option<String>, Option<String>),
) -> Completion {
    if children.is_empty() {
        return completion;
    }
    let children: Vec<Child> = children.iter().map(to_child).collect();
    let children: Arc<Vec<Child>> = Arc::new(inherit_trace(trace, children));
    let those = children.clone();
    // Children that do not encode, or a blocking pool that is gone (the host is stopping),
    // leave the encoding to the call that records the completion, as before.
    let encoded = tokio::task::spawn_blocking(move || encode_children(&those).ok())
        .await
        .ok()
        .flatten();
    let children = Arc::try_unwrap(children).unwrap_or_else(|shared| shared.as_ref().clone());
    completion
        .with_children(children)
        .with_encoded_children(encoded)
}

/// Children without a trace context of their own continue the parent attempt's (`trace`:
/// its traceparent and tracestate).
fn inherit_trace(trace: &(Option<String>, Option<String>), mut children: Vec<Child>) -> Vec<Child> {
    for child in &mut children {
        let options = &mut child.job.options;
        if options.traceparent.is_none() {
            options.traceparent.clone_from(&trace.0);
            options.tracestate.clone_from(&trace.1);
        }
    }
    children
}

/// Delivers the children of `parents`, just completed in `queue`, in the background; what
/// fails here is left in the outbox for [`recover`].
pub(crate) fn deliver(shared: &Arc<Shared>, queue: &str, parents: Vec<String>) {
    if parents.is_empty() {
        return;
    }
    let shared = shared.clone();
    let queue = queue.to_string();
    tokio::spawn(async move {
        match shared.client.deliver_outbox(&queue, &parents).await {
            Ok(report) => {
                tracing::debug!(%queue, parents = report.delivered.len(), created = report.created, "delivered child jobs");
                if !report.waiting.is_empty() {
                    tracing::info!(%queue, parents = report.waiting.len(), "child jobs wait in the outbox for room in their queue (max_waiting); a host delivers them when there is");
                }
            }
            Err(err) => {
                shared.redis.failed("delivering child jobs", &err);
                tracing::warn!(%queue, parents = parents.len(), "child jobs left in the outbox; a host delivers them within seconds");
            }
        }
    });
}

/// Delivers the outbox entries of the served queues that the hosts that wrote them left.
pub(crate) async fn recover(shared: &Shared) {
    for queue in &shared.config.queues {
        match shared
            .client
            .recover_outbox(queue, OUTBOX_GRACE, RECOVER_BATCH)
            .await
        {
            Ok(report) => {
                if !report.delivered.is_empty() {
                    tracing::info!(%queue, parents = report.delivered.len(), created = report.created, "delivered child jobs left in the outbox");
                }
            }
            Err(err) => shared.redis.failed("recovering the outbox", &err),
        }
    }
}
