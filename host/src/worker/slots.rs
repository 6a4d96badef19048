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
//! 3. A slot returns to the pool when its job's task drops it.
//!
//! Invariant: a leased job always has its slot before it is fetched, so no leased job waits
//! for memory or a slot; and the memory caps of running jobs never add up past the budget.

use std::sync::Arc;

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
    #[cfg(test)]
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
    _memory: OwnedSemaphorePermit,
    _queue: Option<OwnedSemaphorePermit>,
}

impl Slot {
    /// Adds the job's permit of its queue's concurrency limit, freed with the slot.
    pub fn with_queue_permit(mut self, permit: OwnedSemaphorePermit) -> Self {
        self._queue = Some(permit);
        self
    }
}

impl Slots {
    /// A pool of `concurrency` slots and `memory_budget` bytes.
    pub fn new(concurrency: usize, memory_budget: u64) -> Self {
        let memory_units = units(memory_budget).min(Semaphore::MAX_PERMITS as u32);
        Self {
            count: Arc::new(Semaphore::new(concurrency.min(Semaphore::MAX_PERMITS))),
            memory: Arc::new(Semaphore::new(memory_units as usize)),
            #[cfg(test)]
            memory_units,
        }
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
    #[cfg(test)]
    pub fn running(&self, concurrency: usize) -> usize {
        concurrency.saturating_sub(self.count.available_permits())
    }

    /// Bytes of the memory budget held by running jobs right now.
    #[cfg(test)]
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
            _memory: memory,
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
        assert_eq!(slots.running(3), 1);
        assert_eq!(slots.memory_in_use(), 16 * MIB);
        drop(a);
        assert_eq!(slots.running(3), 0);
        assert_eq!(slots.memory_in_use(), 0);
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
