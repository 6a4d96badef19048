//! Job record decoding: what turns Redis data into a `Job` or `LeasedJob`.
//!
//! The first byte picks the input's shape:
//! - 0: a job hash as `HGETALL` returns it (`field NUL value NUL field NUL value ...`), decoded
//!   by `Job::from_hash` (what `Client::get` and `Client::list` do). Properties: no panic; a
//!   hash that decodes is a job whose hash, written as docs/protocol.md says, decodes to the
//!   same job.
//! - 1: a generated `Job`, written as its hash and decoded: it must come back unchanged.
//! - 2: an arbitrary Redis reply to fetch.lua, decoded by `Fetched::decode` (what
//!   `Client::fetch_batch` does): an error or a batch, never a panic.
//! - 3: a well-formed fetch.lua reply built from generated jobs: it must decode to them.
#![no_main]

use std::collections::HashMap;
use std::time::Duration;

use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use redis::Value;
use wasmq::queue::{Attempt, Backoff, CallEntry, Fetched, Job, JobState, LeasedJob, OwnPolicy};
use wasmq_fuzz::{fields, job_hash};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => raw_hash(rest),
        1 => {
            let _ = generated_job(&mut Unstructured::new(rest));
        }
        2 => {
            if let Ok(value) = reply(&mut Unstructured::new(rest), 0) {
                let _ = Fetched::decode(value, "q", "token");
            }
        }
        _ => {
            let _ = well_formed_fetch(&mut Unstructured::new(rest));
        }
    }
});

fn raw_hash(data: &[u8]) {
    let parts = fields(data);
    let mut hash = HashMap::new();
    for pair in parts.chunks(2) {
        if let [field, value] = pair {
            hash.insert(String::from_utf8_lossy(field).into_owned(), value.to_vec());
        }
    }
    let Ok(job) = Job::from_hash("q", "j", hash) else {
        return;
    };
    let again = Job::from_hash("q", "j", job_hash(&job))
        .unwrap_or_else(|err| panic!("{job:?} written back does not decode: {err}"));
    // Debug, not ==: a NaN jitter is the same job although NaN != NaN.
    assert_eq!(format!("{again:?}"), format!("{job:?}"));
}

fn text(u: &mut Unstructured) -> Result<String> {
    String::arbitrary(u)
}

/// An attempt's call record as a history entry can hold it: absent, or at least one entry (an
/// empty list reads as absent).
fn calls(u: &mut Unstructured) -> Result<Option<Vec<CallEntry>>> {
    let n = u.int_in_range(0..=3)?;
    let mut calls = Vec::new();
    for _ in 0..n {
        calls.push(CallEntry {
            kind: text(u)?,
            at_ms: u64::arbitrary(u)?,
            duration_ms: u64::arbitrary(u)?,
            method: Option::arbitrary(u)?,
            target: Option::arbitrary(u)?,
            status: Option::arbitrary(u)?,
            outcome: Option::arbitrary(u)?,
            op: Option::arbitrary(u)?,
            db: Option::arbitrary(u)?,
        });
    }
    Ok((!calls.is_empty()).then_some(calls))
}

/// A job as `Job::from_hash` can produce it: times in whole ms, a timeout above zero, no
/// empty host or group, no lease expiry (that is not in the hash).
fn generated_job(u: &mut Unstructured) -> Result<()> {
    let ms = |u: &mut Unstructured| u64::arbitrary(u).map(Duration::from_millis);
    let backoff = if bool::arbitrary(u)? {
        Backoff::Fixed {
            delay: ms(u)?,
            jitter: f64::arbitrary(u)?,
        }
    } else {
        Backoff::Exponential {
            base: ms(u)?,
            cap: ms(u)?,
            jitter: f64::arbitrary(u)?,
        }
    };
    let non_empty = |u: &mut Unstructured| -> Result<Option<String>> {
        Ok(Option::<String>::arbitrary(u)?.filter(|s| !s.is_empty()))
    };
    let mut history = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        history.push(Attempt {
            attempt: u32::arbitrary(u)?,
            outcome: text(u)?,
            error: text(u)?,
            host: text(u)?,
            started_at: u64::arbitrary(u)?,
            finished_at: u64::arbitrary(u)?,
            version: Option::arbitrary(u)?,
            logs: Option::arbitrary(u)?,
            progress: Option::arbitrary(u)?,
            calls: calls(u)?,
            calls_dropped: Option::arbitrary(u)?,
            sleep: Option::arbitrary(u)?,
            sleep_ms: Option::arbitrary(u)?,
        });
    }
    let job = Job {
        id: "j".into(),
        queue: "q".into(),
        handler: text(u)?,
        payload: Vec::arbitrary(u)?,
        state: *u.choose(&JobState::ALL)?,
        priority: i32::arbitrary(u)?,
        attempt: u32::arbitrary(u)?,
        max_attempts: u32::arbitrary(u)?,
        backoff,
        own_policy: OwnPolicy {
            max_attempts: bool::arbitrary(u)?,
            backoff: bool::arbitrary(u)?,
        },
        timeout: Option::<u64>::arbitrary(u)?
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis),
        created_at_ms: u64::arbitrary(u)?,
        run_at_ms: Option::arbitrary(u)?,
        started_at_ms: Option::arbitrary(u)?,
        finished_at_ms: Option::arbitrary(u)?,
        lease_expires_at_ms: None,
        host: non_empty(u)?,
        result: Option::arbitrary(u)?,
        last_error: Option::arbitrary(u)?,
        last_outcome: Option::arbitrary(u)?,
        history,
        replays: u32::arbitrary(u)?,
        group: non_empty(u)?,
        steps_dropped: non_empty(u)?,
        cancelled_by: non_empty(u)?,
        cancel_reason: non_empty(u)?,
        // Only a valid context is kept (an invalid one is left out, see Job::from_hash).
        traceparent: bool::arbitrary(u)?
            .then(|| "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string()),
        tracestate: None,
    };
    let decoded = Job::from_hash("q", "j", job_hash(&job))
        .unwrap_or_else(|err| panic!("{job:?} as a hash does not decode: {err}"));
    assert_eq!(format!("{decoded:?}"), format!("{job:?}"));
    Ok(())
}

/// Any Redis value, nested at most a few levels.
fn reply(u: &mut Unstructured, depth: u32) -> Result<Value> {
    let kinds = if depth >= 4 { 6 } else { 8 };
    Ok(match u.int_in_range(0..=kinds - 1)? {
        0 => Value::Nil,
        1 => Value::Int(i64::arbitrary(u)?),
        2 => Value::BulkString(Vec::arbitrary(u)?),
        3 => Value::SimpleString(text(u)?),
        4 => Value::Okay,
        5 => Value::Double(f64::arbitrary(u)?),
        6 => {
            let len = u.int_in_range(0..=10)?;
            let mut items = Vec::with_capacity(len);
            for _ in 0..len {
                items.push(reply(u, depth + 1)?);
            }
            Value::Array(items)
        }
        _ => {
            let len = u.int_in_range(0..=10)?;
            let mut items = Vec::with_capacity(len);
            for _ in 0..len {
                items.push(reply(u, depth + 1)?);
            }
            Value::Set(items)
        }
    })
}

/// fetch.lua's reply for generated jobs (docs/protocol.md, "fetch.lua"): each job
/// `[id, handler, payload, attempt, max_attempts, timeout_ms, priority, created_at, own_policy,
/// depth, traceparent, tracestate]`.
fn well_formed_fetch(u: &mut Unstructured) -> Result<()> {
    let now_ms = u64::arbitrary(u)? >> 1;
    let lease_expires_at_ms = u64::arbitrary(u)? >> 1;
    let next_due = u64::arbitrary(u)? >> 1;
    let dropped = u64::arbitrary(u)? >> 1;
    let held = bool::arbitrary(u)?;
    let mut jobs = Vec::new();
    let mut items = Vec::new();
    for _ in 0..u.int_in_range(0..=4)? {
        let own_policy = *u.choose(&["", "attempts", "backoff", "attempts,backoff"])?;
        let (traceparent, tracestate) = *u.choose(&[
            ("", ""),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "",
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "a=1,b=2",
            ),
        ])?;
        let job = LeasedJob {
            id: text(u)?,
            queue: "q".into(),
            handler: text(u)?,
            payload: Vec::arbitrary(u)?,
            attempt: u32::arbitrary(u)?,
            max_attempts: u32::arbitrary(u)?,
            own_policy: OwnPolicy::parse(own_policy),
            timeout: Option::<u32>::arbitrary(u)?
                .filter(|ms| *ms > 0)
                .map(|ms| Duration::from_millis(ms.into())),
            priority: i32::arbitrary(u)?,
            created_at_ms: u64::arbitrary(u)? >> 1,
            traceparent: Some(traceparent.to_string()).filter(|t| !t.is_empty()),
            tracestate: Some(tracestate.to_string()).filter(|t| !t.is_empty()),
            token: "token".into(),
            lease_expires_at_ms,
            depth: u32::arbitrary(u)?,
        };
        // Integers arrive as Lua numbers (Int) or as the stored text (bulk strings).
        let int = |u: &mut Unstructured, n: i64| -> Result<Value> {
            Ok(if bool::arbitrary(u)? {
                Value::Int(n)
            } else {
                Value::BulkString(n.to_string().into_bytes())
            })
        };
        let timeout_ms = job.timeout.map_or(0, |t| t.as_millis() as i64);
        items.push(Value::Array(vec![
            Value::BulkString(job.id.clone().into_bytes()),
            Value::BulkString(job.handler.clone().into_bytes()),
            Value::BulkString(job.payload.clone()),
            int(u, job.attempt.into())?,
            int(u, job.max_attempts.into())?,
            int(u, timeout_ms)?,
            int(u, job.priority.into())?,
            int(u, job.created_at_ms as i64)?,
            Value::BulkString(own_policy.as_bytes().to_vec()),
            int(u, job.depth.into())?,
            Value::BulkString(traceparent.as_bytes().to_vec()),
            Value::BulkString(tracestate.as_bytes().to_vec()),
        ]));
        jobs.push(job);
    }
    let value = Value::Array(vec![
        Value::Int(now_ms as i64),
        Value::Int(lease_expires_at_ms as i64),
        Value::Array(items),
        Value::Int(next_due as i64),
        Value::Int(dropped as i64),
        Value::Int(i64::from(held)),
    ]);
    let fetched = Fetched::decode(value, "q", "token")
        .unwrap_or_else(|err| panic!("a well-formed fetch reply was refused: {err}"));
    assert_eq!(
        fetched,
        Fetched {
            jobs,
            now_ms,
            next_due_ms: (next_due > 0).then_some(next_due),
            dropped,
            rate_limited: held,
        }
    );
    Ok(())
}
