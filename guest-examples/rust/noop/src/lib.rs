//! `noop`: does nothing and returns an empty result. Benchmarks use it to measure the cost of
//! the host alone.
use wasmq_guest::{Handler, Job, JobError};

struct Noop;

impl Handler for Noop {
    fn handle(_job: Job) -> Result<Vec<u8>, JobError> {
        Ok(Vec::new())
    }
}

wasmq_guest::export_handler!(Noop);
