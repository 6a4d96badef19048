//! `retry`: always reports a transient failure, so the host retries it per its policy. The
//! message names the attempt and the attempts the job has: `try again (attempt N of M)`.
use wasmq_guest::{Handler, Job, JobError};

struct Retry;

impl Handler for Retry {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        Err(JobError::Retry(format!(
            "try again (attempt {} of {})",
            job.attempt, job.max_attempts
        )))
    }
}

wasmq_guest::export_handler!(Retry);
