"""wasmq's producer SDK: enqueue jobs for wasmq hosts, wait for their results, read and manage
queues, by the Redis protocol of docs/protocol.md (protocol 3).

    from wasmq import Client
    client = Client.from_url("redis://127.0.0.1:6379")
    job_id = client.enqueue("emails", "send-email", b'{"to": "ada@example.com"}')
    result = client.wait_for_result("emails", job_id, timeout=30)

`AsyncClient` has the same methods for asyncio.
"""

from ._aio import AsyncClient
from ._client import Client
from ._protocol import MAX_BULK, PROTOCOL, Counts, Enqueued, Job, JobSpec
from .errors import (
    InvalidJob,
    InvalidQueue,
    JobFailed,
    JobNotFound,
    PayloadTooLarge,
    QueueFull,
    WaitTimeout,
    WasmqError,
    WrongType,
)

__all__ = [
    "AsyncClient",
    "Client",
    "Counts",
    "Enqueued",
    "InvalidJob",
    "InvalidQueue",
    "Job",
    "JobFailed",
    "JobNotFound",
    "JobSpec",
    "MAX_BULK",
    "PROTOCOL",
    "PayloadTooLarge",
    "QueueFull",
    "WaitTimeout",
    "WasmqError",
    "WrongType",
]
__version__ = "0.1.0"
