//! Decoding script replies. Lua tables arrive as arrays, numbers as integers, strings as bulk
//! strings; anything else is an [`QueueError::UnexpectedReply`], never a panic.

use redis::Value;

use super::ack::FailOutcome;
use super::error::{QueueError, Result};
use super::lease::LeaseRejection;

/// A cursor over one script's reply, which names the script in its errors.
pub(crate) struct Reply {
    script: &'static str,
}

impl Reply {
    pub(crate) fn of(script: &'static str) -> Reply {
        Reply { script }
    }

    pub(crate) fn error(&self, reason: impl Into<String>) -> QueueError {
        QueueError::UnexpectedReply {
            script: self.script,
            reason: reason.into(),
        }
    }

    pub(crate) fn array(&self, value: Value) -> Result<Vec<Value>> {
        match value {
            Value::Array(items) | Value::Set(items) => Ok(items),
            other => Err(self.error(format!("expected an array, got {other:?}"))),
        }
    }

    /// An array of exactly `N` items.
    pub(crate) fn tuple<const N: usize>(&self, value: Value) -> Result<[Value; N]> {
        let items = self.array(value)?;
        let len = items.len();
        items
            .try_into()
            .map_err(|_| self.error(format!("expected {N} items, got {len}")))
    }

    pub(crate) fn bytes(&self, value: Value) -> Result<Vec<u8>> {
        match value {
            Value::BulkString(bytes) => Ok(bytes),
            Value::SimpleString(text) => Ok(text.into_bytes()),
            Value::Int(n) => Ok(n.to_string().into_bytes()),
            Value::Okay => Ok(b"OK".to_vec()),
            other => Err(self.error(format!("expected a string, got {other:?}"))),
        }
    }

    pub(crate) fn string(&self, value: Value) -> Result<String> {
        String::from_utf8(self.bytes(value)?).map_err(|_| self.error("expected UTF-8 text"))
    }

    pub(crate) fn int(&self, value: Value) -> Result<i64> {
        match value {
            Value::Int(n) => Ok(n),
            Value::BulkString(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| text.parse().ok())
                .ok_or_else(|| self.error("expected an integer")),
            other => Err(self.error(format!("expected an integer, got {other:?}"))),
        }
    }

    pub(crate) fn uint(&self, value: Value) -> Result<u64> {
        let n = self.int(value)?;
        u64::try_from(n)
            .map_err(|_| self.error(format!("expected a non-negative integer, got {n}")))
    }

    /// A list of strings.
    pub(crate) fn strings(&self, value: Value) -> Result<Vec<String>> {
        self.array(value)?
            .into_iter()
            .map(|item| self.string(item))
            .collect()
    }

    /// A list of `{id, text}` pairs.
    pub(crate) fn pairs(&self, value: Value) -> Result<Vec<(String, String)>> {
        self.array(value)?
            .into_iter()
            .map(|item| {
                let [id, text] = self.tuple(item)?;
                Ok((self.string(id)?, self.string(text)?))
            })
            .collect()
    }
}

/// The jobs a lease-checked call left alone, with why.
pub(super) fn rejections(reply: &Reply, value: Value) -> Result<Vec<(String, LeaseRejection)>> {
    Ok(reply
        .pairs(value)?
        .into_iter()
        .map(|(id, reason)| (id, LeaseRejection::parse(&reason)))
        .collect())
}

/// fail.lua's and recover.lua's outcomes: where each job went.
pub(super) fn fail_outcomes(reply: &Reply, value: Value) -> Result<Vec<(String, FailOutcome)>> {
    reply
        .array(value)?
        .into_iter()
        .map(|item| {
            let [id, next, at] = reply.tuple(item)?;
            let id = reply.string(id)?;
            let outcome = match reply.string(next)?.as_str() {
                "dead" => FailOutcome::Dead,
                "retry" => FailOutcome::Retry {
                    run_at_ms: reply.uint(at)?,
                },
                other => return Err(reply.error(format!("unknown fail outcome {other:?}"))),
            };
            Ok((id, outcome))
        })
        .collect()
}
