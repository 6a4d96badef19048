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
//!
//! With `share.rs` (turns between queues), this is what keeps a queue of infinite loops, or
//! the whole hostile-guest corpus, from raising a neighbour queue's latency past twice its
//! baseline (`tests/isolation`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::{CallHook, Store, UpdateDeadline};

use super::outcome::DeadlineExceeded;
use super::{HOSTCALL_FUEL, HostState, lock_slot};

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

/// Installs the hooks that share the long-job CPU slots (`long_jobs`) on an attempt's store:
/// [`call_hook`] and [`epoch_callback`].
pub(crate) fn install_hooks(store: &mut Store<HostState>, long_jobs: &Arc<Semaphore>) {
    call_hook(store, long_jobs.clone());
    epoch_callback(store, long_jobs.clone());
}

/// A long job waiting in a host call (a WASI clock or poll) is not using the CPU: it gives its
/// slot back. Back in guest code it takes a free one at once, or, when all are taken, queues
/// for one at its next epoch check, now: a guest that calls the host in a loop (spinning on
/// the clock, flooding stdout) would otherwise run without a slot from each call to the next
/// tick, and CPU hogs of that kind would not share the slots but all run at once.
///
/// The same hook sets the hostcall fuel: wasmtime's default before each host call, unlimited
/// for the `handle` export's result. Guest code has returned when it is lifted, whatever its
/// size (it lies in the guest's memory, so it is at most the memory cap), so that one over
/// `MAX_RETURNED_BYTES` is `result_too_large` rather than a trap at wasmtime's 128 MiB.
/// (Lifting it as a view, `WasmList`, and copying only what is kept does not work: wasmtime
/// 48 runs the guest's post-return, which frees it, before the call returns.) A host call's
/// arguments are lifted after `CallingHost`, under `HOSTCALL_FUEL` again.
fn call_hook(store: &mut Store<HostState>, slots: Arc<Semaphore>) {
    store.call_hook(move |mut ctx, hook| {
        match hook {
            CallHook::CallingHost => {
                ctx.set_hostcall_fuel(HOSTCALL_FUEL);
                drop(lock_slot(&ctx.data().cpu_slot).take());
            }
            CallHook::ReturningFromWasm => ctx.set_hostcall_fuel(usize::MAX),
            CallHook::ReturningFromHost => {
                let state = ctx.data();
                if Instant::now() >= state.long_from {
                    let mut held = lock_slot(&state.cpu_slot);
                    if held.is_none() {
                        match slots.clone().try_acquire_owned() {
                            Ok(permit) => *held = Some(permit),
                            Err(_) => {
                                drop(held);
                                ctx.set_epoch_deadline(0);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    });
}

/// At each epoch tick: past the deadline the guest traps; a short job yields to tokio; a long
/// job gives up its CPU slot and queues (FIFO) for one again, so long jobs share their slots
/// in turn and never take the cores kept for short ones.
fn epoch_callback(store: &mut Store<HostState>, long_jobs: Arc<Semaphore>) {
    store.epoch_deadline_callback(move |ctx| {
        let state = ctx.data();
        let now = Instant::now();
        if now >= state.deadline {
            return Err(DeadlineExceeded.into());
        }
        if now < state.long_from {
            // tokio's own yield: it puts the task behind the others that are ready. A bare
            // self-wake may be polled again at once and starve them.
            return Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ));
        }
        let slot = state.cpu_slot.clone();
        drop(lock_slot(&slot).take());
        let long_jobs = long_jobs.clone();
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                if let Ok(permit) = long_jobs.acquire_owned().await {
                    *lock_slot(&slot) = Some(permit);
                }
                tokio::task::yield_now().await;
            }),
        ))
    });
}

/// A handler whose recent attempts ran long waits for a CPU slot before it starts: its
/// instantiation and first guest code may be what cannot be interrupted.
pub(crate) async fn wait_for_slot(
    slots: Arc<Semaphore>,
    held: &Mutex<Option<OwnedSemaphorePermit>>,
) {
    if let Ok(permit) = slots.acquire_owned().await {
        *lock_slot(held) = Some(permit);
    }
}

/// Runs `attempt` under `timeout`, returning also the time it held a runtime thread ([`Busy`]).
pub(crate) async fn timed<F: Future>(
    timeout: Duration,
    attempt: F,
) -> (Result<F::Output, tokio::time::error::Elapsed>, Duration) {
    tokio::pin!(attempt);
    let mut timed = Busy {
        inner: attempt,
        busy: Duration::ZERO,
    };
    let result = tokio::time::timeout(timeout, &mut timed).await;
    (result, timed.busy)
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
