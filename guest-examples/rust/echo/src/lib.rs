//! `echo`: returns the job payload as the result.
use wasmq_guest::{Handler, Job, JobError, Level};

struct Echo;

impl Handler for Echo {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        wasmq_guest::log(Level::Info, &format!("echo {} bytes", job.payload.len()));
        wasmq_guest::progress(100);
        Ok(job.payload)
    }
}

wasmq_guest::export_handler!(Echo);
