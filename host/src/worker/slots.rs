//! Slots: how many jobs may run at once on this host, counted twice: by number (the host's
//! concurrency) and by memory (each running job holds its handler's memory cap out of the
//! host's memory budget).
//!
//! Lifecycle of a reservation:
//! 1. A fetcher reserves room for a batch before it fetches: at least one job, at most as many
//!    as both the free slots and the free memory allow at the largest handler cap
//!    ([`Slots::reserve`]).
//! 2. After the fetch, the batch is split into one [`Slot`] per leased job, sized to that job's
//!    handler ([`Reservation::take`]); what was not used returns to the pool when the
//!    reservation is dropped.
//! 3. A slot returns to the pool when its job's task drops it, or, after a successful attempt,
//!    when the acker has no next job of the same queue to start in it ([`Slot::resize`] makes
//!    room for any handler first, without waiting, and then fits it to the job that got it).
//!
//! Invariant: a leased job always has its slot before it is fetched, so no leased job waits
//! for memory or a slot; and the memory caps of running jobs never add up past the budget.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Memory is counted in units of this many bytes (caps are rounded up to a whole unit).
const UNIT: u64 = 1024 * 1024;

fn units(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX)
}

/// The slot pool of one host.
#[derive(Debug, Clone)]
pub(crate) struct Slots {
    count: Arc<Semaphore>,
    memory: Arc<Semaphore>,
    /// Fetchers waiting in [`Slots::reserve`], by queue.
    waiting: Arc<Mutex<HashMap<String, usize>>>,
    /// The totals, for what is in use (metrics).
    concurrency: usize,
    memory_units: u32,
}

/// Room for up to `len` jobs, each of up to the largest handler's cap.
#[derive(Debug)]
pub(crate) struct Reservation {
    count: OwnedSemaphorePermit,
    memory: OwnedSemaphorePermit,
}

/// One running job's share of the pool (and of its queue's limit, if the queue has one).
#[derive(Debug)]
pub(crate) struct Slot {
    _count: OwnedSemaphorePermit,
    memory: OwnedSemaphorePermit,
    _queue: Option<OwnedSemaphorePermit>,
}

impl Slot {
    /// Adds the job's permit of its queue's concurrency limit, freed with the slot.
    pub fn with_queue_permit(mut self, permit: OwnedSemaphorePermit) -> Self {
        self._queue = Some(permit);
        self
    }

    /// Makes the slot's share of the memory budget `memory_cap`, for another job: shrinking
    /// gives the difference back; growing takes it only if it is free now, never waiting
    /// (a slot waiting for memory would hold its count meanwhile). Returns whether the slot
    /// now has `memory_cap`.
    pub fn resize(&mut self, memory_cap: u64) -> bool {
        let want = units(memory_cap).max(1) as usize;
        let have = self.memory.num_permits();
        if want < have {
            drop(self.memory.split(have - want));
        } else if want > have {
            let more = u32::try_from(want - have).unwrap_or(u32::MAX);
            match self.memory.semaphore().clone().try_acquire_many_owned(more) {
                Ok(more) => self.memory.merge(more),
                Err(_) => return false,
            }
        }
        true
    }

    /// Makes the slot's share at least `memory_cap` ([`Slot::resize`] when that grows it;
    /// never shrinks it). For a slot that runs several jobs in turn and must fit each.
    pub fn fit(&mut self, memory_cap: u64) -> bool {
        units(memory_cap).max(1) as usize <= self.memory.num_permits() || self.resize(memory_cap)
    }
}

/// A fetcher waiting for room in [`Slots::reserve`], for as long as this lives.
pub(crate) struct WaitingForRoom {
    waiting: Arc<Mutex<HashMap<String, usize>>>,
    queue: String,
}

impl Drop for WaitingForRoom {
    fn drop(&mut self) {
        let mut waiting = lock(&self.waiting);
        if let Some(n) = waiting.get_mut(&self.queue) {
            *n -= 1;
            if *n == 0 {
                waiting.remove(&self.queue);
            }
        }
    }
}

fn lock(
    waiting: &Mutex<HashMap<String, usize>>,
) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
    // Every change is one whole insert or remove: a panic elsewhere leaves nothing half-done.
    waiting
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Slots {
    /// A pool of `concurrency` slots and `memory_budget` bytes.
    pub fn new(concurrency: usize, memory_budget: u64) -> Self {
        let memory_units = units(memory_budget).min(Semaphore::MAX_PERMITS as u32);
        let concurrency = concurrency.min(Semaphore::MAX_PERMITS);
        Self {
            count: Arc::new(Semaphore::new(concurrency)),
            memory: Arc::new(Semaphore::new(memory_units as usize)),
            waiting: Arc::default(),
            concurrency,
            memory_units,
        }
    }

    /// Marks a fetcher of `queue` as waiting for room until the guard is dropped.
    pub fn waiting_for_room(&self, queue: &str) -> WaitingForRoom {
        *lock(&self.waiting).entry(queue.to_string()).or_default() += 1;
        WaitingForRoom {
            waiting: self.waiting.clone(),
            queue: queue.to_string(),
        }
    }

    /// Whether a fetcher of a queue other than `queue` waits for room. A slot freed by a job
    /// of `queue` then goes back to the pool, whose waiters are served in turn, rather than to
    /// `queue`'s next job: carrying slots over must not starve the other queues of a host.
    pub fn others_waiting(&self, queue: &str) -> bool {
        lock(&self.waiting).keys().any(|q| q != queue)
    }

    /// Waits until at least one job of cap `max_cap` fits, then reserves room for as many as
    /// fit now, up to `max`. Returns `None` only if the pool was closed.
    pub async fn reserve(&self, max: usize, max_cap: u64) -> Option<Reservation> {
        let per_job = units(max_cap).max(1);
        // Wait for one whole job's worth, count first: a job needs both.
        let mut count = self.count.clone().acquire_owned().await.ok()?;
        let mut memory = self.memory.clone().acquire_many_owned(per_job).await.ok()?;
        // Then take what else is free right now, without waiting.
        let mut len = 1;
        while len < max {
            let Ok(more_memory) = self.memory.clone().try_acquire_many_owned(per_job) else {
                break;
            };
            let Ok(more_count) = self.count.clone().try_acquire_owned() else {
                break;
            };
            memory.merge(more_memory);
            count.merge(more_count);
            len += 1;
        }
        Some(Reservation { count, memory })
    }

    /// Slots in use right now.
    pub fn running(&self) -> usize {
        self.concurrency
            .saturating_sub(self.count.available_permits())
    }

    /// Bytes of the memory budget held by running jobs right now.
    pub fn memory_in_use(&self) -> u64 {
        u64::from(
            self.memory_units
                .saturating_sub(self.memory.available_permits() as u32),
        ) * UNIT
    }
}

impl Reservation {
    /// How many jobs this reservation still has room for.
    pub fn len(&self) -> usize {
        self.count.num_permits()
    }

    /// Takes one job's slot, sized to its handler's memory cap (which must not exceed the cap
    /// the reservation was made for). `None` when the reservation is used up.
    pub fn take(&mut self, memory_cap: u64) -> Option<Slot> {
        let count = self.count.split(1)?;
        let memory = self.memory.split(units(memory_cap).max(1) as usize)?;
        Some(Slot {
            _count: count,
            memory,
            _queue: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[tokio::test]
    async fn memory_budget_bounds_the_batch() {
        let slots = Slots::new(10, 128 * MIB);
        let r = slots.reserve(10, 64 * MIB).await.unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(slots.memory_in_use(), 128 * MIB);
    }

    #[tokio::test]
    async fn count_bounds_the_batch_and_unused_room_returns() {
        let slots = Slots::new(3, 1024 * MIB);
        let mut r = slots.reserve(10, 64 * MIB).await.unwrap();
        assert_eq!(r.len(), 3);
        let a = r.take(16 * MIB).unwrap();
        drop(r);
        // One job of 16 MiB runs; the rest of the reservation came back.
        assert_eq!(slots.running(), 1);
        assert_eq!(slots.memory_in_use(), 16 * MIB);
        drop(a);
        assert_eq!(slots.running(), 0);
        assert_eq!(slots.memory_in_use(), 0);
    }

    #[tokio::test]
    async fn fitting_a_slot_grows_it_when_room_is_free_and_never_shrinks_it() {
        let slots = Slots::new(2, 128 * MIB);
        let mut a = slots
            .reserve(1, 64 * MIB)
            .await
            .unwrap()
            .take(64 * MIB)
            .unwrap();
        assert!(a.fit(16 * MIB));
        assert_eq!(slots.memory_in_use(), 64 * MIB);
        assert!(a.fit(96 * MIB));
        assert_eq!(slots.memory_in_use(), 96 * MIB);
        let _b = slots
            .reserve(1, 32 * MIB)
            .await
            .unwrap()
            .take(32 * MIB)
            .unwrap();
        // Nothing left to grow into: refused, and the slot keeps what it had.
        assert!(!a.fit(100 * MIB));
        assert_eq!(slots.memory_in_use(), 128 * MIB);
    }

    #[tokio::test]
    async fn a_slot_resizes_for_its_next_job_without_waiting_for_memory() {
        let slots = Slots::new(2, 128 * MIB);
        let mut r = slots.reserve(2, 32 * MIB).await.unwrap();
        let mut a = r.take(32 * MIB).unwrap();
        drop(r);
        assert!(a.resize(64 * MIB));
        assert_eq!(slots.memory_in_use(), 64 * MIB);
        assert!(a.resize(16 * MIB));
        assert_eq!(slots.memory_in_use(), 16 * MIB);
        let mut r = slots.reserve(1, 112 * MIB).await.unwrap();
        let b = r.take(112 * MIB).unwrap();
        // The budget is full: growing fails and leaves the slot as it was.
        assert!(!a.resize(32 * MIB));
        assert_eq!(slots.memory_in_use(), 128 * MIB);
        drop((a, b));
        assert_eq!(slots.memory_in_use(), 0);
    }

    #[tokio::test]
    async fn fetchers_waiting_for_room_are_seen_by_the_other_queues() {
        let slots = Slots::new(1, 64 * MIB);
        let a = slots.waiting_for_room("a");
        let a2 = slots.waiting_for_room("a");
        assert!(!slots.others_waiting("a"));
        assert!(slots.others_waiting("b"));
        drop(a);
        assert!(slots.others_waiting("b"));
        drop(a2);
        assert!(!slots.others_waiting("b"));
    }

    #[tokio::test]
    async fn reserve_waits_for_a_free_slot() {
        let slots = Slots::new(1, 64 * MIB);
        let mut r = slots.reserve(1, 64 * MIB).await.unwrap();
        let slot = r.take(64 * MIB).unwrap();
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            slots.reserve(1, 64 * MIB),
        )
        .await;
        assert!(waiting.is_err(), "reserved past a full pool");
        drop(slot);
        assert!(slots.reserve(1, 64 * MIB).await.is_some());
    }
}
