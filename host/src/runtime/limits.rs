//! Per-job resource caps, enforced by wasmtime's `ResourceLimiter` on every memory and table
//! growth (including the initial allocation at instantiation).

use std::time::Duration;

use super::outcome::LimitExceeded;

/// The hard limits of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLimits {
    /// Wall-clock deadline, from the start of instantiation.
    pub timeout: Duration,
    /// Cap on the sum of all linear memories of the instance, in bytes.
    pub memory: u64,
    /// CPU budget in fuel units; `None` for no budget. Needs a runtime built with fuel on.
    pub fuel: Option<u64>,
}

impl Default for JobLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            memory: 64 * 1024 * 1024,
            fuel: None,
        }
    }
}

/// Caps memory and table growth of one store and records whether a cap was hit.
///
/// Growth past a cap is refused with a [`LimitExceeded`] error, which traps the guest: a
/// hostile guest is stopped at the cap rather than left to spin on failed allocations.
#[derive(Debug)]
pub(crate) struct StoreLimiter {
    memory_cap: usize,
    table_elements_cap: usize,
    /// Bytes of linear memory currently granted, summed over all memories of the instance.
    memory_in_use: usize,
    pub peak_memory: usize,
    pub hit: bool,
}

impl StoreLimiter {
    pub fn new(memory_cap: u64, table_elements_cap: usize) -> Self {
        Self {
            memory_cap: usize::try_from(memory_cap).unwrap_or(usize::MAX),
            table_elements_cap,
            memory_in_use: 0,
            peak_memory: 0,
            hit: false,
        }
    }
}

/// Core instances, tables and memories one component may create. Generous for what compilers
/// emit (a Python component has a few dozen core instances), small enough that a crafted
/// component cannot exhaust the host's bookkeeping.
const MAX_INSTANCES: usize = 1_000;
const MAX_TABLES: usize = 1_000;
const MAX_MEMORIES: usize = 100;

impl wasmtime::ResourceLimiter for StoreLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = desired.saturating_sub(current);
        let total = self.memory_in_use.saturating_add(grow);
        if total > self.memory_cap {
            self.hit = true;
            return Err(LimitExceeded {
                what: "memory",
                desired: total,
                cap: self.memory_cap,
            }
            .into());
        }
        self.memory_in_use = total;
        self.peak_memory = self.peak_memory.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements_cap {
            self.hit = true;
            return Err(LimitExceeded {
                what: "table",
                desired,
                cap: self.table_elements_cap,
            }
            .into());
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn memory_cap_counts_all_memories_together() {
        let mut l = StoreLimiter::new(100, 10);
        assert!(l.memory_growing(0, 60, None).is_ok());
        assert!(l.memory_growing(0, 30, None).is_ok());
        assert!(l.memory_growing(30, 50, None).is_err());
        assert!(l.hit);
        assert_eq!(l.peak_memory, 90);
    }

    #[test]
    fn table_cap_is_per_table() {
        let mut l = StoreLimiter::new(100, 10);
        assert!(l.table_growing(0, 10, None).is_ok());
        assert!(l.table_growing(10, 11, None).is_err());
    }
}
