//! `fail`: always reports a permanent failure, so the job goes straight to the dead-letter queue.
use wasmq_guest::{Handler, Job, JobError};

struct Fail;

impl Handler for Fail {
    fn handle(_job: Job) -> Result<Vec<u8>, JobError> {
        Err(JobError::Fail("permanent failure".to_string()))
    }
}

wasmq_guest::export_handler!(Fail);
