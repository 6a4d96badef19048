//! What the fuzz targets share: the written contract of `docs/protocol.md` as Rust, used as the
//! oracle the host's code is checked against.
//!
//! - [`job_hash`] - a [`Job`] written as the job hash the protocol describes (what the Lua
//!   scripts leave in Redis), so decoding can be checked to round-trip.
//! - [`enqueue_hash`] - what `enqueue.lua` does with a job's wire fields: refuses them (with the
//!   reason the script gives), or the job hash it writes.
//! - [`fields`] - splits a fuzz input into NUL-separated parts, so seeds stay readable.

use std::collections::HashMap;

use wasmq::queue::{Backoff, Job, MAX_NAME_LEN};

/// The parts of `data` between NUL bytes.
pub fn fields(data: &[u8]) -> Vec<&[u8]> {
    data.split(|b| *b == 0).collect()
}

/// `job` as its hash in Redis (docs/protocol.md, "Job fields"): every field that
/// [`Job::from_hash`] reads, written as the scripts write it. The lease expiry is not a field
/// (it is the job's score in `active`).
pub fn job_hash(job: &Job) -> HashMap<String, Vec<u8>> {
    let mut hash: HashMap<String, Vec<u8>> = HashMap::new();
    let mut put = |name: &str, value: Vec<u8>| {
        hash.insert(name.to_string(), value);
    };
    put("id", job.id.clone().into_bytes());
    put("handler", job.handler.clone().into_bytes());
    put("payload", job.payload.clone());
    put("state", job.state.as_str().into());
    put("priority", job.priority.to_string().into_bytes());
    put("attempt", job.attempt.to_string().into_bytes());
    put("max_attempts", job.max_attempts.to_string().into_bytes());
    let (kind, base, cap, jitter) = match job.backoff {
        Backoff::Fixed { delay, jitter } => ("fixed", delay.as_millis(), 0, jitter),
        Backoff::Exponential { base, cap, jitter } => {
            ("exponential", base.as_millis(), cap.as_millis(), jitter)
        }
    };
    put("backoff", kind.into());
    put("backoff_ms", base.to_string().into_bytes());
    put("backoff_cap_ms", cap.to_string().into_bytes());
    put("backoff_jitter", jitter.to_string().into_bytes());
    let mut own = Vec::new();
    if job.own_policy.max_attempts {
        own.push("attempts");
    }
    if job.own_policy.backoff {
        own.push("backoff");
    }
    if !own.is_empty() {
        put("own_policy", own.join(",").into_bytes());
    }
    put(
        "timeout_ms",
        job.timeout
            .map_or(0, |t| t.as_millis())
            .to_string()
            .into_bytes(),
    );
    put("created_at", job.created_at_ms.to_string().into_bytes());
    let times = [
        ("run_at", job.run_at_ms),
        ("started_at", job.started_at_ms),
        ("finished_at", job.finished_at_ms),
    ];
    for (name, time) in times {
        if let Some(ms) = time {
            put(name, ms.to_string().into_bytes());
        }
    }
    if let Some(host) = &job.host {
        put("host", host.clone().into_bytes());
    }
    if let Some(result) = &job.result {
        put("result", result.clone());
    }
    if let Some(error) = &job.last_error {
        put("last_error", error.clone().into_bytes());
    }
    if let Some(outcome) = &job.last_outcome {
        put("last_outcome", outcome.clone().into_bytes());
    }
    if !job.history.is_empty() {
        let history = serde_json::to_vec(&job.history).unwrap_or_default();
        put("history", history);
    }
    put("replays", job.replays.to_string().into_bytes());
    if let Some(group) = &job.group {
        put("group", group.clone().into_bytes());
    }
    if let Some(why) = &job.steps_dropped {
        put("steps_dropped", why.clone().into_bytes());
    }
    if let Some(by) = &job.cancelled_by {
        put("cancelled_by", by.clone().into_bytes());
    }
    if let Some(reason) = &job.cancel_reason {
        put("cancel_reason", reason.clone().into_bytes());
    }
    if let Some(traceparent) = &job.traceparent {
        put("traceparent", traceparent.clone().into_bytes());
    }
    if let Some(tracestate) = &job.tracestate {
        put("tracestate", tracestate.clone().into_bytes());
    }
    hash
}

/// `name_ok` in enqueue.lua: 1 to 128 bytes, each printable ASCII (`%w` or `%p`).
fn name_ok(value: &[u8]) -> bool {
    (1..=MAX_NAME_LEN).contains(&value.len()) && value.iter().all(u8::is_ascii_graphic)
}

/// `integer` in enqueue.lua: plain decimal within `lo..=hi`, with a minus sign (`^-?%d+$`) only
/// where `lo` is negative (`^%d+$` otherwise: Rust's unsigned parse takes no `-0`).
fn integer(value: &[u8], lo: i128, hi: i128) -> Option<i128> {
    let text = std::str::from_utf8(value).ok()?;
    let digits = match text.strip_prefix('-') {
        Some(digits) if lo < 0 => digits,
        _ => text,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Lua reads it as a double; past i128 it is out of every range here anyway.
    let n: i128 = text.parse().ok()?;
    (lo..=hi).contains(&n).then_some(n)
}

/// `fraction` in enqueue.lua: an optional sign, digits with at most one point (at least one
/// digit), an optional exponent (`[eE][+-]?%d+`), within `0..=1`. No spaces, hex, `inf` or `nan`.
fn fraction(value: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(value).ok()?;
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let digits = mantissa.bytes().filter(u8::is_ascii_digit).count();
    let points = mantissa.bytes().filter(|b| *b == b'.').count();
    if digits == 0 || points > 1 || digits + points != mantissa.len() {
        return None;
    }
    if let Some(exponent) = exponent {
        let exponent_digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
        if exponent_digits.is_empty() || !exponent_digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    // Lua's tonumber (C's strtod) and Rust's parse round a decimal numeral alike.
    let n: f64 = text.parse().ok()?;
    (0.0..=1.0).contains(&n).then_some(n)
}

/// What `enqueue.lua` does with one job given as `wire` (id aside) at Redis time `now_ms`:
/// `Err` with the reason it refuses the job, or the hash it writes. This mirrors the script's
/// checks, field by field (docs/protocol.md, "enqueue.lua"); the payload limit is the queue's
/// and is left out.
pub fn enqueue_hash(
    id: &str,
    wire: &[(&'static str, Vec<u8>)],
    now_ms: u64,
) -> Result<HashMap<String, Vec<u8>>, String> {
    if !name_ok(id.as_bytes()) {
        return Err("id must be 1-128 printable ASCII characters".into());
    }
    let mut hash: HashMap<String, Vec<u8>> = HashMap::new();
    let mut set = |name: &str, value: &[u8]| {
        hash.insert(name.to_string(), value.to_vec());
    };
    for (name, value) in [
        ("priority", "0"),
        ("max_attempts", "3"),
        ("timeout_ms", "0"),
        ("backoff", "exponential"),
        ("backoff_ms", "1000"),
        ("backoff_cap_ms", "3600000"),
        ("backoff_jitter", "0.2"),
        ("payload", ""),
    ] {
        set(name, value.as_bytes());
    }
    let (mut own_attempts, mut own_backoff) = (false, false);
    let (mut delay_ms, mut run_at_ms) = (None, None);
    // expires_in_ms, expires_at_ms, dedupe_ttl_ms, debounce_ms, debounce_max_wait_ms.
    let mut flow: HashMap<&str, i128> = HashMap::new();
    let mut given = std::collections::HashSet::new();
    for (field, value) in wire {
        if !given.insert(*field) {
            return Err(format!("field {field} given twice"));
        }
        match *field {
            "handler" | "payload" => set(field, value),
            "backoff" => {
                set(field, value);
                own_backoff = true;
            }
            "group" => {
                if !name_ok(value) {
                    return Err("group must be 1-128 printable ASCII characters".into());
                }
                set(field, value);
            }
            "priority" => {
                integer(value, -1000, 1000).ok_or("priority must be an integer in -1000..1000")?;
                set(field, value);
            }
            "max_attempts" => {
                integer(value, 1, 1000).ok_or("max_attempts must be an integer in 1..1000")?;
                set(field, value);
                own_attempts = true;
            }
            "delay_ms" | "run_at_ms" | "timeout_ms" | "backoff_ms" | "backoff_cap_ms" => {
                let n = integer(value, 0, 1_000_000_000_000_000)
                    .ok_or_else(|| format!("{field} must be a non-negative integer"))?;
                match *field {
                    "delay_ms" => delay_ms = Some(n),
                    "run_at_ms" => run_at_ms = Some(n),
                    _ => set(field, value),
                }
                if matches!(*field, "backoff_ms" | "backoff_cap_ms") {
                    own_backoff = true;
                }
            }
            "backoff_jitter" => {
                fraction(value).ok_or("backoff_jitter must be a decimal number in 0..1")?;
                set(field, value);
                own_backoff = true;
            }
            "traceparent" => {
                let ok = std::str::from_utf8(value)
                    .is_ok_and(|v| wasmq::queue::validate_traceparent(v).is_ok());
                if !ok {
                    return Err(
                        "traceparent must be a W3C traceparent (2, 32, 16 and 2 lowercase \
                                hex digits joined by -, ids not all zeros)"
                            .into(),
                    );
                }
                set(field, value);
            }
            "tracestate" => {
                let ok = !value.is_empty()
                    && value.len() <= 512
                    && value.iter().all(|b| (0x20..=0x7e).contains(b));
                if !ok {
                    return Err("tracestate must be 1-512 printable ASCII characters".into());
                }
                set(field, value);
            }
            "dedupe_key" | "debounce_key" => {
                if !name_ok(value) {
                    return Err(format!("{field} must be 1-128 printable ASCII characters"));
                }
                set(field, value);
            }
            "dedupe_ttl_ms" | "debounce_ms" | "debounce_max_wait_ms" | "expires_in_ms" => {
                let n = integer(value, 1, 1_000_000_000_000)
                    .ok_or_else(|| format!("{field} must be an integer in 1..1e12"))?;
                flow.insert(field, n);
            }
            "expires_at_ms" => {
                let n = integer(value, 0, 1_000_000_000_000_000)
                    .ok_or_else(|| format!("{field} must be a non-negative integer"))?;
                flow.insert(field, n);
            }
            other => return Err(format!("unknown field {other}")),
        }
    }
    let own: Vec<&str> = [(own_attempts, "attempts"), (own_backoff, "backoff")]
        .into_iter()
        .filter_map(|(own, name)| own.then_some(name))
        .collect();
    if !own.is_empty() {
        set("own_policy", own.join(",").as_bytes());
    }
    if given.contains("tracestate") && !given.contains("traceparent") {
        return Err("tracestate needs a traceparent".into());
    }
    if !hash.get("handler").is_some_and(|h| name_ok(h)) {
        return Err("handler must be 1-128 printable ASCII characters".into());
    }
    let kind = hash.get("backoff").cloned().unwrap_or_default();
    if kind != b"exponential" && kind != b"fixed" {
        return Err("backoff must be exponential or fixed".into());
    }
    let number = |hash: &HashMap<String, Vec<u8>>, name: &str| {
        hash.get(name)
            .and_then(|v| integer(v, i128::MIN, i128::MAX))
            .unwrap_or(0)
    };
    // No cap given: the default (1 h) grows to a longer base.
    if kind == b"exponential"
        && !given.contains("backoff_cap_ms")
        && number(&hash, "backoff_ms") > number(&hash, "backoff_cap_ms")
    {
        let base = hash.get("backoff_ms").cloned().unwrap_or_default();
        hash.insert("backoff_cap_ms".into(), base);
    }
    if kind == b"exponential" && number(&hash, "backoff_cap_ms") < number(&hash, "backoff_ms") {
        return Err("backoff_cap_ms must not be below backoff_ms".into());
    }
    let has = |name: &str| given.contains(name);
    if has("expires_in_ms") && has("expires_at_ms") {
        return Err("give expires_in_ms or expires_at_ms, not both".into());
    }
    if has("dedupe_key") != has("dedupe_ttl_ms") {
        return Err("dedupe_key and dedupe_ttl_ms go together".into());
    }
    if has("debounce_key") != has("debounce_ms") {
        return Err("debounce_key and debounce_ms go together".into());
    }
    if has("debounce_max_wait_ms") && !has("debounce_key") {
        return Err("debounce_max_wait_ms needs a debounce_key".into());
    }
    if has("debounce_key") && (has("delay_ms") || has("run_at_ms") || has("dedupe_key")) {
        return Err("a debounce_key takes no delay_ms, run_at_ms or dedupe_key".into());
    }
    if let Some(at) = flow.get("expires_at_ms").copied().or_else(|| {
        flow.get("expires_in_ms")
            .map(|after| i128::from(now_ms) + after)
    }) {
        hash.insert("expires_at".into(), at.to_string().into_bytes());
    }
    if let Some(&window) = flow.get("debounce_ms") {
        let max_wait = flow.get("debounce_max_wait_ms").copied();
        delay_ms = Some(max_wait.map_or(window, |m| m.min(window)));
        if let Some(m) = max_wait {
            let until = i128::from(now_ms) + m;
            hash.insert("debounce_until".into(), until.to_string().into_bytes());
        }
    }
    let run_at = match (delay_ms, run_at_ms) {
        (Some(_), Some(_)) => return Err("give delay_ms or run_at_ms, not both".into()),
        (None, Some(at)) => at,
        (delay, None) => i128::from(now_ms) + delay.unwrap_or(0),
    };
    // A run-at in the past means now.
    let run_at = run_at.max(i128::from(now_ms));
    let state = if run_at > i128::from(now_ms) {
        "delayed"
    } else {
        "waiting"
    };
    hash.insert("id".into(), id.as_bytes().to_vec());
    hash.insert("state".into(), state.into());
    hash.insert("attempt".into(), b"0".to_vec());
    hash.insert("created_at".into(), now_ms.to_string().into_bytes());
    hash.insert("run_at".into(), run_at.to_string().into_bytes());
    Ok(hash)
}
