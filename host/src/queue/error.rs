//! The queue's error type.

/// Everything that can go wrong talking to the queue. Bad input is refused before anything is
/// written; Redis content that does not decode is an error naming the job, never a panic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// Redis could not be reached or refused a command. The Redis error is the `source`:
    /// print the chain (`crate::chain::ErrorChain`) to show it.
    #[error("redis request failed")]
    Redis(#[from] redis::RedisError),
    /// The queue name cannot be used in a key.
    #[error("invalid queue name: {0}")]
    InvalidQueue(String),
    /// A job's handler, id or options are invalid; nothing was enqueued.
    #[error("invalid job{}: {reason}", id.as_deref().map(|id| format!(" {id}")).unwrap_or_default())]
    InvalidJob { id: Option<String>, reason: String },
    /// A payload is over the queue's `max_payload_bytes`; nothing was enqueued.
    #[error("payload of job {id} is {size} bytes, over the queue's limit of {limit} bytes")]
    PayloadTooLarge { id: String, size: u64, limit: u64 },
    /// The queue's backlog (jobs not finished) is at its `max_waiting`: the `new` jobs
    /// of the call would take it past; nothing was enqueued. Enqueue again once the queue has
    /// drained, or raise the limit (`wasmq queue limit <q> --max-waiting N`).
    #[error(
        "queue {queue} is full: {backlog} jobs not finished, {new} more would pass its \
         max_waiting of {limit}; nothing was enqueued"
    )]
    QueueFull {
        queue: String,
        backlog: u64,
        new: u64,
        limit: u64,
    },
    /// An argument to a queue operation is out of range (batch size 0, lease of 0 ms...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A job hash in Redis does not decode.
    #[error("job {id} in queue {queue} is malformed: {reason}")]
    MalformedJob {
        queue: String,
        id: String,
        reason: String,
    },
    /// A key of the queue holds another Redis type than the protocol's (written by hand, or by
    /// a producer that got the protocol wrong): the call was refused before it wrote anything.
    /// It stays refused until the key is moved away or deleted; `wasmq queue check` lists such
    /// keys.
    #[error(
        "queue key {key} holds a {found}, not what wasmq writes there: the call was refused and \
         wrote nothing; look at it (TYPE, DUMP) and RENAME it away or DEL it"
    )]
    WrongType { key: String, found: String },
    /// A script answered in a shape this version does not understand (a different wasmq
    /// version wrote the scripts, or the keyspace was edited by hand).
    #[error("unexpected reply from {script}: {reason}")]
    UnexpectedReply {
        script: &'static str,
        reason: String,
    },
}

impl QueueError {
    /// Turns the `WASMQ_*` error replies of the scripts into typed errors.
    pub(crate) fn from_script(err: redis::RedisError) -> QueueError {
        let detail = err.detail().unwrap_or_default().to_string();
        match err.code() {
            Some("WASMQ_PAYLOAD_TOO_LARGE") => {
                let mut parts = detail.split(' ');
                let id = parts.next().unwrap_or_default().to_string();
                let size = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                let limit = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                QueueError::PayloadTooLarge { id, size, limit }
            }
            Some("WASMQ_QUEUE_FULL") => {
                // "<queue> <backlog> <new jobs> <max_waiting>"
                let mut parts = detail.split(' ');
                let queue = parts.next().unwrap_or_default().to_string();
                let mut number = || parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                let (backlog, new, limit) = (number(), number(), number());
                QueueError::QueueFull {
                    queue,
                    backlog,
                    new,
                    limit,
                }
            }
            Some("WASMQ_INVALID") => {
                // "job <id>: <reason>"
                let rest = detail.strip_prefix("job ").unwrap_or(&detail);
                match rest.split_once(": ") {
                    Some((id, reason)) => QueueError::InvalidJob {
                        id: (id != "-").then(|| id.to_string()),
                        reason: reason.to_string(),
                    },
                    None => QueueError::InvalidArgument(detail),
                }
            }
            Some("WASMQ_WRONGTYPE") => {
                // "<key> <type>": the key has no spaces (queue names and groups are checked),
                // the type may ("string (not an integer)").
                match detail.split_once(' ') {
                    Some((key, found)) => QueueError::WrongType {
                        key: key.to_string(),
                        found: found.to_string(),
                    },
                    None => QueueError::Redis(err),
                }
            }
            _ => QueueError::Redis(err),
        }
    }

    /// The key of a [`QueueError::WrongType`]: a call refused because of what one key holds,
    /// which no retry fixes until a person does.
    pub fn wrong_type_key(&self) -> Option<&str> {
        match self {
            QueueError::WrongType { key, .. } => Some(key),
            _ => None,
        }
    }
}

pub type Result<T, E = QueueError> = std::result::Result<T, E>;
