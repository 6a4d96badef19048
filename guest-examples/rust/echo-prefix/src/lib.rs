//! `echo-prefix`: returns the job payload after the prefix `v2:`. A second version of `echo`,
//! so deploy, hot-reload and rollback tests can tell which version ran a job.
use wasmq_guest::{Handler, Job, JobError};

struct EchoPrefix;

impl Handler for EchoPrefix {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let mut result = b"v2:".to_vec();
        result.extend_from_slice(&job.payload);
        Ok(result)
    }
}

wasmq_guest::export_handler!(EchoPrefix);
