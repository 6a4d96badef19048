//! Turns on the guest threads, shared fairly between queues.
//!
//! Guest code runs on a pool of threads (one more than the cores); tokio runs whatever is
//! ready in turn, oldest first. Left at that, a queue with many ready attempts gets the threads in
//! proportion to its number of attempts: eight busy attempts of one queue against one of
//! another, and the one waits behind up to eight turns of the eight. A flood of short attempts
//! (each under `long_job_after`, so never a long job) would take every core from its
//! neighbours that way.
//!
//! So every poll of an attempt (instantiation, guest code up to its next epoch yield, a host
//! call) first takes one of [`CpuShare`]'s turns, as many as there are guest threads, and
//! gives it back when the poll returns. No queue holds more than all turns but one. When
//! attempts wait for a turn, a freed turn goes to the queue that holds the fewest turns at
//! that moment (among equals, the one that started waiting first), and within a queue to its
//! oldest waiter: a queue with one ready attempt gets a turn at once, or at the next epoch
//! tick, however many its neighbour has ready.
//!
//! The turn is held for one poll and never across an await that waits (a poll that returns
//! `Pending` has given its turn back), so no attempt holds a turn while it sleeps, waits for
//! a long-job CPU slot or for I/O.
//!
//! The fast path (a turn free and nobody waiting) is one uncontended lock per poll.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::sync::oneshot;

/// The turns of one runtime.
#[derive(Debug)]
pub(crate) struct CpuShare {
    state: Mutex<State>,
    /// The most turns one queue holds at once.
    per_queue: usize,
}

#[derive(Debug)]
struct State {
    free: usize,
    /// Queues with attempts waiting, in the order they started waiting, each with its
    /// waiters, oldest first. The turns a queue holds are in `holding`, listed or not.
    queues: Vec<Waiting>,
    /// Turns held, by queue (only queues holding at least one).
    holding: Vec<(Arc<str>, usize)>,
}

#[derive(Debug)]
struct Waiting {
    queue: Arc<str>,
    waiters: VecDeque<oneshot::Sender<Turn>>,
}

/// One turn on a guest thread, for one poll; given back (or on to a waiter) when dropped.
#[derive(Debug)]
pub(crate) struct Turn {
    share: Arc<CpuShare>,
    queue: Arc<str>,
    /// True for a turn whose give-back was already counted under the lock (one a waiter that
    /// was gone never got).
    counted: bool,
}

impl Drop for Turn {
    fn drop(&mut self) {
        if !self.counted {
            self.share.give_back(&self.queue);
        }
    }
}

impl State {
    fn held(&self, queue: &str) -> usize {
        self.holding
            .iter()
            .find(|(q, _)| &**q == queue)
            .map_or(0, |(_, n)| *n)
    }

    fn hold(&mut self, queue: &Arc<str>) {
        match self.holding.iter_mut().find(|(q, _)| q == queue) {
            Some((_, n)) => *n += 1,
            None => self.holding.push((queue.clone(), 1)),
        }
    }

    fn unhold(&mut self, queue: &str) {
        if let Some(i) = self.holding.iter().position(|(q, _)| &**q == queue) {
            self.holding[i].1 -= 1;
            if self.holding[i].1 == 0 {
                self.holding.swap_remove(i);
            }
        }
    }
}

impl CpuShare {
    /// `turns` turns (at least one), at most `per_queue` of them (at least one) held by one
    /// queue at once.
    pub fn new(turns: usize, per_queue: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                free: turns.max(1),
                queues: Vec::new(),
                holding: Vec::new(),
            }),
            per_queue: per_queue.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change is made whole under the lock, and nothing in it panics.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A turn for `queue` now, or a place in line for one.
    fn take(self: &Arc<Self>, queue: &Arc<str>) -> Result<Turn, oneshot::Receiver<Turn>> {
        let mut state = self.lock();
        if state.free > 0 && state.queues.is_empty() && state.held(queue) < self.per_queue {
            state.free -= 1;
            state.hold(queue);
            return Ok(Turn {
                share: self.clone(),
                queue: queue.clone(),
                counted: false,
            });
        }
        let (tx, rx) = oneshot::channel();
        match state.queues.iter_mut().find(|w| w.queue == *queue) {
            Some(waiting) => waiting.waiters.push_back(tx),
            None => state.queues.push(Waiting {
                queue: queue.clone(),
                waiters: VecDeque::from([tx]),
            }),
        }
        // Turns may be free while every waiting queue is at its cap: this queue may be below
        // it. Hand out what is free now so that none is left idle.
        self.hand_out(&mut state);
        Err(rx)
    }

    fn give_back(self: &Arc<Self>, queue: &str) {
        let mut state = self.lock();
        state.unhold(queue);
        state.free += 1;
        self.hand_out(&mut state);
    }

    /// Gives the free turns to waiters: each to the waiting queue holding the fewest turns
    /// (among those below `per_queue`), the first of equals in the list.
    fn hand_out(self: &Arc<Self>, state: &mut State) {
        while state.free > 0 {
            let mut pick = None;
            let mut fewest = self.per_queue;
            for (i, waiting) in state.queues.iter().enumerate() {
                let held = state.held(&waiting.queue);
                if held < fewest {
                    fewest = held;
                    pick = Some(i);
                }
            }
            let Some(pick) = pick else {
                return;
            };
            let queue = state.queues[pick].queue.clone();
            let Some(tx) = state.queues[pick].waiters.pop_front() else {
                state.queues.remove(pick);
                continue;
            };
            if state.queues[pick].waiters.is_empty() {
                // Behind the others again when it next waits.
                state.queues.remove(pick);
            }
            state.free -= 1;
            state.hold(&queue);
            let turn = Turn {
                share: self.clone(),
                queue,
                counted: false,
            };
            if let Err(mut turn) = tx.send(turn) {
                // The waiter is gone (its attempt was dropped): undo here, and let the turn's
                // drop not take the lock again.
                state.unhold(&turn.queue);
                state.free += 1;
                turn.counted = true;
            }
        }
    }
}

/// `inner`, each of whose polls runs holding a turn of `share` for `queue`.
pub(crate) struct Fair<'a, F> {
    inner: Pin<&'a mut F>,
    share: Arc<CpuShare>,
    queue: Arc<str>,
    /// The place in line for a turn, while waiting for one.
    waiting: Option<oneshot::Receiver<Turn>>,
}

impl<'a, F> Fair<'a, F> {
    pub fn new(inner: Pin<&'a mut F>, share: Arc<CpuShare>, queue: Arc<str>) -> Self {
        Self {
            inner,
            share,
            queue,
            waiting: None,
        }
    }
}

impl<F: Future> Future for Fair<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let turn = loop {
            if let Some(rx) = &mut this.waiting {
                match Pin::new(rx).poll(cx) {
                    Poll::Ready(Ok(turn)) => {
                        this.waiting = None;
                        break Some(turn);
                    }
                    // Never: a place in line is only dropped unsent with the share itself.
                    // Run rather than hang.
                    Poll::Ready(Err(_)) => {
                        this.waiting = None;
                        break None;
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            match this.share.take(&this.queue) {
                Ok(turn) => break Some(turn),
                Err(rx) => this.waiting = Some(rx),
            }
        };
        let out = this.inner.as_mut().poll(cx);
        drop(turn);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    #[test]
    fn a_freed_turn_goes_to_the_waiting_queue_that_holds_the_fewest() {
        let share = CpuShare::new(2, 2);
        let (busy, quiet) = (queue("busy"), queue("quiet"));
        let a = share.take(&busy).unwrap();
        let b = share.take(&busy).unwrap();
        // Three more of `busy` wait, then one of `quiet`.
        let mut busy_waiters: Vec<_> = (0..3).map(|_| share.take(&busy).unwrap_err()).collect();
        let mut quiet_waiter = share.take(&quiet).unwrap_err();
        drop(a);
        let turn = quiet_waiter
            .try_recv()
            .expect("the quiet queue's waiter got the turn");
        assert!(busy_waiters.iter_mut().all(|w| w.try_recv().is_err()));
        // `busy` now holds none and `quiet` one: the next turn is busy's, its oldest waiter's.
        drop(b);
        let next = busy_waiters[0]
            .try_recv()
            .expect("busy's oldest waiter is next");
        drop((turn, next));
        assert!(busy_waiters[1].try_recv().is_ok());
        assert!(busy_waiters[2].try_recv().is_ok());
    }

    #[test]
    fn a_turn_given_to_a_dropped_waiter_goes_on_to_the_next() {
        let share = CpuShare::new(1, 1);
        let q = queue("q");
        let held = share.take(&q).unwrap();
        let gone = share.take(&q).unwrap_err();
        let mut next = share.take(&q).unwrap_err();
        drop(gone);
        drop(held);
        let turn = next
            .try_recv()
            .expect("the turn skipped the dropped waiter");
        drop(turn);
        // All given back: one free turn, taken at once.
        let again = share.take(&q).expect("the turn is free again");
        drop(again);
    }

    #[tokio::test]
    async fn every_poll_holds_a_turn_and_gives_it_back() {
        let share = CpuShare::new(1, 1);
        let q = queue("q");
        let probe = share.clone();
        let mut work = Box::pin(async move {
            for _ in 0..3 {
                // While this polls, the only turn is held.
                assert!(probe.take(&Arc::from("other")).is_err());
                tokio::task::yield_now().await;
            }
        });
        Fair::new(work.as_mut(), share.clone(), q.clone()).await;
        assert!(share.take(&q).is_ok(), "the turn came back");
    }
}
