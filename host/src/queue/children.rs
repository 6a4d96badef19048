//! Child jobs, the queue's side (docs/workflows.md): what a completion writes for its
//! children, and their delivery.
//!
//! Children cannot be written by the completion itself when they go to other queues (other
//! slots on Redis Cluster), so the completion writes them to the parent queue's outbox
//! (`wasmq:{q}:outbox:<parent id>`, and the parent into `wasmq:{q}:outbox`), atomically with
//! the completion and only if it is recorded. Delivery ([`Client::deliver_outbox`]) enqueues
//! each child under its fixed id, which `enqueue.lua` deduplicates, then forgets the entry; a
//! crash in between makes the next delivery a no-op for the children already there. The host
//! that completed the parent delivers at once; [`Client::recover_outbox`] lets any host deliver
//! what a host that died in between left behind.

use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::client::Client;
use super::error::{QueueError, Result};
use super::job::{NewJob, RunAt, validate_job_id, validate_queue_name};
use super::keys::QueueKeys;
use super::reply::Reply;
use super::scripts::{Call, SCRIPTS};

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
            let mut invocation = Call::on(&SCRIPTS.outbox_done, &keys);
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
        let mut invocation = Call::on(&SCRIPTS.outbox_due, &keys);
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
