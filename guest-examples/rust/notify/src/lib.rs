//! `notify`: POSTs `{"job": <id>, "payload": <payload>}` to the config value `url`, with the
//! secret `NOTIFY_TOKEN` as `Authorization: Bearer <token>` (both read through
//! `wasi:config/store`). A 2xx answer's body is the result; a 5xx asks for a retry, a 4xx
//! fails the job; a request the host denies fails it. The canonical behaviour every language
//! follows is in guest-examples/README.md.
use wasmq_guest::{Handler, Job, JobError, config, http};

struct Notify;

impl Handler for Notify {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let url = config::get("url").ok_or_else(|| JobError::Fail("no url configured".into()))?;
        let token = config::get("NOTIFY_TOKEN")
            .ok_or_else(|| JobError::Fail("no NOTIFY_TOKEN secret".into()))?;
        let payload: serde_json::Value = serde_json::from_slice(&job.payload)
            .map_err(|e| JobError::Fail(format!("invalid json: {e}")))?;
        let body = serde_json::json!({ "job": job.id, "payload": payload });
        let response = http::Request::post(&url)
            .bearer(&token)
            .json(&body)?
            .send()?
            .check()?;
        if response.class() != http::StatusClass::Success {
            return Err(JobError::Fail(format!("HTTP {}", response.status)));
        }
        Ok(response.body)
    }
}

wasmq_guest::export_handler!(Notify);
