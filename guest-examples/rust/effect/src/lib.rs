//! `effect`: the chaos command's handler (`host/benches/chaos`). The payload is
//! `<ms> <anything>`: it sleeps `ms` milliseconds (a WASI clock wait, so a SIGKILL lands
//! mid-job), then performs its one side effect, a log line `chaos-effect id=<job id>
//! attempt=<attempt>` that the host writes to its log as it happens, and returns the payload
//! unchanged. A guest has no network, so the host's log is where every execution that reached
//! its side effect can be counted, including those whose outcome never made it to Redis.
use std::time::Duration;
use wasmq_guest::{Handler, Job, JobError, Level};

struct Effect;

impl Handler for Effect {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let ms: u64 = std::str::from_utf8(&job.payload)
            .ok()
            .and_then(|text| text.split_whitespace().next())
            .and_then(|word| word.parse().ok())
            .unwrap_or(0);
        std::thread::sleep(Duration::from_millis(ms));
        wasmq_guest::log(
            Level::Info,
            &format!("chaos-effect id={} attempt={}", job.id, job.attempt),
        );
        Ok(job.payload)
    }
}

wasmq_guest::export_handler!(Effect);
