//! The `workflow` interface (`wasmq:job@0.1.1`): durable steps, durable sleeps and child jobs,
//! as one attempt sees them.
//!
//! The runtime knows nothing about where steps are kept: the worker hands each attempt a
//! [`WorkflowStore`] (Redis, checked against the job's lease), and [`Runtime::run`] gives an
//! attempt an in-memory one, so that a handler run outside a worker (`wasmq exec`, tests) sees
//! the same calls behave within that one attempt.
//!
//! What this module decides, for every store:
//! - A job's steps are one map of fields: `run:<name>` holds a step's result, `sleep:<name>`
//!   marks a sleep that has elapsed (written by the worker's suspend transition, never here).
//!   The map is read once per attempt, at the first call that needs it.
//! - The bounds: [`MAX_NAME_LEN`], [`MAX_STEP_BYTES`] per result, [`MAX_STEPS`] per job,
//!   the runtime's `max_job_step_bytes` ([`DEFAULT_MAX_JOB_STEP_BYTES`]) for every stored
//!   byte of a job (names and values, steps and sleeps), [`MAX_CHILDREN`] and
//!   [`MAX_CHILDREN_BYTES`] per attempt, [`MAX_SLEEP`]. Past them a call returns an error
//!   that says which bound, and the handler decides (the SDK fails the attempt permanently: a
//!   rerun would hit the same bound).
//! - What the host holds for a job's steps is bounded by the per-job byte limit: the map read
//!   once per attempt is at most what the saves let in (a map over it, stored under an older
//!   or a larger limit, is refused as a whole), and each save past it is refused before it is
//!   sent.
//! - A sleep not yet elapsed ends the attempt: the host call traps with [`Suspend`], which
//!   [`Runtime::run`] reports as [`Outcome::Suspended`], and the instance is dropped.
//! - Child jobs are only buffered here; [`RunReport::children`] hands them to the worker,
//!   which writes them with the completion. Each gets its id now, deterministically
//!   ([`child_id`]), so that delivering them twice enqueues them once.
//! - Children stay in bounds: each target is checked against the handler version's grants
//!   ([`EnqueueRules`]: its own queue, else `--may-enqueue`); an id the handler gives is
//!   namespaced by the parent ([`namespaced_child_id`]) unless a grant keeps it raw; the
//!   store gives the children's generation or refuses past its depth limit
//!   ([`WorkflowStore::child_depth`]), and says how full each target queue is
//!   ([`WorkflowStore::backlog`]), so that an attempt never asks for more children than its
//!   target's `max_waiting` has room for.
//!
//! [`Runtime::run`]: super::Runtime::run
//! [`Outcome::Suspended`]: super::Outcome::Suspended
//! [`RunReport::children`]: super::RunReport::children

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::HostState;
use super::bindings::wasmq::job::workflow;
use crate::capability::{ChildIds, EnqueueRules};

/// Longest step or sleep name, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Largest result one step may store, in bytes.
pub const MAX_STEP_BYTES: usize = 512 * 1024;
/// Most steps and sleeps one job may store.
pub const MAX_STEPS: usize = 1000;
/// Most bytes one job's steps and sleeps may hold in all (field names and values), unless
/// the runtime sets another `max_job_step_bytes`. [`MAX_STEPS`] x [`MAX_STEP_BYTES`] would be
/// 500 MiB per job, held in the host each attempt and in Redis until the job is purged.
pub const DEFAULT_MAX_JOB_STEP_BYTES: usize = 16 * 1024 * 1024;
/// Most child jobs one attempt may enqueue.
pub const MAX_CHILDREN: usize = 1000;
/// Most payload bytes the child jobs of one attempt may carry in all.
pub const MAX_CHILDREN_BYTES: usize = 8 * 1024 * 1024;
/// Longest durable sleep.
pub const MAX_SLEEP: Duration = Duration::from_secs(366 * 24 * 3600);
/// Longest job id (as the queue protocol allows).
const MAX_ID_LEN: usize = 128;

/// A boxed future, as [`WorkflowStore`] returns them (the trait is used as a trait object).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where one job's steps are kept, for one attempt. The worker implements it over Redis.
pub trait WorkflowStore: Send + Sync {
    /// Every field stored for the job (see the module docs), or why they cannot be read.
    fn load(&self) -> BoxFuture<'_, Result<HashMap<String, Vec<u8>>, String>>;
    /// Stores one field durably; `Ok` only once it is stored.
    fn save(&self, field: String, value: Vec<u8>) -> BoxFuture<'_, Result<(), String>>;
    /// Checks a child job the handler asks for (queue and handler names, id, priority); the
    /// runtime has already given it its id.
    fn check_child(&self, child: &ChildJob) -> Result<(), String>;
    /// The generation of the children of this attempt (its job's depth plus one), or why it
    /// may enqueue none (its job is at the depth limit). Without a queue: 1.
    fn child_depth(&self) -> Result<u32, String> {
        Ok(1)
    }
    /// How full `queue` is, when it has a backlog limit (`max_waiting`); `None` when it has
    /// none. Read once per target queue per attempt.
    fn backlog(&self, _queue: &str) -> BoxFuture<'_, Result<Option<Backlog>, String>> {
        Box::pin(async { Ok(None) })
    }
}

/// A queue's backlog (jobs not finished: waiting, delayed, retry, active) and its
/// `max_waiting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub jobs: u64,
    pub limit: u64,
}

/// A child job an attempt asked for, with its id decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildJob {
    /// The queue it goes to (the parent's unless the handler named another).
    pub queue: String,
    pub id: String,
    pub handler: String,
    pub payload: Vec<u8>,
    pub priority: i32,
    pub delay: Option<Duration>,
    /// Its generation: its parent's depth plus one ([`WorkflowStore::child_depth`]).
    pub depth: u32,
}

/// Raised by the `sleep` host call to end the attempt: the job sleeps `delay`, then the
/// sleep's field (`sleep:<name>`) marks it elapsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("suspended by sleep {field:?} for {delay:?}")]
pub struct Suspend {
    pub field: String,
    pub delay: Duration,
}

/// The field that holds step `name`'s result.
pub fn step_field(name: &str) -> String {
    format!("run:{name}")
}

/// The field that marks sleep `name` elapsed.
pub fn sleep_field(name: &str) -> String {
    format!("sleep:{name}")
}

/// The id of the `n`th (from 1) child of job `parent` of `queue` that was given none:
/// `<queue>/<parent>:c<n>` (a queue name has no `/`, so two parents never share one), or, when
/// that is over the id limit, the same with the parent part replaced by its SHA-256.
pub fn child_id(queue: &str, parent: &str, n: usize) -> String {
    let id = format!("{queue}/{parent}:c{n}");
    if id.len() <= MAX_ID_LEN {
        return id;
    }
    let digest: String = Sha256::digest(format!("{queue}/{parent}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("h{digest}:c{n}")
}

/// The id of a child of job `parent` of `queue` that the handler named `given`:
/// `<queue>/<parent>/<given>`, so that no child takes an id outside its parent's (a producer's
/// `order-42` stays the producer's). Over the id limit, the parent part is replaced by its
/// SHA-256 (`h<hex>/<given>`), and when even that is too long, the whole (`h<hex>`).
pub fn namespaced_child_id(queue: &str, parent: &str, given: &str) -> String {
    let id = format!("{queue}/{parent}/{given}");
    if id.len() <= MAX_ID_LEN {
        return id;
    }
    let hex = |text: &str| -> String {
        Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let short = format!("h{}/{given}", hex(&format!("{queue}/{parent}")));
    if short.len() <= MAX_ID_LEN {
        return short;
    }
    format!("h{}", hex(&id))
}

/// A store that keeps the steps in memory, for the one attempt of a run without a worker.
#[derive(Default)]
pub(crate) struct MemoryStore {
    fields: Mutex<HashMap<String, Vec<u8>>>,
}

impl MemoryStore {
    fn fields(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u8>>> {
        // A map of plain values: nothing is left half-done by a panic.
        self.fields
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl WorkflowStore for MemoryStore {
    fn load(&self) -> BoxFuture<'_, Result<HashMap<String, Vec<u8>>, String>> {
        let fields = self.fields().clone();
        Box::pin(async move { Ok(fields) })
    }

    fn save(&self, field: String, value: Vec<u8>) -> BoxFuture<'_, Result<(), String>> {
        self.fields().insert(field, value);
        Box::pin(async { Ok(()) })
    }

    fn check_child(&self, _child: &ChildJob) -> Result<(), String> {
        Ok(())
    }
}

/// One attempt's view of its workflow: the store, the fields read from it, the children.
pub(crate) struct WorkflowState {
    store: Arc<dyn WorkflowStore>,
    queue: String,
    job_id: String,
    fields: Option<HashMap<String, Vec<u8>>>,
    /// The bytes of `fields` (names and values), and the most they may hold.
    field_bytes: usize,
    max_field_bytes: usize,
    pub children: Vec<ChildJob>,
    children_bytes: usize,
    /// Per target queue with a backlog limit: how many more children it has room for, as
    /// read at this attempt's first child for it.
    room: HashMap<String, Option<u64>>,
    /// Set by a sleep that ends the attempt.
    pub suspend: Option<Suspend>,
}

impl WorkflowState {
    pub fn new(
        store: Arc<dyn WorkflowStore>,
        queue: &str,
        job_id: &str,
        max_field_bytes: usize,
    ) -> Self {
        Self {
            store,
            queue: queue.to_string(),
            job_id: job_id.to_string(),
            fields: None,
            field_bytes: 0,
            max_field_bytes,
            children: Vec::new(),
            children_bytes: 0,
            room: HashMap::new(),
            suspend: None,
        }
    }

    /// The job's fields, read from the store at the first call that needs them.
    async fn fields(&mut self) -> Result<&mut HashMap<String, Vec<u8>>, String> {
        let fields = match self.fields.take() {
            Some(fields) => fields,
            None => {
                let fields = self
                    .store
                    .load()
                    .await
                    .map_err(|err| format!("reading the job's steps: {err}"))?;
                let bytes = fields.iter().map(|(k, v)| field_size(k, v)).sum::<usize>();
                if bytes > self.max_field_bytes {
                    // Stored under a larger limit: not kept, so that every attempt of the job
                    // fails the same way and the host holds none of it past this call.
                    return Err(format!(
                        "the job's steps hold {bytes} bytes, over the limit of {} bytes per job",
                        self.max_field_bytes
                    ));
                }
                self.field_bytes = bytes;
                fields
            }
        };
        Ok(self.fields.insert(fields))
    }

    /// Stores `value` in `field` through the store and keeps it, unless the job's fields
    /// would then hold more than the per-job limit; `what` names the call in the errors.
    async fn save(&mut self, what: &str, field: String, value: Vec<u8>) -> Result<(), String> {
        let max = self.max_field_bytes;
        let fields = self.fields().await?;
        let old = fields.get(&field).map_or(0, |v| field_size(&field, v));
        let total = self.field_bytes.saturating_sub(old) + field_size(&field, &value);
        if total > max {
            return Err(format!(
                "{what}: the job's steps would hold {total} bytes, over the limit of {max} bytes \
                 per job"
            ));
        }
        self.store
            .save(field.clone(), value.clone())
            .await
            .map_err(|err| format!("{what}: storing it: {err}"))?;
        self.fields().await?.insert(field, value);
        self.field_bytes = total;
        Ok(())
    }

    async fn child(
        &mut self,
        job: workflow::ChildJob,
        rules: &EnqueueRules,
    ) -> Result<String, String> {
        if self.children.len() >= MAX_CHILDREN {
            return Err(format!(
                "an attempt may enqueue at most {MAX_CHILDREN} child jobs"
            ));
        }
        if self.children_bytes.saturating_add(job.payload.len()) > MAX_CHILDREN_BYTES {
            return Err(format!(
                "the child jobs of an attempt may carry at most {MAX_CHILDREN_BYTES} payload \
                 bytes in all"
            ));
        }
        let priority = job.priority.unwrap_or(0);
        let delay = match job.delay_ms {
            Some(ms) if Duration::from_millis(ms) > MAX_SLEEP => {
                return Err(format!(
                    "a child job's delay may be at most {} ms",
                    MAX_SLEEP.as_millis()
                ));
            }
            Some(ms) => Some(Duration::from_millis(ms)),
            None => None,
        };
        let queue = job.queue.unwrap_or_else(|| self.queue.clone());
        let ids = rules.check(&self.queue, &queue, &job.handler)?;
        let depth = self.store.child_depth()?;
        let id = match (job.id, ids) {
            (None, _) => child_id(&self.queue, &self.job_id, self.children.len() + 1),
            (Some(given), ChildIds::Raw) => given,
            (Some(given), ChildIds::Namespaced) => {
                // Checked as given, before a hash could hide what it holds.
                if given.is_empty()
                    || given.len() > MAX_ID_LEN
                    || !given.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(format!(
                        "child job id {given:?}: 1 to {MAX_ID_LEN} printable ASCII characters"
                    ));
                }
                namespaced_child_id(&self.queue, &self.job_id, &given)
            }
        };
        let child = ChildJob {
            queue,
            id,
            handler: job.handler,
            payload: job.payload,
            priority,
            delay,
            depth,
        };
        self.store.check_child(&child)?;
        if self
            .children
            .iter()
            .any(|c| c.queue == child.queue && c.id == child.id)
        {
            return Err(format!(
                "this attempt already enqueued a child job with id {:?} in queue {:?}",
                child.id, child.queue
            ));
        }
        self.take_room(&child.queue).await?;
        let id = child.id.clone();
        self.children_bytes += child.payload.len();
        self.children.push(child);
        Ok(id)
    }

    /// Takes one place in `queue`'s backlog for a child, refusing when this attempt's
    /// children already fill what was free at its first child for the queue. (Other jobs may
    /// fill it meanwhile: delivery then waits for room, it never drops a child.)
    async fn take_room(&mut self, queue: &str) -> Result<(), String> {
        let room = match self.room.get(queue) {
            Some(room) => *room,
            None => {
                let backlog = self
                    .store
                    .backlog(queue)
                    .await
                    .map_err(|err| format!("reading queue {queue:?}'s backlog: {err}"))?;
                if let Some(Backlog { jobs, limit }) = backlog
                    && jobs >= limit
                {
                    return Err(format!(
                        "queue {queue:?} is full: {jobs} jobs not finished, at its \
                         max_waiting of {limit}"
                    ));
                }
                backlog.map(|b| b.limit - b.jobs)
            }
        };
        let left = match room {
            None => None,
            Some(0) => {
                return Err(format!(
                    "queue {queue:?} has no room for more children of this attempt (its \
                     max_waiting)"
                ));
            }
            Some(n) => Some(n - 1),
        };
        self.room.insert(queue.to_string(), left);
        Ok(())
    }
}

/// What one field counts against the per-job limit: its name and its value.
fn field_size(field: &str, value: &[u8]) -> usize {
    field.len() + value.len()
}

fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "a {what} name must be 1 to {MAX_NAME_LEN} bytes, got {} bytes",
            name.len()
        ));
    }
    Ok(())
}

impl workflow::Host for HostState {
    async fn step_get(&mut self, name: String) -> Result<Option<Vec<u8>>, String> {
        check_name("step", &name)?;
        let fields = self.workflow.fields().await?;
        Ok(fields.get(&step_field(&name)).cloned())
    }

    async fn step_save(&mut self, name: String, value: Vec<u8>) -> Result<(), String> {
        check_name("step", &name)?;
        if value.len() > MAX_STEP_BYTES {
            return Err(format!(
                "step {name:?}: result of {} bytes is over the limit of {MAX_STEP_BYTES} bytes",
                value.len()
            ));
        }
        let field = step_field(&name);
        let fields = self.workflow.fields().await?;
        if !fields.contains_key(&field) && fields.len() >= MAX_STEPS {
            return Err(format!(
                "step {name:?}: a job may store at most {MAX_STEPS} steps and sleeps"
            ));
        }
        self.workflow
            .save(&format!("step {name:?}"), field, value)
            .await
    }

    async fn sleep(
        &mut self,
        name: String,
        duration_ms: u64,
    ) -> wasmtime::Result<Result<(), String>> {
        if let Err(err) = check_name("sleep", &name) {
            return Ok(Err(err));
        }
        let delay = Duration::from_millis(duration_ms);
        if delay > MAX_SLEEP {
            return Ok(Err(format!(
                "sleep {name:?}: at most {} ms",
                MAX_SLEEP.as_millis()
            )));
        }
        let field = sleep_field(&name);
        let fields = match self.workflow.fields().await {
            Ok(fields) => fields,
            Err(err) => return Ok(Err(err)),
        };
        if fields.contains_key(&field) {
            return Ok(Ok(()));
        }
        if fields.len() >= MAX_STEPS {
            return Ok(Err(format!(
                "sleep {name:?}: a job may store at most {MAX_STEPS} steps and sleeps"
            )));
        }
        if delay.is_zero() {
            // Nothing to wait for: mark the sleep done under the lease, as a step is saved,
            // and go on in this attempt. (Suspending would end the attempt and start another
            // a promote tick later: a guest sleeping 0 ms under ever new names would run an
            // attempt a second up to the step limit.)
            let done = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
                .to_string()
                .into_bytes();
            return Ok(self
                .workflow
                .save(&format!("sleep {name:?}"), field, done)
                .await);
        }
        let suspend = Suspend { field, delay };
        self.workflow.suspend = Some(suspend.clone());
        Err(wasmtime::Error::new(suspend))
    }

    async fn enqueue(&mut self, job: workflow::ChildJob) -> Result<String, String> {
        let caps = self.caps.clone();
        self.workflow.child(job, &caps.enqueue).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_ids_are_deterministic_unique_per_queue_and_bounded() {
        assert_eq!(child_id("orders", "o-1", 1), "orders/o-1:c1");
        assert_eq!(child_id("orders", "o-1", 12), "orders/o-1:c12");
        let long = "x".repeat(128);
        let id = child_id("orders", &long, 3);
        assert!(id.len() <= MAX_ID_LEN, "{id}");
        assert_eq!(id, child_id("orders", &long, 3));
        assert!(id.starts_with('h') && id.ends_with(":c3"), "{id}");
    }

    #[tokio::test]
    async fn a_jobs_fields_count_against_its_byte_limit_names_and_values() {
        let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::default());
        // Room for two fields of 40 bytes and their 5-byte names ("run:a"), not three.
        let mut state = WorkflowState::new(store.clone(), "q", "j", 100);
        state.save("a", step_field("a"), vec![0; 40]).await.unwrap();
        state.save("b", step_field("b"), vec![0; 40]).await.unwrap();
        let err = state
            .save("c", step_field("c"), vec![0; 40])
            .await
            .unwrap_err();
        assert!(
            err.contains("would hold 135 bytes, over the limit of 100"),
            "{err}"
        );
        // Replacing a field counts its new size only.
        state.save("a", step_field("a"), vec![0; 50]).await.unwrap();
        // A new attempt reading a map over its (smaller) limit refuses it.
        let mut smaller = WorkflowState::new(store, "q", "j", 50);
        let err = smaller.fields().await.unwrap_err();
        assert!(
            err.contains("hold 100 bytes, over the limit of 50"),
            "{err}"
        );
    }

    #[test]
    fn given_child_ids_are_namespaced_by_their_parent_and_bounded() {
        assert_eq!(
            namespaced_child_id("orders", "o-1", "order-42"),
            "orders/o-1/order-42"
        );
        let long = "x".repeat(128);
        let short_given = namespaced_child_id("orders", &long, "order-42");
        assert!(short_given.len() <= MAX_ID_LEN, "{short_given}");
        assert!(short_given.ends_with("/order-42"), "{short_given}");
        let both_long = namespaced_child_id("orders", &long, &long);
        assert_eq!(both_long.len(), 65);
        assert_ne!(
            both_long,
            namespaced_child_id("orders", &long, &"y".repeat(128))
        );
    }

    #[test]
    fn steps_and_sleeps_have_their_own_fields() {
        assert_eq!(step_field("charge"), "run:charge");
        assert_eq!(sleep_field("charge"), "sleep:charge");
    }
}
