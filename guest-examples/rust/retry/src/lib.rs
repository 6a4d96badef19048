//! `retry`: always reports a transient failure, so the host retries it per its policy.
use wasmq_guest::{Handler, Job, JobError};

struct Retry;

impl Handler for Retry {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        Err(JobError::Retry(format!(
            "try again (attempt {})",
            job.attempt
        )))
    }
}

wasmq_guest::export_handler!(Retry);
