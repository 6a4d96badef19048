//! The ack hand-off: what an executor sends the acker as an attempt ends.
//!
//! An [`Ack`] is one attempt's outcome ([`AckOutcome`]: a completion, a failure, or a durable
//! sleep), with the attempt's slot when it may run the queue's next job ([`Carried`]). The
//! executor makes them (`executor.rs`); the acker records them in Redis in batches
//! (`acker.rs`).

use super::slots::Slot;
use crate::queue::{Completion, Failure, Suspension};

/// The outcome of one attempt, to record.
#[derive(Debug)]
pub(crate) struct Ack {
    pub queue: String,
    pub outcome: AckOutcome,
    /// The slot of a successful attempt, for the queue's next job.
    pub slot: Option<Carried>,
    /// The attempt's slot went on to a job leased ahead: nothing waits for this outcome but
    /// the record, so it may wait to be recorded with others (`acker::GATHER`).
    pub slot_ran_on: bool,
}

/// A slot handed on for the queue's next jobs.
#[derive(Debug)]
pub(crate) struct Carried {
    pub slot: Slot,
    /// How many jobs to lease for it beyond the next one (`executor::lease_ahead`).
    pub ahead: usize,
}

#[derive(Debug)]
pub(crate) enum AckOutcome {
    Complete(Completion),
    Fail(Failure),
    /// The attempt reached a durable sleep: the job waits, the attempt not counted.
    Suspend(Suspension),
}
