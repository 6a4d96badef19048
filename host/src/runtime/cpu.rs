//! Which attempts are long jobs, and how much CPU time an attempt used.
//!
//! A job becomes long (and from then on runs only while it holds one of the long-job CPU
//! slots, see `mod.rs`) once it has used `long_job_after` of CPU time. Until then it runs
//! without a slot, and some of its work cannot be stopped at an epoch tick at all: a
//! `memory.fill` or `memory.copy` of megabytes, lifting a large result out of the guest. A handler whose every
//! job runs long would get that head start on every attempt, and a batch of its jobs starting
//! together (a queue of CPU hogs whose deadlines fall together, or retries) would take every
//! runtime thread at once, short jobs of other queues waiting behind them.
//!
//! So each [`Handler`](super::Handler) (one loaded version) remembers which of its last
//! attempts ran long ([`RecentAttempts`]): when two of the last four did, the next attempt
//! takes a CPU slot before it instantiates and counts as long from its start.
//!
//! "Long" is CPU time ([`CpuUse`]): the time the threads that polled the attempt spent
//! running it, read from their own CPU clocks at each poll ([`Busy`]) and at each epoch tick,
//! never the time since it started or the wall-clock time its polls took. Those count the
//! time an attempt waits (for a thread, a turn, a slot, in a sleep, or for a core the OS gave
//! to another process in the middle of a poll), and on a loaded machine any attempt waits a
//! few milliseconds somewhere: counted by the clock on the wall, a neighbour's 0.3 ms attempt
//! became a long job and queued for the CPU slot behind a hostile one that held it for
//! seconds (`tests/isolation`, README).
//!
//! Two out of four, not one: an attempt that is sometimes long (a cache miss, a larger
//! payload) must not send its handler to queue behind CPU hogs for that.
//!
//! The short path costs two reads of the thread's CPU clock per poll (a system call each,
//! about 1 µs on this project's 2-core VM; a short attempt is often one poll), one per epoch
//! tick until the attempt is long, and one relaxed atomic load per attempt; a handler that
//! never runs long never writes the shared state.
//!
//! With `share.rs` (turns between queues), this is what keeps a queue of infinite loops, or
//! the whole hostile-guest corpus, from raising a neighbour queue's latency past twice its
//! baseline (`tests/isolation`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
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

/// The CPU time one attempt has used: what makes it a long job ([`CpuUse::is_long`]) and
/// what says, when it ends, whether it ran long ([`RecentAttempts`]).
///
/// CPU time, not wall-clock time: the time the threads that polled the attempt spent running
/// it (their own CPU clocks, read as each poll starts and ends), not the time since it
/// started, nor the time its polls took, both of which count the time the attempt waited
/// (for a guest thread, for a turn, or for a core the OS gave to other processes in the middle
/// of a poll). On a loaded machine a short attempt waits for milliseconds at any step, and
/// counted by the clock on the wall it became a long job: it then queued for a long-job CPU
/// slot behind the CPU hogs of every queue, one of which may hold the slot for seconds in
/// something it cannot be interrupted in (lifting a 136 MiB result took 2 s in a debug build,
/// before a result that large was measured in the guest instead, `returned.rs`).
/// A neighbour's 0.3 ms attempt waited 1.5 s that way (`tests/isolation`).
///
/// The clock is read only until the attempt has used `long_after`: all that is asked of it
/// is whether it has, and a long job making a million host calls, each a poll when it queues
/// for a slot, would otherwise read it (a system call) two million times.
///
/// Written and read only by the thread polling the attempt (its polls, and the store's hooks
/// called within them); atomics only to be shared with the store.
#[derive(Debug)]
pub(crate) struct CpuUse {
    /// CPU time of the attempt's finished polls, in ns, counted until it reaches
    /// `long_after`.
    used: AtomicU64,
    /// The polling thread's CPU clock when the poll under way started, in ns.
    poll_started: AtomicU64,
    /// Set once the attempt is a long job, for good: from its start, or once it has used
    /// `long_after`.
    long: AtomicBool,
    /// Set once it has used `long_after`: it ran long.
    ran_long: AtomicBool,
    /// CPU time after which it is a long job, in ns.
    long_after: u64,
}

impl CpuUse {
    /// An attempt that becomes a long job once it has used `long_after` of CPU time (`ZERO`:
    /// at once, for a handler whose recent attempts ran long).
    pub fn new(long_after: Duration) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicU64::new(0),
            poll_started: AtomicU64::new(0),
            long: AtomicBool::new(long_after.is_zero()),
            ran_long: AtomicBool::new(false),
            long_after: u64::try_from(long_after.as_nanos()).unwrap_or(u64::MAX),
        })
    }

    /// Whether the attempt is a long job, as last seen (no clock read): what a host call's
    /// return checks, which may come millions of times an attempt.
    pub fn seen_long(&self) -> bool {
        self.long.load(Ordering::Relaxed)
    }

    /// Whether the attempt is a long job now; from within one of its polls (one read of the
    /// thread's CPU clock until it is one).
    pub fn is_long(&self) -> bool {
        if self.seen_long() {
            return true;
        }
        let in_poll = thread_cpu_ns().saturating_sub(self.poll_started.load(Ordering::Relaxed));
        self.note(self.used.load(Ordering::Relaxed).saturating_add(in_poll))
    }

    /// Whether the attempt's finished polls used `long_after` of CPU time: it ran long
    /// ([`RecentAttempts`]), whether or not it started as a long job.
    pub fn ran_long(&self) -> bool {
        self.ran_long.load(Ordering::Relaxed)
    }

    /// Records that the attempt has used `used`, and returns whether that is `long_after`
    /// or more.
    fn note(&self, used: u64) -> bool {
        let long = used >= self.long_after;
        if long {
            self.long.store(true, Ordering::Relaxed);
            self.ran_long.store(true, Ordering::Relaxed);
        }
        long
    }
}

/// The calling thread's CPU clock, in ns (0 where it cannot be read, which counts nothing).
fn thread_cpu_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// `inner`, adding the CPU time each of its polls used to `cpu` ([`CpuUse`]), until it has
/// used enough to have run long.
pub(crate) struct Busy<'a, F> {
    pub inner: Pin<&'a mut F>,
    pub cpu: &'a CpuUse,
}

impl<F: Future> Future for Busy<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if self.cpu.ran_long() {
            return self.inner.as_mut().poll(cx);
        }
        let started = thread_cpu_ns();
        self.cpu.poll_started.store(started, Ordering::Relaxed);
        let out = self.inner.as_mut().poll(cx);
        let took = thread_cpu_ns().saturating_sub(started);
        let used = self.cpu.used.load(Ordering::Relaxed).saturating_add(took);
        self.cpu.used.store(used, Ordering::Relaxed);
        self.cpu.note(used);
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
/// `MAX_RETURNED_BYTES` is `result_too_large` (measured, never copied: `returned.rs`) rather
/// than a trap at wasmtime's 128 MiB. A host call's arguments are lifted after `CallingHost`,
/// under `HOSTCALL_FUEL` again.
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
                if state.cpu.seen_long() {
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
        if Instant::now() >= state.deadline {
            return Err(DeadlineExceeded.into());
        }
        if !state.cpu.is_long() {
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

/// Runs `attempt` under `timeout`, adding the CPU time its polls use to `cpu` ([`Busy`]).
pub(crate) async fn timed<F: Future>(
    timeout: Duration,
    cpu: &CpuUse,
    attempt: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    tokio::pin!(attempt);
    let timed = Busy {
        inner: attempt,
        cpu,
    };
    tokio::time::timeout(timeout, timed).await
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

    /// Keeps this thread running for `d` of its own CPU time.
    fn spin(d: Duration) {
        let until = thread_cpu_ns() + u64::try_from(d.as_nanos()).unwrap();
        while thread_cpu_ns() < until {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn busy_counts_the_cpu_time_of_polls_not_the_time_waiting() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let cpu = CpuUse::new(Duration::from_millis(30));
        let waited = rt.block_on(async {
            let work = async {
                spin(Duration::from_millis(20));
                tokio::time::sleep(Duration::from_millis(100)).await;
                assert!(!cpu.seen_long(), "20 ms of the 30");
                spin(Duration::from_millis(20));
                assert!(cpu.is_long(), "40 ms of the 30, within a poll");
            };
            tokio::pin!(work);
            let started = Instant::now();
            Busy {
                inner: work,
                cpu: &cpu,
            }
            .await;
            started.elapsed()
        });
        assert!(cpu.ran_long());
        let busy = Duration::from_nanos(cpu.used.load(Ordering::Relaxed));
        assert!(busy >= Duration::from_millis(40), "{busy:?}");
        assert!(busy < Duration::from_millis(100), "{busy:?} of {waited:?}");
        assert!(waited >= Duration::from_millis(140), "{waited:?}");
    }

    /// A poll whose thread does not run (the OS gave its core to another process, here a
    /// sleep in the middle of the poll) uses no CPU time: on a loaded machine a short attempt
    /// must not become a long job, to queue behind CPU hogs for a slot, because it waited.
    #[test]
    fn a_poll_whose_thread_waits_for_a_core_is_not_busy() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let cpu = CpuUse::new(Duration::from_millis(4));
        rt.block_on(async {
            let work = async {
                std::thread::sleep(Duration::from_millis(50));
                assert!(
                    !cpu.is_long(),
                    "50 ms of wall-clock time in a poll, little CPU"
                );
            };
            tokio::pin!(work);
            Busy {
                inner: work,
                cpu: &cpu,
            }
            .await;
        });
        let used = Duration::from_nanos(cpu.used.load(Ordering::Relaxed));
        assert!(used < Duration::from_millis(4), "{used:?}");
        assert!(!cpu.seen_long());
        assert!(!cpu.ran_long());
    }

    #[test]
    fn an_attempt_of_a_handler_that_ran_long_is_long_from_its_start() {
        let cpu = CpuUse::new(Duration::ZERO);
        assert!(cpu.seen_long());
        assert!(cpu.is_long());
        // Long from its start, but whether it ran long is still its CPU time's to say.
        assert!(!cpu.ran_long());
    }
}
