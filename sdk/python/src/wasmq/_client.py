"""`Client`: the blocking producer API over redis-py."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Dict, List, Optional, Sequence, Union

import redis
from redis.cluster import ClusterNode, RedisCluster

from . import _protocol as p
from .errors import JobFailed, JobNotFound, WaitTimeout

# One XREAD blocks at most this long before the waiter reads the job again: so a wait still
# ends when the events stream is off (`events_maxlen` 0) or was trimmed past the job's event.
_BLOCK_S = 5.0


class Client:
    """A producer of one Redis (or Redis Cluster): enqueue jobs, wait for their results, read
    and manage queues. Every method is one or a few round trips; state changes are one script
    call each (docs/protocol.md)."""

    def __init__(self, connection: "redis.Redis | RedisCluster") -> None:
        # Payloads and results are bytes: the connection must not decode replies.
        self.redis = connection
        self._scripts = {
            name: connection.register_script(text)
            for name, text in (
                ("enqueue", p.ENQUEUE_LUA),
                ("counts", p.COUNTS_LUA),
                ("cancel", p.CANCEL_LUA),
                ("replay", p.REPLAY_LUA),
                ("purge", p.PURGE_LUA),
                ("pause", p.PAUSE_LUA),
                ("resume", p.RESUME_LUA),
            )
        }

    @classmethod
    def from_url(cls, url: str, **options: Any) -> "Client":
        """`redis://[user:password@]host:port[/db]`, `rediss://...`, or a cluster's
        `redis+cluster://[user:password@]h1:p1,h2:p2` (any reachable nodes as seeds).
        `options` go to redis-py (`ssl_ca_certs=...`, `socket_timeout=...`)."""
        kind, parsed = p.parse_url(url)
        if kind == "single":
            return cls(redis.Redis.from_url(parsed["url"], decode_responses=False, **options))
        nodes = [ClusterNode(host, port) for host, port in parsed.pop("nodes")]
        return cls(RedisCluster(startup_nodes=nodes, decode_responses=False, **parsed, **options))

    def close(self) -> None:
        self.redis.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, name: str, queue: str, suffixes: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return self._scripts[name](keys=p.keys(queue, suffixes), args=list(args))
        except redis.ResponseError as err:
            raise p.script_error(err) from None

    # ----- producing -----------------------------------------------------------------------

    def enqueue(
        self,
        queue: str,
        handler: str,
        payload: p.Payload = b"",
        *,
        id: Optional[str] = None,
        priority: Optional[int] = None,
        delay_ms: Optional[int] = None,
        run_at: Union[int, datetime, None] = None,
        max_attempts: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        backoff: Optional[str] = None,
        backoff_ms: Optional[int] = None,
        backoff_cap_ms: Optional[int] = None,
        backoff_jitter: Optional[float] = None,
        group: Optional[str] = None,
        traceparent: Optional[str] = None,
        tracestate: Optional[str] = None,
        expires_in_ms: Optional[int] = None,
        expires_at: Union[int, datetime, None] = None,
        dedupe_key: Optional[str] = None,
        dedupe_ttl_ms: Optional[int] = None,
        debounce_key: Optional[str] = None,
        debounce_ms: Optional[int] = None,
        debounce_max_wait_ms: Optional[int] = None,
    ) -> str:
        """Enqueues one job and returns its id (generated when not given). An id that exists
        in the queue writes nothing: the call is safe to retry after any error. With a
        `dedupe_key` or `debounce_key` that created nothing, the id is that of the job that
        stands for it (see `JobSpec` and `enqueue_bulk`'s `Enqueued.outcome`)."""
        job = p.JobSpec(handler, payload, id, priority, delay_ms, run_at, max_attempts,
                        timeout_ms, backoff, backoff_ms, backoff_cap_ms, backoff_jitter, group,
                        traceparent, tracestate, expires_in_ms, expires_at, dedupe_key,
                        dedupe_ttl_ms, debounce_key, debounce_ms, debounce_max_wait_ms)
        return self.enqueue_bulk(queue, [job])[0].id

    def enqueue_bulk(self, queue: str, jobs: Sequence[p.JobSpec]) -> List[p.Enqueued]:
        """Enqueues up to 10,000 jobs in one atomic call: all or, on any error, none."""
        args = p.enqueue_args(jobs)
        return p.decode_enqueued(self._call("enqueue", queue, p.ENQUEUE_KEYS, args))

    # ----- reading -------------------------------------------------------------------------

    def get_job(self, queue: str, id: str) -> Optional[p.Job]:
        """The job's state, payload, result and history, or None when it does not exist."""
        return p.decode_job(queue, id, self.redis.hgetall(p.key(queue, "job:" + id)))

    def counts(self, queue: str) -> p.Counts:
        """Jobs per state and the pause flag, read atomically (counts.lua)."""
        return p.decode_counts(self._call("counts", queue, p.COUNTS_KEYS, []))

    def wait_for_result(self, queue: str, id: str, timeout: float = 30.0) -> bytes:
        """Blocks until the job completes and returns its result bytes. Raises `JobFailed`
        when it is dead-lettered (outcome `cancelled` when it was cancelled), `JobNotFound` when
        it does not exist (or is deleted: by purge, or retention with `completed_keep` 0), `WaitTimeout` after `timeout`
        seconds. Waits on the queue's events stream (XREAD), not by polling."""
        deadline = time.monotonic() + timeout
        events = p.key(queue, "events")
        # The stream's last id before the job is read: an event after the read is not missed.
        last = self.redis.xrevrange(events, count=1)
        cursor = last[0][0] if last else b"0-0"
        while True:
            job = self.get_job(queue, id)
            outcome = _finished(queue, id, job)
            if outcome is not None:
                return outcome
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(id, job.state if job else None)
                block_ms = max(1, int(min(remaining, _BLOCK_S) * 1000))
                reply = self.redis.xread({events: cursor}, count=1000, block=block_ms)
                entries = reply[0][1] if reply else []
                if entries:
                    cursor = entries[-1][0]
                if not entries or any(p.mentions(f, id) for _, f in entries):
                    break

    # ----- managing ------------------------------------------------------------------------

    def cancel(self, queue: str, *ids: str, by: str = "", reason: str = "") -> Dict[str, str]:
        """Cancels jobs whatever their state but finished: each is dead-lettered with
        `last_outcome` `cancelled` (history kept, `by` and `reason` recorded, never retried; a
        replay runs it again), and a running one is stopped on its host. Per id `cancelled`,
        `not_found`, or the state that prevents it (`completed`, `dead`)."""
        if not ids:
            return {}
        args = (by, reason, *ids)
        return p.cancel_outcomes(self._call("cancel", queue, p.CANCEL_KEYS, args))

    def dead_letters(self, queue: str, offset: int = 0, limit: int = 100) -> List[p.Job]:
        """A page of the dead-letter queue, oldest death first."""
        ids = self.redis.zrange(p.key(queue, "dead"), offset, offset + limit - 1)
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for raw in ids:
            pipe.hgetall(p.key(queue, "job:" + p._text(raw)))
        jobs = [p.decode_job(queue, p._text(i), h) for i, h in zip(ids, pipe.execute())]
        return [job for job in jobs if job is not None]

    def replay(self, queue: str, ids: Sequence[str] = (), limit: int = 100) -> List[str]:
        """Dead jobs back to waiting with fresh attempts: `ids`, or the `limit` oldest."""
        return p.moved_ids(self._call("replay", queue, p.REPLAY_KEYS, [limit, *ids]))

    def purge(self, queue: str, ids: Sequence[str] = (), limit: int = 100) -> List[str]:
        """Deletes dead jobs for good: `ids`, or the `limit` oldest."""
        return p.moved_ids(self._call("purge", queue, p.PURGE_KEYS, [limit, *ids]))

    def pause(self, queue: str) -> bool:
        """Stops hosts leasing the queue's jobs; True if it was running."""
        return self._call("pause", queue, p.PAUSE_KEYS, []) == 1

    def resume(self, queue: str) -> bool:
        """Lets hosts lease again; True if it was paused."""
        return self._call("resume", queue, p.RESUME_KEYS, []) == 1


def _finished(queue: str, id: str, job: Optional[p.Job]) -> Optional[bytes]:
    """The result of a completed job; raises for a dead or missing one; None while it runs."""
    if job is None:
        raise JobNotFound(queue, id)
    if job.state == "completed":
        return job.result if job.result is not None else b""
    if job.state == "dead":
        raise JobFailed(id, job.last_outcome or "", job.last_error or "")
    return None
