//! Durable workflows, the worker's part: the Redis step store each attempt gets, and the
//! delivery of child jobs from the outbox.
//!
//! Lifecycle:
//! 1. The executor gives each attempt a [`RedisSteps`] for its job and lease: the runtime reads
//!    the job's steps through it once, at the first call that needs them, and saves each step
//!    under the lease before the handler goes on.
//! 2. A completed attempt's children ride on its completion ([`children`]); the acker records
//!    them with it (into the queue's outbox, in the same call) and then [`deliver`]s them.
//! 3. The watchman calls [`recover`] every tick: entries older than [`OUTBOX_GRACE`] were left
//!    by a host that died (or lost Redis) between recording a completion and delivering its
//!    children; delivering one twice enqueues nothing new (fixed child ids).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use crate::queue::{Child, Client, NewJob, StepSave};
use crate::runtime::{BoxFuture, ChildJob, WorkflowStore};

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
}

fn to_child(child: &ChildJob) -> Child {
    let mut job = NewJob::new(child.handler.clone(), child.payload.clone())
        .with_id(child.id.clone())
        .with_priority(child.priority);
    if let Some(delay) = child.delay {
        job = job.with_delay(delay);
    }
    Child {
        queue: child.queue.clone(),
        job,
    }
}

/// The children of a completed attempt, as its completion carries them.
pub(crate) fn children(children: Vec<ChildJob>) -> Vec<Child> {
    children.iter().map(to_child).collect()
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
