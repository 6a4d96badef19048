//! Events: `wasmq event send <name> <json>` starts every handler subscribed to `<name>`
//! (`wasmq handler deploy ... --on <name>`), each as a job of its own (docs/events.md).
//!
//! - [`send`] - reads the subscriptions from the handler registry (the current version of each
//!   handler), then enqueues one job per subscriber on the subscriber's queue.
//! - [`Event`] - what each job's payload holds: the event's name, id and data, as JSON.
//!
//! **Invariant:** sending the same event id again enqueues nothing new: each job's id is
//! derived from the event id and the handler ([`job_id`]), and an existing id is a no-op in
//! `enqueue.lua`. A send that failed half-way (Redis went away between two queues) is made
//! whole by sending it again with its id.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::queue::{Client, JobState, MAX_NAME_LEN, NewJob, QueueError, generate_job_id};
use crate::registry::{Registry, RegistryError};

/// The queue subscribers' jobs go to unless their deployment names one (`--on-queue`).
pub const DEFAULT_EVENT_QUEUE: &str = "default";
/// Longest event id.
pub const MAX_EVENT_ID_LEN: usize = 64;

/// Why an event was not sent (in full).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    #[error("invalid event: {0}")]
    Invalid(String),
    #[error("reading the subscriptions")]
    Registry(#[from] RegistryError),
    #[error("enqueueing the job of handler {handler} on queue {queue}")]
    Enqueue {
        handler: String,
        queue: String,
        #[source]
        source: QueueError,
    },
}

/// What a subscriber's job receives as its payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The event's name, e.g. `order/created`.
    pub name: String,
    /// The event's id: given by the sender, or generated (a ULID).
    pub id: String,
    /// The JSON the sender gave.
    pub data: serde_json::Value,
}

/// One subscriber's job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventJob {
    pub handler: String,
    pub queue: String,
    pub job_id: String,
    /// False when an earlier send of the same event id had enqueued it already.
    pub created: bool,
    pub state: JobState,
}

/// What [`send`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sent {
    /// The event's id (the given one, or the generated one).
    pub id: String,
    /// One job per subscriber, by handler name.
    pub jobs: Vec<EventJob>,
}

/// Event ids: 1 to 64 printable ASCII characters without spaces.
pub fn validate_event_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_EVENT_ID_LEN {
        return Err(format!(
            "event id must be 1 to {MAX_EVENT_ID_LEN} bytes long, got {}",
            id.len()
        ));
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "event id {id:?} must be printable ASCII without spaces"
        ));
    }
    Ok(())
}

/// The id of `handler`'s job for event `event_id`: `evt:<event id>:<handler>`, or, when that
/// would be over the 128-byte job id limit, `evt:<event id>:<first 16 hex of the handler's
/// SHA-256>`.
pub fn job_id(event_id: &str, handler: &str) -> String {
    let id = format!("evt:{event_id}:{handler}");
    if id.len() <= MAX_NAME_LEN {
        return id;
    }
    let digest = format!("{:x}", Sha256::digest(handler.as_bytes()));
    format!("evt:{event_id}:{}", &digest[..16])
}

/// Sends event `name` with `data`: one job per handler subscribed to it, on its queue. `id`
/// makes the send idempotent (a fresh ULID when `None`). An event nobody subscribes to
/// enqueues nothing, and says so with an empty `jobs`.
pub async fn send(
    registry: &Registry,
    client: &Client,
    name: &str,
    data: serde_json::Value,
    id: Option<String>,
) -> Result<Sent, EventError> {
    crate::registry::validate_event_name(name).map_err(EventError::Invalid)?;
    let id = id.unwrap_or_else(|| {
        generate_job_id(
            crate::queue::unix_ms(std::time::SystemTime::now()),
            rand::random(),
        )
    });
    validate_event_id(&id).map_err(EventError::Invalid)?;
    let event = Event {
        name: name.to_string(),
        id: id.clone(),
        data,
    };
    let payload = serde_json::to_vec(&event)
        .map_err(|err| EventError::Invalid(format!("the data is not JSON: {err}")))?;
    let mut jobs = Vec::new();
    for (handler, version) in registry.current().await? {
        let settings = &version.settings;
        if !settings.on.iter().any(|on| on == name) {
            continue;
        }
        let queue = settings
            .on_queue
            .clone()
            .unwrap_or_else(|| DEFAULT_EVENT_QUEUE.to_string());
        let job_id = job_id(&id, &handler);
        let job = NewJob::new(handler.clone(), payload.clone()).with_id(job_id.clone());
        let enqueued =
            client
                .enqueue(&queue, &job)
                .await
                .map_err(|source| EventError::Enqueue {
                    handler: handler.clone(),
                    queue: queue.clone(),
                    source,
                })?;
        jobs.push(EventJob {
            handler,
            queue,
            job_id,
            created: enqueued.created,
            // An event's jobs take no dedupe key, so their state is always known.
            state: enqueued.state.unwrap_or(JobState::Waiting),
        });
    }
    Ok(Sent { id, jobs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ids_and_job_ids() {
        use crate::registry::validate_event_name;
        assert!(validate_event_name("order/created").is_ok());
        assert!(validate_event_name("").is_err());
        assert!(validate_event_name("has space").is_err());
        assert!(validate_event_id("01HZX").is_ok());
        assert!(validate_event_id(&"x".repeat(65)).is_err());
        assert_eq!(job_id("e1", "send-email"), "evt:e1:send-email");
        let long = "h".repeat(128);
        let id = job_id(&"e".repeat(64), &long);
        assert!(id.len() <= MAX_NAME_LEN, "{id}");
        assert_eq!(id, job_id(&"e".repeat(64), &long), "deterministic");
        assert_ne!(id, job_id(&"e".repeat(64), &"g".repeat(128)));
    }
}
