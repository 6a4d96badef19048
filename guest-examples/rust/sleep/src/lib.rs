//! `sleep`: sleeps for the number of milliseconds given as payload (default 1000), without
//! burning CPU (a WASI clock wait), and returns when it started and ended as
//! `{"start_ms":..,"end_ms":..}` (wall clock, ms since the epoch), so tests can see how many
//! jobs ran at once.
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wasmq_guest::{Handler, Job, JobError};

struct Sleep;

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

impl Handler for Sleep {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let ms: u64 = std::str::from_utf8(&job.payload)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1000);
        let start = now_ms();
        std::thread::sleep(Duration::from_millis(ms));
        let end = now_ms();
        Ok(format!(r#"{{"start_ms":{start},"end_ms":{end}}}"#).into_bytes())
    }
}

wasmq_guest::export_handler!(Sleep);
