"""The wasmq Redis protocol (docs/protocol.md) with no I/O: key names, the scripts this package
ships, the arguments of a call and the decoding of replies. `Client` and `AsyncClient` are
thin shells around it that send what it builds."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import unquote, urlsplit

from .errors import InvalidJob, InvalidQueue, PayloadTooLarge, QueueFull, WrongType

#: The protocol version this package speaks (docs/protocol.md, "Stable contract").
PROTOCOL = 3

#: The most jobs one enqueue call takes (enqueue.lua's bound on N).
MAX_BULK = 10_000

Payload = Union[bytes, bytearray, memoryview, str]

_QUEUE_NAME = re.compile(r"^[A-Za-z0-9\-_.:]{1,128}$")
_TERMINAL = ("completed", "dead")


def _script(name: str) -> str:
    return (resources.files(__package__) / "scripts" / f"{name}.lua").read_text("utf-8")


ENQUEUE_LUA = _script("enqueue")
COUNTS_LUA = _script("counts")


def library_script(body: str) -> str:
    """A transition of the hosts' function library as a script a producer can EVAL:
    `lib.lua`, then the body in a function of its own (docs/protocol.md, "Stable contract")."""
    return _script("lib") + "\nreturn (function()\n" + _script(body) + "\nend)()\n"


CANCEL_LUA = library_script("cancel")
REPLAY_LUA = library_script("replay")
PURGE_LUA = library_script("purge")
PAUSE_LUA = library_script("pause")
RESUME_LUA = library_script("resume")

# The keys each script takes, by their suffix after `wasmq:{<queue>}:`.
ENQUEUE_KEYS = ("job:", "config", "waiting", "delayed", "seq", "events", "wake", "g:", "groups",
                "dedupe:", "debounce:")
COUNTS_KEYS = ("config", "waiting", "delayed", "active", "retry", "completed", "dead", "g:",
               "groups")
CANCEL_KEYS = ("job:", "config", "waiting", "delayed", "retry", "events", "g:", "groups",
               "steps:", "active", "dead", "cancel")
REPLAY_KEYS = ("job:", "config", "dead", "waiting", "seq", "events", "wake", "g:", "groups")
PURGE_KEYS = ("job:", "config", "dead", "events", "steps:")
PAUSE_KEYS = ("config", "events")
RESUME_KEYS = ("config", "events", "waiting", "wake", "groups")


def key(queue: str, suffix: str) -> str:
    if not isinstance(queue, str) or not _QUEUE_NAME.match(queue):
        raise InvalidQueue(f"invalid queue name {queue!r}: 1-128 of A-Z a-z 0-9 - _ . :")
    return f"wasmq:{{{queue}}}:{suffix}"


def keys(queue: str, suffixes: Sequence[str]) -> List[str]:
    return [key(queue, s) for s in suffixes]


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id() -> str:
    """A ULID: 48 bits of milliseconds then 80 random bits, 26 Crockford base-32 characters,
    as the Rust client generates (ids sort by creation time)."""
    n = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(n >> (5 * i)) & 31] for i in range(25, -1, -1))


def _ms(value: Union[int, datetime, None], what: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int of milliseconds, got {value!r}")
    return value


def _int(value: Optional[int], what: str) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {value!r}")
    return str(value)


def _bytes(payload: Payload) -> bytes:
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return bytes(payload)


@dataclass
class JobSpec:
    """One job for `enqueue_bulk`: the same arguments as `enqueue`."""

    handler: str
    payload: Payload = b""
    id: Optional[str] = None
    priority: Optional[int] = None
    delay_ms: Optional[int] = None
    run_at: Union[int, datetime, None] = None
    max_attempts: Optional[int] = None
    timeout_ms: Optional[int] = None
    backoff: Optional[str] = None
    backoff_ms: Optional[int] = None
    backoff_cap_ms: Optional[int] = None
    backoff_jitter: Optional[float] = None
    group: Optional[str] = None
    traceparent: Optional[str] = None
    tracestate: Optional[str] = None
    #: Dead-letter the job (outcome `expired`) if it has not started this many ms after the
    #: enqueue, or by `expires_at` (ms since the epoch, or a datetime); not both.
    expires_in_ms: Optional[int] = None
    expires_at: Union[int, datetime, None] = None
    #: Throttle: while the key lives (`dedupe_ttl_ms`), another job with it is not created;
    #: the reply names the first job (outcome `deduplicated`).
    dedupe_key: Optional[str] = None
    dedupe_ttl_ms: Optional[int] = None
    #: Debounce: the key's pending job takes the last payload and starts `debounce_ms` after
    #: the last enqueue, at most `debounce_max_wait_ms` after the first (outcome `debounced`).
    debounce_key: Optional[str] = None
    debounce_ms: Optional[int] = None
    debounce_max_wait_ms: Optional[int] = None

    def wire(self) -> Tuple[str, List[Union[str, bytes]]]:
        """The job's id (generated when none was given) and its field/value pairs."""
        pairs: List[Tuple[str, Union[str, bytes, None]]] = [
            ("handler", self.handler),
            ("payload", _bytes(self.payload)),
            ("priority", _int(self.priority, "priority")),
            ("delay_ms", _int(_ms(self.delay_ms, "delay_ms"), "delay_ms")),
            ("run_at_ms", _int(_ms(self.run_at, "run_at"), "run_at")),
            ("max_attempts", _int(self.max_attempts, "max_attempts")),
            ("timeout_ms", _int(self.timeout_ms, "timeout_ms")),
            ("backoff", self.backoff),
            ("backoff_ms", _int(self.backoff_ms, "backoff_ms")),
            ("backoff_cap_ms", _int(self.backoff_cap_ms, "backoff_cap_ms")),
            ("backoff_jitter", None if self.backoff_jitter is None else repr(float(self.backoff_jitter))),
            ("group", self.group),
            ("traceparent", self.traceparent),
            ("tracestate", self.tracestate),
            ("expires_in_ms", _int(self.expires_in_ms, "expires_in_ms")),
            ("expires_at_ms", _int(_ms(self.expires_at, "expires_at"), "expires_at")),
            ("dedupe_key", self.dedupe_key),
            ("dedupe_ttl_ms", _int(self.dedupe_ttl_ms, "dedupe_ttl_ms")),
            ("debounce_key", self.debounce_key),
            ("debounce_ms", _int(self.debounce_ms, "debounce_ms")),
            ("debounce_max_wait_ms", _int(self.debounce_max_wait_ms, "debounce_max_wait_ms")),
        ]
        flat: List[Union[str, bytes]] = []
        for name, value in pairs:
            if value is not None:
                flat += [name, value]
        job_id = self.id if self.id is not None else new_id()
        return job_id, [job_id, str(len(flat) // 2), *flat]


def enqueue_args(jobs: Sequence[JobSpec]) -> List[Union[str, bytes]]:
    if not 1 <= len(jobs) <= MAX_BULK:
        raise ValueError(f"enqueue takes 1 to {MAX_BULK} jobs per call, got {len(jobs)}")
    args: List[Union[str, bytes]] = [str(len(jobs))]
    for job in jobs:
        args += job.wire()[1]
    return args


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


@dataclass(frozen=True)
class Enqueued:
    """What enqueue did with one job. `outcome` is `created`, `exists` (the id existed:
    nothing written), `deduplicated` (its dedupe key was taken: `id` is the first job) or
    `debounced` (`id` is the debounce key's pending job, which took this payload); `created`
    is `outcome == "created"`; `state` is the state of the job `id` names ("" for a
    deduplicated job whose first job is no longer kept)."""

    id: str
    created: bool
    state: str
    outcome: str = "created"


def decode_enqueued(reply: Any) -> List[Enqueued]:
    return [Enqueued(_text(i), _text(o) == "created", _text(s), _text(o)) for i, o, s in reply]


def script_error(err: Exception) -> Exception:
    """The typed error for a `WASMQ_*` error reply, or `err` itself for any other."""
    message = str(err)
    code, _, detail = message.partition(" ")
    if code == "WASMQ_INVALID":
        rest = detail[4:] if detail.startswith("job ") else detail
        job_id, sep, reason = rest.partition(": ")
        if not sep:
            return InvalidJob(None, detail)
        return InvalidJob(None if job_id == "-" else job_id, reason)
    if code == "WASMQ_PAYLOAD_TOO_LARGE":
        parts = detail.split(" ")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            return PayloadTooLarge(parts[0], int(parts[1]), int(parts[2]))
    if code == "WASMQ_QUEUE_FULL":
        parts = detail.split(" ")
        if len(parts) == 4 and all(p.isdigit() for p in parts[1:]):
            return QueueFull(parts[0], int(parts[1]), int(parts[2]), int(parts[3]))
    if code == "WASMQ_WRONGTYPE":
        name, _, found = detail.partition(" ")
        return WrongType(name, found)
    return err


@dataclass(frozen=True)
class Counts:
    """Jobs per state, read in one atomic call (counts.lua)."""

    waiting: int
    delayed: int
    active: int
    retry: int
    completed: int
    dead: int
    paused: bool


def decode_counts(reply: Sequence[Any]) -> Counts:
    n = [int(v) for v in reply]
    return Counts(n[0], n[1], n[2], n[3], n[4], n[5], n[6] == 1)


def _opt_int(fields: Mapping[str, bytes], name: str) -> Optional[int]:
    value = fields.get(name)
    return int(value) if value not in (None, b"") else None


@dataclass
class Job:
    """A job as its hash holds it (docs/protocol.md, "Job fields")."""

    queue: str
    id: str
    handler: str
    state: str
    payload: bytes
    priority: int
    attempt: int
    max_attempts: int
    created_at_ms: Optional[int]
    run_at_ms: Optional[int]
    finished_at_ms: Optional[int]
    result: Optional[bytes]
    last_outcome: Optional[str]
    last_error: Optional[str]
    group: Optional[str]
    traceparent: Optional[str]
    tracestate: Optional[str]
    history: List[Dict[str, Any]]
    #: Every field as Redis holds it, for what this class does not name.
    fields: Dict[str, bytes] = field(repr=False)


def decode_job(queue: str, job_id: str, raw: Mapping[Any, bytes]) -> Optional[Job]:
    if not raw:
        return None
    f = {_text(k): v for k, v in raw.items()}
    text = lambda name: _text(f[name]) if name in f else None  # noqa: E731
    try:
        history = json.loads(f.get("history", b"[]") or b"[]")
    except ValueError:
        history = []
    return Job(
        queue=queue,
        id=job_id,
        handler=text("handler") or "",
        state=text("state") or "",
        payload=f.get("payload", b""),
        priority=_opt_int(f, "priority") or 0,
        attempt=_opt_int(f, "attempt") or 0,
        max_attempts=_opt_int(f, "max_attempts") or 0,
        created_at_ms=_opt_int(f, "created_at"),
        run_at_ms=_opt_int(f, "run_at"),
        finished_at_ms=_opt_int(f, "finished_at"),
        result=f.get("result"),
        last_outcome=text("last_outcome"),
        last_error=text("last_error"),
        group=text("group"),
        traceparent=text("traceparent"),
        tracestate=text("tracestate"),
        history=history,
        fields=f,
    )


def is_terminal(job: Optional[Job]) -> bool:
    return job is not None and job.state in _TERMINAL


# Events after which a waiter reads the job again: it may have finished or gone.
WAKING_EVENTS = {b"completed", b"dead", b"cancelled", b"purged"}


def mentions(fields: Mapping[Any, Any], job_id: str) -> bool:
    """Whether an events entry of a waking kind lists `job_id` (docs/protocol.md, "Events")."""
    if fields.get(b"event") not in WAKING_EVENTS:
        return False
    try:
        return any(pair[0] == job_id for pair in json.loads(fields.get(b"jobs", b"[]")))
    except (ValueError, TypeError, IndexError):
        return True  # unreadable: look at the job rather than miss it


def cancel_outcomes(reply: Any) -> Dict[str, str]:
    return {_text(i): _text(o) for i, o in reply}


def moved_ids(reply: Any) -> List[str]:
    """The ids of a replay or purge reply: `[moved_ids, skipped]`."""
    return [_text(i) for i in reply[0]]


def parse_url(url: str) -> Tuple[str, Dict[str, Any]]:
    """`("single", {...})` for redis:// and rediss://, `("cluster", {...})` for
    redis+cluster://h1:p1,h2:p2 (and rediss+cluster://), as wasmq hosts take them."""
    scheme, sep, rest = url.partition("://")
    if scheme not in ("redis+cluster", "rediss+cluster"):
        return "single", {"url": url}
    creds, at, seeds = rest.rpartition("@")
    seeds = seeds.split("/", 1)[0].split("?", 1)[0]
    nodes = []
    for seed in seeds.split(","):
        host, _, port = seed.rpartition(":")
        nodes.append((host.strip("[]"), int(port)))
    options: Dict[str, Any] = {"nodes": nodes, "ssl": scheme == "rediss+cluster"}
    if at:
        parsed = urlsplit(f"redis://{creds}@x")
        if parsed.username:
            options["username"] = unquote(parsed.username)
        if parsed.password:
            options["password"] = unquote(parsed.password)
    return "cluster", options
