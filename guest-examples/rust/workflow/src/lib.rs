//! `workflow`: three durable steps, `one`, `two` and `three`, each returning `<name>@<attempt>`
//! (the attempt that ran it), and the result `one@A,two@B,three@C`. The payload (JSON, all
//! optional) shapes it:
//! - `{"sleep_ms": N}` sleeps durably (`nap`) for N ms between steps one and two;
//! - `{"fail_two_once": true}` makes step two ask for a retry on attempt 1;
//! - `{"big_step": N}` first runs a step `big` whose result is N bytes (over the host's limit
//!   of 512 KiB, the job fails).
//!
//! Replayed steps do not run again, so a retry after step two failed gives `one@1,two@2,...`.
use std::time::Duration;

use serde_json::Value;
use wasmq_guest::{Handler, Job, JobError, Level, step};

struct Workflow;

impl Handler for Workflow {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let options: Value = serde_json::from_slice(&job.payload).unwrap_or(Value::Null);
        let attempt = job.attempt;
        if let Some(n) = options.get("big_step").and_then(Value::as_u64) {
            step::run("big", || {
                Ok(vec![b'x'; usize::try_from(n).unwrap_or(usize::MAX)])
            })?;
        }
        let one: String = step::run("one", || {
            wasmq_guest::log(Level::Info, "running step one");
            Ok(format!("one@{attempt}"))
        })?;
        if let Some(ms) = options.get("sleep_ms").and_then(Value::as_u64) {
            step::sleep("nap", Duration::from_millis(ms))?;
        }
        let two: String = step::run("two", || {
            wasmq_guest::log(Level::Info, "running step two");
            if attempt == 1 && options.get("fail_two_once") == Some(&Value::Bool(true)) {
                return Err(JobError::Retry(
                    "step two fails on attempt 1, on purpose".to_string(),
                ));
            }
            Ok(format!("two@{attempt}"))
        })?;
        let three: String = step::run("three", || {
            wasmq_guest::log(Level::Info, "running step three");
            Ok(format!("three@{attempt}"))
        })?;
        Ok(format!("{one},{two},{three}").into_bytes())
    }
}

wasmq_guest::export_handler!(Workflow);
