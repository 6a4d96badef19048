//! Hostile `panic`: a Rust panic, which on wasm aborts the instance with a trap.
use wasmq_guest::{Handler, Job, JobError};

struct Panic;

impl Handler for Panic {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        panic!("handler panicked on job {}", job.id)
    }
}

wasmq_guest::export_handler!(Panic);
