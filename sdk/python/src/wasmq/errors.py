"""The errors of the wasmq SDK: one class per thing a caller may want to handle."""

from __future__ import annotations

from typing import Optional


class WasmqError(Exception):
    """Base class of every error the SDK raises on purpose."""


class InvalidJob(WasmqError):
    """enqueue.lua refused a job (`WASMQ_INVALID`); nothing was written."""

    def __init__(self, job_id: Optional[str], reason: str) -> None:
        super().__init__(f"invalid job {job_id or '-'}: {reason}")
        self.job_id = job_id
        self.reason = reason


class PayloadTooLarge(WasmqError):
    """A payload is over the queue's `max_payload_bytes` (`WASMQ_PAYLOAD_TOO_LARGE`); nothing
    was written."""

    def __init__(self, job_id: str, size: int, limit: int) -> None:
        super().__init__(f"job {job_id}: payload of {size} bytes is over the limit of {limit}")
        self.job_id = job_id
        self.size = size
        self.limit = limit


class QueueFull(WasmqError):
    """The queue's backlog (jobs not finished) is at its `max_waiting`
    (`WASMQ_QUEUE_FULL`): the call's `new` jobs would pass it; nothing was written."""

    def __init__(self, queue: str, backlog: int, new: int, limit: int) -> None:
        super().__init__(
            f"queue {queue} is full: {backlog} jobs not finished, {new} more would pass"
            f" its max_waiting of {limit}"
        )
        self.queue = queue
        self.backlog = backlog
        self.new = new
        self.limit = limit


class WrongType(WasmqError):
    """A key of the queue holds another Redis type than the protocol's (`WASMQ_WRONGTYPE`);
    nothing was written. Someone wrote it by hand: `wasmq queue check` reports it."""

    def __init__(self, key: str, found: str) -> None:
        super().__init__(f"{key} holds a {found}, not what the wasmq protocol keeps there")
        self.key = key
        self.found = found


class InvalidQueue(WasmqError, ValueError):
    """A queue name outside the protocol's rule (1-128 of `A-Z a-z 0-9 - _ . :`)."""


class JobNotFound(WasmqError, LookupError):
    """The job does not exist: never enqueued, purged, or deleted by retention."""

    def __init__(self, queue: str, job_id: str) -> None:
        super().__init__(f"job {job_id} not found in queue {queue}")
        self.queue = queue
        self.job_id = job_id


class JobFailed(WasmqError):
    """The job ended in the dead-letter queue: `outcome` is its last outcome class (`fail`,
    `timeout`, `trap`, `unknown_handler`, `cancelled` for a cancelled job, ...) and `error`
    its last error message."""

    def __init__(self, job_id: str, outcome: str, error: str) -> None:
        super().__init__(f"job {job_id} failed ({outcome}): {error}")
        self.job_id = job_id
        self.outcome = outcome
        self.error = error


class WaitTimeout(WasmqError, TimeoutError):
    """`wait_for_result` gave up before the job finished; the job goes on."""

    def __init__(self, job_id: str, state: Optional[str]) -> None:
        super().__init__(f"job {job_id} has not finished (state {state})")
        self.job_id = job_id
        self.state = state
