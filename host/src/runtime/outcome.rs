//! How one attempt ended, and the classification of wasmtime errors into that answer.
//!
//! Classification is by type (downcasting to [`wasmtime::Trap`] and the host's own limit
//! errors), never by matching message text.

use std::fmt;

/// How one attempt of a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The handler returned a result.
    Ok(Vec<u8>),
    /// The handler asked to be retried (transient failure).
    Retry(String),
    /// The handler failed permanently.
    Fail(String),
    /// The attempt ran past its deadline and was stopped.
    Timeout,
    /// The attempt used up its fuel (CPU) budget.
    OutOfFuel,
    /// The instance tried to grow memory or tables past its cap.
    MemoryLimit,
    /// The guest exhausted its wasm stack (runaway recursion).
    StackOverflow,
    /// Any other trap: a panic or abort, an out-of-bounds access, an instantiation failure.
    Trap(String),
    /// The handler returned a result or error message over [`MAX_RETURNED_BYTES`] (it would
    /// be as large again: not retried).
    ResultTooLarge(String),
    /// The handler reached a durable sleep (`workflow.sleep`) that has not elapsed: the job
    /// waits `delay`, then runs again, this attempt not counted; `field` marks the sleep done.
    Suspended {
        field: String,
        delay: std::time::Duration,
    },
}

/// The outcome without its data: what metrics, retry policy and exit codes key on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutcomeClass {
    Ok,
    Retry,
    Fail,
    Timeout,
    OutOfFuel,
    MemoryLimit,
    StackOverflow,
    Trap,
    ResultTooLarge,
    Suspended,
}

impl OutcomeClass {
    pub const ALL: [OutcomeClass; 10] = [
        Self::Ok,
        Self::Retry,
        Self::Fail,
        Self::Timeout,
        Self::OutOfFuel,
        Self::MemoryLimit,
        Self::StackOverflow,
        Self::Trap,
        Self::ResultTooLarge,
        Self::Suspended,
    ];

    /// The stable name used in Redis, the API, metrics and `--json` output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Retry => "retry",
            Self::Fail => "fail",
            Self::Timeout => "timeout",
            Self::OutOfFuel => "out_of_fuel",
            Self::MemoryLimit => "memory_limit",
            Self::StackOverflow => "stack_overflow",
            Self::Trap => "trap",
            Self::ResultTooLarge => "result_too_large",
            Self::Suspended => "suspended",
        }
    }
}

impl fmt::Display for OutcomeClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Outcome {
    pub fn class(&self) -> OutcomeClass {
        match self {
            Self::Ok(_) => OutcomeClass::Ok,
            Self::Retry(_) => OutcomeClass::Retry,
            Self::Fail(_) => OutcomeClass::Fail,
            Self::Timeout => OutcomeClass::Timeout,
            Self::OutOfFuel => OutcomeClass::OutOfFuel,
            Self::MemoryLimit => OutcomeClass::MemoryLimit,
            Self::StackOverflow => OutcomeClass::StackOverflow,
            Self::Trap(_) => OutcomeClass::Trap,
            Self::ResultTooLarge(_) => OutcomeClass::ResultTooLarge,
            Self::Suspended { .. } => OutcomeClass::Suspended,
        }
    }

    /// A one-line description of a failed attempt, as stored in the job's attempt history.
    /// `None` for `Ok`.
    pub fn error_message(&self) -> Option<String> {
        match self {
            Self::Ok(_) => None,
            Self::Retry(msg) | Self::Fail(msg) | Self::Trap(msg) | Self::ResultTooLarge(msg) => {
                Some(msg.clone())
            }
            Self::Timeout => Some("deadline exceeded".to_string()),
            Self::OutOfFuel => Some("fuel budget exhausted".to_string()),
            Self::MemoryLimit => Some("memory limit exceeded".to_string()),
            Self::StackOverflow => Some("wasm stack overflow".to_string()),
            Self::Suspended { delay, .. } => Some(format!("sleeping for {} ms", delay.as_millis())),
        }
    }
}

/// The most of a guest's error message an [`Outcome`] keeps, in bytes (the queue keeps less
/// of it: 4 KiB in the job's history).
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The largest result, and the longest error message, the host takes from a handler, in
/// bytes: a larger one is [`Outcome::ResultTooLarge`], measured in the guest's memory and never
/// copied out of it (`returned.rs`). A queue's `max_result_bytes` is checked after, when
/// smaller.
pub const MAX_RETURNED_BYTES: usize = 64 * 1024 * 1024;

/// The outcome of a `handle` call that returned: a result or message over
/// [`MAX_RETURNED_BYTES`] is refused, a message kept only up to [`MAX_MESSAGE_BYTES`].
pub(super) fn returned(returned: super::returned::Returned) -> Outcome {
    use super::returned::{Bytes, ReturnedError, Text};
    let (text, retry) = match returned {
        Ok(Bytes::Kept(bytes)) => return Outcome::Ok(bytes),
        Ok(Bytes::TooLarge(len)) => {
            return Outcome::ResultTooLarge(format!(
                "result of {len} bytes is over the limit of {MAX_RETURNED_BYTES} bytes a host \
                 takes from a handler"
            ));
        }
        Err(ReturnedError::Retry(text)) => (text, true),
        Err(ReturnedError::Fail(text)) => (text, false),
    };
    let message = match text {
        Text::Kept(message) => cap_message(&message),
        Text::TooLarge(len) => {
            return Outcome::ResultTooLarge(format!(
                "error message of {len} bytes is over the limit of {MAX_RETURNED_BYTES} bytes a \
                 host takes from a handler"
            ));
        }
    };
    if retry {
        Outcome::Retry(message)
    } else {
        Outcome::Fail(message)
    }
}

/// `msg` cut to [`MAX_MESSAGE_BYTES`] on a character boundary, with a note of the cut; a new,
/// small string, so that the guest's megabytes are freed here and not copied further.
pub(crate) fn cap_message(msg: &str) -> String {
    if msg.len() <= MAX_MESSAGE_BYTES {
        return msg.to_string();
    }
    let note = format!(" [wasmq: message cut, {} bytes in all]", msg.len());
    let keep = msg.floor_char_boundary(MAX_MESSAGE_BYTES - note.len());
    let mut capped = String::with_capacity(keep + note.len());
    capped.push_str(&msg[..keep]);
    capped.push_str(&note);
    capped
}

/// Raised by the epoch callback when an attempt's wall-clock deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("job deadline exceeded")]
pub(crate) struct DeadlineExceeded;

/// Raised by the store limiter when an instance asks for more memory or table space than the
/// job's cap allows.
#[derive(Debug, thiserror::Error)]
#[error("{what} limit exceeded: wanted {desired}, cap is {cap}")]
pub(crate) struct LimitExceeded {
    pub what: &'static str,
    pub desired: usize,
    pub cap: usize,
}

/// Maps the error that ended an attempt (instantiation or call) to an [`Outcome`].
///
/// `limit_hit` is the limiter's own record: a denied growth that the guest turned into some
/// other trap (an allocator that aborts) is still a memory-limit outcome.
pub(crate) fn classify(err: &wasmtime::Error, limit_hit: bool) -> Outcome {
    if err.is::<DeadlineExceeded>() {
        return Outcome::Timeout;
    }
    if err.is::<LimitExceeded>() {
        return Outcome::MemoryLimit;
    }
    if let Some(trap) = err.downcast_ref::<wasmtime::Trap>() {
        match trap {
            wasmtime::Trap::OutOfFuel => return Outcome::OutOfFuel,
            wasmtime::Trap::StackOverflow => return Outcome::StackOverflow,
            wasmtime::Trap::Interrupt => return Outcome::Timeout,
            _ if limit_hit => return Outcome::MemoryLimit,
            other => return Outcome::Trap(other.to_string()),
        }
    }
    if limit_hit {
        return Outcome::MemoryLimit;
    }
    // `wasi:cli/exit` (a guest's `exit()`/`process::exit`): status 0 ends the job like a
    // handler returning an empty result; any other status fails it as the handler would, for
    // good (the guest chose to stop, and would choose it again).
    if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return match exit.0 {
            0 => Outcome::Ok(Vec::new()),
            status => Outcome::Fail(format!("the handler called exit({status})")),
        };
    }
    Outcome::Trap(format!("{err:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_message_is_cut_on_a_character_boundary_with_a_note() {
        let short = "x".repeat(MAX_MESSAGE_BYTES);
        assert_eq!(cap_message(&short), short);
        // Two-byte characters: the cut falls inside one unless it is moved back.
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let capped = cap_message(&long);
        assert!(capped.len() <= MAX_MESSAGE_BYTES, "{}", capped.len());
        assert!(capped.ends_with(&format!(
            " [wasmq: message cut, {} bytes in all]",
            long.len()
        )));
        let kept = capped.split(" [wasmq").next().unwrap();
        assert!(kept.chars().all(|c| c == 'é') && kept.len() > MAX_MESSAGE_BYTES - 64);
    }

    #[test]
    fn exit_zero_is_an_empty_result_and_another_status_a_failure() {
        let exit = |status| wasmtime::Error::new(wasmtime_wasi::I32Exit(status));
        assert_eq!(classify(&exit(0), false), Outcome::Ok(Vec::new()));
        assert_eq!(
            classify(&exit(3), false),
            Outcome::Fail("the handler called exit(3)".into())
        );
        // A memory cap the guest ran into and then exited over is still the cap.
        assert_eq!(classify(&exit(1), true), Outcome::MemoryLimit);
    }

    #[test]
    fn class_names_are_distinct_and_stable() {
        let names: std::collections::HashSet<_> =
            OutcomeClass::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), OutcomeClass::ALL.len());
        assert_eq!(Outcome::MemoryLimit.class().as_str(), "memory_limit");
    }

    #[test]
    fn host_limit_errors_classify_by_type() {
        let deadline = wasmtime::Error::from(DeadlineExceeded);
        assert_eq!(classify(&deadline, false), Outcome::Timeout);
        let mem = wasmtime::Error::from(LimitExceeded {
            what: "memory",
            desired: 2,
            cap: 1,
        });
        assert_eq!(classify(&mem, false), Outcome::MemoryLimit);
        let fuel = wasmtime::Error::from(wasmtime::Trap::OutOfFuel);
        assert_eq!(classify(&fuel, false), Outcome::OutOfFuel);
        let unreachable = wasmtime::Error::from(wasmtime::Trap::UnreachableCodeReached);
        assert_eq!(classify(&unreachable, true), Outcome::MemoryLimit);
        assert!(unreachable.downcast_ref::<wasmtime::Trap>().is_some());
        assert!(matches!(classify(&unreachable, false), Outcome::Trap(_)));
    }

    #[test]
    fn only_ok_has_no_error_message() {
        assert_eq!(Outcome::Ok(vec![1]).error_message(), None);
        assert!(Outcome::Timeout.error_message().is_some());
    }
}
