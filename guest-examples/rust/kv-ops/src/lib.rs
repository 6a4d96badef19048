//! `kv-ops`: the payload is `{"bucket": NAME, "ops": [OP, ...]}`, each OP one of
//! `{"op": "get"|"exists"|"delete", "key": K}`, `{"op": "set", "key": K, "value": TEXT}`,
//! `{"op": "set_bytes", "key": K, "len": N}` (N bytes of `x`), `{"op": "incr", "key": K,
//! "delta": N}`, `{"op": "keys"}`, `{"op": "get_many"|"delete_many", "keys": [K, ...]}`,
//! `{"op": "set_many", "pairs": [[K, TEXT], ...]}`. The result is a JSON array with one
//! `{"ok": VALUE}` or `{"err": MESSAGE}` per op; a bucket that does not open fails the job
//! with `open: <error>`.
use serde_json::{Value, json};
use wasmq_guest::kv::{self, Bucket, Error};
use wasmq_guest::{Handler, Job, JobError};

struct KvOps;

fn text(bytes: Option<Vec<u8>>) -> Value {
    bytes.map_or(Value::Null, |b| {
        Value::String(String::from_utf8_lossy(&b).into_owned())
    })
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn run(bucket: &Bucket, op: &Value) -> Result<Value, Error> {
    let key = op["key"].as_str().unwrap_or_default();
    Ok(match op["op"].as_str().unwrap_or_default() {
        "get" => text(bucket.get(key)?),
        "exists" => json!(bucket.exists(key)?),
        "delete" => {
            bucket.delete(key)?;
            Value::Null
        }
        "set" => {
            bucket.set(key, op["value"].as_str().unwrap_or_default())?;
            Value::Null
        }
        "set_bytes" => {
            let len = op["len"].as_u64().unwrap_or(0) as usize;
            bucket.set(key, vec![b'x'; len])?;
            Value::Null
        }
        "incr" => json!(bucket.increment(key, op["delta"].as_u64().unwrap_or(1))?),
        "keys" => {
            let mut keys = bucket.keys()?;
            keys.sort();
            json!(keys)
        }
        "get_many" => Value::Array(
            bucket
                .get_many(&strings(&op["keys"]))?
                .into_iter()
                .map(text)
                .collect(),
        ),
        "delete_many" => {
            bucket.delete_many(&strings(&op["keys"]))?;
            Value::Null
        }
        "set_many" => {
            let pairs: Vec<(String, Vec<u8>)> = op["pairs"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|p| {
                            let k = p[0].as_str().unwrap_or_default().to_string();
                            (k, p[1].as_str().unwrap_or_default().as_bytes().to_vec())
                        })
                        .collect()
                })
                .unwrap_or_default();
            bucket.set_many(&pairs)?;
            Value::Null
        }
        other => return Err(Error::Other(format!("unknown op {other:?}"))),
    })
}

impl Handler for KvOps {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let input: Value = serde_json::from_slice(&job.payload)
            .map_err(|e| JobError::Fail(format!("payload: {e}")))?;
        let bucket = Bucket::open(input["bucket"].as_str().unwrap_or_default())
            .map_err(|e| JobError::Fail(format!("open: {}", kv::message(&e))))?;
        let results: Vec<Value> = input["ops"]
            .as_array()
            .map(|ops| {
                ops.iter()
                    .map(|op| match run(&bucket, op) {
                        Ok(v) => json!({ "ok": v }),
                        Err(e) => json!({ "err": kv::message(&e) }),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(serde_json::to_vec(&results).unwrap_or_default())
    }
}

wasmq_guest::export_handler!(KvOps);
