//! The per-attempt call record: every outbound HTTP request (`capability/http.rs`, denied ones
//! included) and every SQL statement (`sql.rs`) an attempt makes, one compact entry each, kept
//! whatever the tracing setting (it is not a span: it is what the job's history shows, see
//! docs/observability.md). The acker sends it with the attempt's end, and the scripts write
//! it into the attempt's history entry (docs/protocol.md, "Call records").
//!
//! An entry is added when its call ends (a request: when its response's head came, or it
//! failed), so a request still waiting when the attempt hit its deadline has none. Entries
//! are put in order of start when the record is encoded.
//!
//! Invariants: at most [`MAX_ATTEMPT_CALLS`] entries are kept, the rest only counted; an entry
//! holds no header, body, URL path or query, statement text, parameter or connection URL:
//! only a method, `scheme://authority` (cut to [`MAX_TARGET_LEN`] bytes), a status or
//! outcome, a SQL command keyword and the database grant's name.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::queue::{CallEntry, MAX_ATTEMPT_CALLS, truncate_utf8};

/// Longest `scheme://authority` an entry keeps.
pub const MAX_TARGET_LEN: usize = 200;
/// Longest method or database name an entry keeps.
const MAX_NAME_LEN: usize = 64;

/// The call record of one attempt, shared by its store's HTTP hooks and SQL host calls.
#[derive(Debug)]
pub(crate) struct CallLog {
    /// When the host began the attempt: each entry's `at` counts from it.
    started: Instant,
    entries: Vec<CallEntry>,
    dropped: u64,
}

/// A call record shared within one attempt.
pub(crate) type SharedCalls = Arc<Mutex<CallLog>>;

/// How an outbound HTTP request ended, for its entry.
#[derive(Debug, Clone, Copy)]
pub(crate) enum HttpEnd {
    Status(u16),
    /// No response: `denied`, `timeout` or `error`.
    Outcome(&'static str),
}

impl CallLog {
    pub fn shared(started: Instant) -> SharedCalls {
        Arc::new(Mutex::new(CallLog {
            started,
            entries: Vec::new(),
            dropped: 0,
        }))
    }

    fn push(&mut self, entry: CallEntry) {
        if self.entries.len() >= MAX_ATTEMPT_CALLS {
            self.dropped += 1;
        } else {
            self.entries.push(entry);
        }
    }

    fn at_ms(&self, begun: Instant) -> u64 {
        millis(begun.saturating_duration_since(self.started))
    }

    /// An outbound HTTP request begun at `begun` that took `took`.
    pub fn http(
        &mut self,
        begun: Instant,
        took: Duration,
        method: &str,
        target: &str,
        end: HttpEnd,
    ) {
        let (status, outcome) = match end {
            HttpEnd::Status(code) => (Some(code), None),
            HttpEnd::Outcome(outcome) => (None, Some(outcome.to_string())),
        };
        let entry = CallEntry {
            kind: "http".to_string(),
            at_ms: self.at_ms(begun),
            duration_ms: millis(took),
            method: Some(truncate_utf8(method, MAX_NAME_LEN).to_string()),
            target: Some(truncate_utf8(target, MAX_TARGET_LEN).to_string()),
            status,
            outcome,
            op: None,
            db: None,
        };
        self.push(entry);
    }

    /// A SQL statement on database grant `db` begun at `begun` that took `took`.
    pub fn sql(
        &mut self,
        begun: Instant,
        took: Duration,
        op: Option<&'static str>,
        db: &str,
        failed: bool,
    ) {
        let entry = CallEntry {
            kind: "sql".to_string(),
            at_ms: self.at_ms(begun),
            duration_ms: millis(took),
            method: None,
            target: None,
            status: None,
            outcome: failed.then(|| "error".to_string()),
            op: op.map(str::to_string),
            db: Some(truncate_utf8(db, MAX_NAME_LEN).to_string()),
        };
        self.push(entry);
    }

    /// The record as the scripts take it: '' when empty, else a JSON array of the entries in
    /// order of start, ending with the number of calls dropped when there were any.
    pub fn encode(&mut self) -> String {
        if self.entries.is_empty() && self.dropped == 0 {
            return String::new();
        }
        // Entries are added as calls end; concurrent requests may end out of order.
        self.entries.sort_by_key(|e| e.at_ms);
        let mut items: Vec<serde_json::Value> = self
            .entries
            .iter()
            .filter_map(|e| serde_json::to_value(e).ok())
            .collect();
        if self.dropped > 0 {
            items.push(self.dropped.into());
        }
        serde_json::to_string(&items).unwrap_or_default()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The record, even if a thread panicked holding it (it is only a list).
pub(crate) fn lock(calls: &SharedCalls) -> MutexGuard<'_, CallLog> {
    calls
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `scheme://authority` of a request, the only part of its URL an entry keeps.
pub(crate) fn target(scheme: &str, authority: &str) -> String {
    let target = if scheme.is_empty() {
        authority.to_string()
    } else {
        format!("{scheme}://{authority}")
    };
    truncate_utf8(&target, MAX_TARGET_LEN).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_past_the_bound_are_counted_and_the_count_ends_the_record() {
        let started = Instant::now();
        let calls = CallLog::shared(started);
        let mut log = lock(&calls);
        assert_eq!(log.encode(), "");
        for _ in 0..MAX_ATTEMPT_CALLS + 3 {
            log.sql(
                started,
                Duration::from_millis(2),
                Some("SELECT"),
                "app",
                false,
            );
        }
        let encoded: Vec<serde_json::Value> = serde_json::from_str(&log.encode()).unwrap();
        assert_eq!(encoded.len(), MAX_ATTEMPT_CALLS + 1);
        assert_eq!(encoded.last(), Some(&serde_json::json!(3)));
        assert_eq!(
            encoded[0],
            serde_json::json!({"k": "sql", "at": 0, "ms": 2, "op": "SELECT", "db": "app"})
        );
    }

    #[test]
    fn an_http_entry_keeps_only_method_scheme_authority_and_status_in_order_of_start() {
        let started = Instant::now();
        let calls = CallLog::shared(started);
        let mut log = lock(&calls);
        let later = started + Duration::from_millis(30);
        log.http(
            later,
            Duration::from_millis(5),
            "GET",
            &target("http", "127.0.0.1:8080"),
            HttpEnd::Status(200),
        );
        log.http(
            started,
            Duration::ZERO,
            "POST",
            &target("https", &"a".repeat(500)),
            HttpEnd::Outcome("denied"),
        );
        let encoded: Vec<serde_json::Value> = serde_json::from_str(&log.encode()).unwrap();
        assert_eq!(encoded[0]["o"], "denied");
        assert_eq!(encoded[0]["t"].as_str().unwrap().len(), MAX_TARGET_LEN);
        assert_eq!(
            encoded[1],
            serde_json::json!({"k": "http", "at": 30, "ms": 5, "m": "GET",
                "t": "http://127.0.0.1:8080", "s": 200})
        );
    }
}
