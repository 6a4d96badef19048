//! Which attempts start as long jobs, and how long an attempt held a runtime thread.
//!
//! A job becomes long (and from then on runs only while it holds one of the long-job CPU
//! slots, see `mod.rs`) once it has run for `long_job_after`. Until then it runs without a
//! slot, and some of its work cannot be stopped at an epoch tick at all: a `memory.fill` or
//! `memory.copy` of megabytes, lifting a large result out of the guest. A handler whose every
//! job runs long would get that head start on every attempt, and a batch of its jobs starting
//! together (a queue of CPU hogs whose deadlines fall together, or retries) would take every
//! runtime thread at once, short jobs of other queues waiting behind them.
//!
//! So each [`Handler`](super::Handler) (one loaded version) remembers which of its last
//! attempts ran long ([`RecentAttempts`]): when two of the last four did, the next attempt
//! takes a CPU slot before it instantiates and counts as long from its start. "Ran long" is
//! measured by [`Busy`]: the time the attempt's polls took, that is, the time it held a
//! runtime thread, not the time it waited (for a slot, in a sleep, behind other tasks).
//!
//! Two out of four, not one: a short job whose thread the OS takes away for a few
//! milliseconds in the middle of a poll looks long once, and its handler must not be sent to
//! queue behind CPU hogs for that.
//!
//! The short path costs two clock reads per poll and one relaxed atomic load per attempt; a
//! handler that never runs long never writes the shared state.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The last four attempts of one handler, one bit each (1: it ran long), the latest lowest.
#[derive(Debug, Default)]
pub(crate) struct RecentAttempts(AtomicU8);

/// Attempts remembered.
const WINDOW: u32 = 4;
/// Of those, how many must have run long for the next attempt to start long.
const LONG_IF: u32 = 2;
const MASK: u8 = (1 << WINDOW) - 1;

impl RecentAttempts {
    /// Whether the next attempt starts as a long job.
    pub fn start_long(&self) -> bool {
        self.0.load(Ordering::Relaxed).count_ones() >= LONG_IF
    }

    /// Records an attempt that ended. Concurrent attempts of one handler may overwrite each
    /// other's record; it is a heuristic, and the next record corrects it.
    pub fn record(&self, ran_long: bool) {
        let seen = self.0.load(Ordering::Relaxed);
        if seen == 0 && !ran_long {
            return;
        }
        let now = ((seen << 1) | u8::from(ran_long)) & MASK;
        self.0.store(now, Ordering::Relaxed);
    }
}

/// `inner`, adding up the wall-clock time spent inside its polls in `busy`.
pub(crate) struct Busy<'a, F> {
    pub inner: Pin<&'a mut F>,
    pub busy: Duration,
}

impl<F: Future> Future for Busy<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let polled = Instant::now();
        let out = self.inner.as_mut().poll(cx);
        self.busy += polled.elapsed();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handler_starts_long_after_two_of_its_last_four_attempts_ran_long() {
        let recent = RecentAttempts::default();
        assert!(!recent.start_long());
        recent.record(true);
        assert!(!recent.start_long(), "one long attempt is not enough");
        recent.record(false);
        recent.record(true);
        assert!(recent.start_long(), "two of the last four");
        recent.record(false);
        assert!(recent.start_long(), "still two of the last four");
        recent.record(false);
        assert!(!recent.start_long(), "only one of the last four");
        recent.record(false);
        recent.record(false);
        assert_eq!(
            recent.0.load(Ordering::Relaxed),
            0,
            "four short attempts forget it"
        );
    }

    #[test]
    fn busy_counts_the_time_in_polls_not_the_time_waiting() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let (busy, waited) = rt.block_on(async {
            let work = async {
                std::thread::sleep(Duration::from_millis(20));
                tokio::time::sleep(Duration::from_millis(100)).await;
                std::thread::sleep(Duration::from_millis(20));
            };
            tokio::pin!(work);
            let started = Instant::now();
            let mut timed = Busy {
                inner: work,
                busy: Duration::ZERO,
            };
            (&mut timed).await;
            (timed.busy, started.elapsed())
        });
        assert!(busy >= Duration::from_millis(40), "{busy:?}");
        assert!(busy < Duration::from_millis(100), "{busy:?} of {waited:?}");
        assert!(waited >= Duration::from_millis(140), "{waited:?}");
    }
}
