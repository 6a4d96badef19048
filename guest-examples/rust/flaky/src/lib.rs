//! `flaky`: fails transiently on attempt 1 and succeeds from attempt 2 on.
//!
//! Returns `retry` on attempt 1 and `{"attempt":N}` on attempt N >= 2; the payload
//! `{"fail":true}` fails permanently on any attempt.
use serde_json::Value;
use wasmq_guest::{Handler, Job, JobError, Level};

struct Flaky;

fn asks_to_fail(payload: &[u8]) -> bool {
    serde_json::from_slice::<Value>(payload)
        .is_ok_and(|doc| doc.get("fail") == Some(&Value::Bool(true)))
}

impl Handler for Flaky {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        wasmq_guest::log(
            Level::Info,
            &format!("flaky attempt {} of {}", job.attempt, job.max_attempts),
        );
        if asks_to_fail(&job.payload) {
            wasmq_guest::log(Level::Error, "the payload asks to fail");
            return Err(JobError::Fail(
                "failed on purpose: the payload asks to fail".to_string(),
            ));
        }
        if job.attempt <= 1 {
            wasmq_guest::progress(0);
            return Err(JobError::Retry(
                "attempt 1 fails on purpose; retry me".to_string(),
            ));
        }
        wasmq_guest::progress(100);
        Ok(format!(r#"{{"attempt":{}}}"#, job.attempt).into_bytes())
    }
}

wasmq_guest::export_handler!(Flaky);
