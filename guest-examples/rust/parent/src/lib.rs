//! `parent`: enqueues child jobs, then completes or fails. The payload (JSON, all optional):
//! `{"children": N}` enqueues N children (default 2) for the handler `echo`, each with the
//! payload `child <i>`; `"queue": "Q"` puts them in queue Q instead of the parent's;
//! `"handler": "H"` gives them to handler H instead of `echo`; `"id": "X"` gives them the id X
//! (one child) or `X-<i>`; `"copy": true` gives each this job's own payload (a job that
//! enqueues copies of itself, with `"handler": "parent"`); `"child_bytes": B` gives each a
//! payload of B bytes instead; `"fail": true` fails permanently after enqueueing them (so
//! none is written). The result lists the children's ids, comma-separated. A child the host
//! refuses fails the job, unless `"tolerate": true`: then the job stops enqueueing there and
//! completes with the children it has, its result ending `\nrefused: <why>`.
use serde_json::Value;
use wasmq_guest::{Child, Handler, Job, JobError};

struct Parent;

impl Handler for Parent {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let options: Value = serde_json::from_slice(&job.payload).unwrap_or(Value::Null);
        let n = options.get("children").and_then(Value::as_u64).unwrap_or(2);
        let queue = options.get("queue").and_then(Value::as_str);
        let handler = options
            .get("handler")
            .and_then(Value::as_str)
            .unwrap_or("echo");
        let id = options.get("id").and_then(Value::as_str);
        let copy = options.get("copy") == Some(&Value::Bool(true));
        let child_bytes = options.get("child_bytes").and_then(Value::as_u64);
        let tolerate = options.get("tolerate") == Some(&Value::Bool(true));
        let mut ids = Vec::new();
        let mut refused = None;
        for i in 1..=n {
            let payload = match (copy, child_bytes) {
                (true, _) => job.payload.clone(),
                (false, Some(bytes)) => vec![b'x'; usize::try_from(bytes).unwrap_or(0)],
                (false, None) => format!("child {i}").into_bytes(),
            };
            let mut child = Child::new(handler, payload);
            if let Some(queue) = queue {
                child = child.queue(queue);
            }
            if let Some(id) = id {
                child = child.id(if n == 1 {
                    id.to_string()
                } else {
                    format!("{id}-{i}")
                });
            }
            match wasmq_guest::enqueue(child) {
                Ok(child_id) => ids.push(child_id),
                Err(JobError::Fail(why)) if tolerate => {
                    refused = Some(why);
                    break;
                }
                Err(err) => return Err(err),
            }
        }
        if options.get("fail") == Some(&Value::Bool(true)) {
            return Err(JobError::Fail(
                "failed on purpose after enqueueing children".to_string(),
            ));
        }
        let mut result = ids.join(",");
        if let Some(why) = refused {
            result.push_str("\nrefused: ");
            result.push_str(&why);
        }
        Ok(result.into_bytes())
    }
}

wasmq_guest::export_handler!(Parent);
