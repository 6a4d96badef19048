//! `parent`: enqueues child jobs, then completes or fails. The payload (JSON, all optional):
//! `{"children": N}` enqueues N children (default 2) for the handler `echo`, each with the
//! payload `child <i>`; `"queue": "Q"` puts them in queue Q instead of the parent's;
//! `"fail": true` fails permanently after enqueueing them (so none is written). The result
//! lists the children's ids, comma-separated.
use serde_json::Value;
use wasmq_guest::{Child, Handler, Job, JobError};

struct Parent;

impl Handler for Parent {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let options: Value = serde_json::from_slice(&job.payload).unwrap_or(Value::Null);
        let n = options.get("children").and_then(Value::as_u64).unwrap_or(2);
        let queue = options.get("queue").and_then(Value::as_str);
        let mut ids = Vec::new();
        for i in 1..=n {
            let mut child = Child::new("echo", format!("child {i}"));
            if let Some(queue) = queue {
                child = child.queue(queue);
            }
            ids.push(wasmq_guest::enqueue(child)?);
        }
        if options.get("fail") == Some(&Value::Bool(true)) {
            return Err(JobError::Fail(
                "failed on purpose after enqueueing children".to_string(),
            ));
        }
        Ok(ids.join(",").into_bytes())
    }
}

wasmq_guest::export_handler!(Parent);
