//! `transform`: `{"numbers":[1,2,3]}` -> `{"count":3,"sum":6,"max":3}`.
//!
//! The output is canonical and byte-identical in every language of guest-examples/ (see
//! guest-examples/README.md): no spaces, keys in that order, integers in decimal, `max` null
//! for an empty list. Numbers must be integers within +-(2^53 - 1), the range every JSON parser
//! holds exactly, and so must every partial sum. A payload that is not JSON fails with
//! "invalid json: ..."; JSON of the wrong shape fails with "invalid input: ...". The payload
//! `{"spin":true}` busy-loops forever: a handler that only a deadline stops.
use serde_json::Value;
use wasmq_guest::{Handler, Job, JobError, Level};

const MAX_SAFE: i64 = (1 << 53) - 1;
const NOT_INTEGERS: &str = r#"invalid input: "numbers" must be an array of integers"#;

struct Transform;

/// An integral JSON number within +-`MAX_SAFE`; `1.0` and `2e1` count, as they do for
/// JavaScript, whose numbers cannot tell them from `1` and `20`.
fn safe_integer(value: &Value) -> Option<i64> {
    let n = value.as_number()?;
    let int = match n.as_i64() {
        Some(i) => i,
        None => {
            let f = n.as_f64()?;
            if f.fract() != 0.0 || f.abs() > MAX_SAFE as f64 {
                return None;
            }
            f as i64
        }
    };
    (-MAX_SAFE..=MAX_SAFE).contains(&int).then_some(int)
}

impl Handler for Transform {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let doc: Value = serde_json::from_slice(&job.payload)
            .map_err(|e| JobError::Fail(format!("invalid json: {e}")))?;
        if doc.get("spin") == Some(&Value::Bool(true)) {
            wasmq_guest::log(Level::Warn, "spinning until the deadline");
            let mut x = u64::from(job.attempt);
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        let numbers = doc
            .get("numbers")
            .and_then(Value::as_array)
            .ok_or_else(|| JobError::Fail(NOT_INTEGERS.to_string()))?;
        wasmq_guest::progress(50);
        let mut sum: i64 = 0;
        let mut max: Option<i64> = None;
        for item in numbers {
            let n = safe_integer(item).ok_or_else(|| JobError::Fail(NOT_INTEGERS.to_string()))?;
            // Both terms are within +-(2^53 - 1), so the i64 addition cannot overflow.
            sum += n;
            if !(-MAX_SAFE..=MAX_SAFE).contains(&sum) {
                return Err(JobError::Fail(
                    "invalid input: sum out of range".to_string(),
                ));
            }
            max = Some(max.map_or(n, |m| m.max(n)));
        }
        wasmq_guest::log(Level::Info, &format!("transform {} numbers", numbers.len()));
        wasmq_guest::progress(100);
        let max = max.map_or_else(|| "null".to_string(), |m| m.to_string());
        Ok(format!(r#"{{"count":{},"sum":{sum},"max":{max}}}"#, numbers.len()).into_bytes())
    }
}

wasmq_guest::export_handler!(Transform);
