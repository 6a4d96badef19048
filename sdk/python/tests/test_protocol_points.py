"""One test per point of issue #22 that the protocol page and the scripts now agree on,
through the SDK (and raw EVALs where a producer without the SDK would see it)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Dict, List

import pytest

from wasmq import Client, Counts, InvalidJob, WrongType
from wasmq import _protocol

from conftest import eventually


def keyspace(client: Client, queue: str) -> Dict[bytes, bytes]:
    return {k: client.redis.dump(k) for k in client.redis.keys(f"wasmq:{{{queue}}}:*")}


def raw_enqueue(client: Client, queue: str, args: List[str], nkeys: int = 9):
    keys = _protocol.keys(queue, _protocol.ENQUEUE_KEYS)[:nkeys]
    return client.redis.eval(_protocol.ENQUEUE_LUA, len(keys), *keys, *args)


def test_counts_is_one_atomic_script_with_a_documented_name(client: Client, queue: str) -> None:
    client.enqueue(queue, "echo")
    client.enqueue(queue, "echo", group="g")
    client.enqueue(queue, "echo", delay_ms=60_000)
    # What a producer without the SDK sends: counts.lua, EVAL'd with its nine keys.
    keys = _protocol.keys(queue, _protocol.COUNTS_KEYS)
    reply = client.redis.eval(_protocol.COUNTS_LUA, len(keys), *keys)
    assert reply[:7] == [2, 1, 0, 0, 0, 0, 0] and reply[7] > 0
    assert client.counts(queue) == Counts(2, 1, 0, 0, 0, 0, False)


@pytest.mark.parametrize("run_at", [0, 1, datetime(1970, 1, 2, tzinfo=timezone.utc)])
def test_a_run_at_in_the_past_is_stored_as_now(client: Client, queue: str, run_at) -> None:
    job = client.get_job(queue, client.enqueue(queue, "echo", run_at=run_at))
    assert job is not None and job.state == "waiting"
    assert job.run_at_ms == job.created_at_ms


def test_fail_skips_retries_and_timeout_trap_and_unknown_handler_use_every_attempt(
        client: Client, host) -> None:
    no_wait = dict(backoff="fixed", backoff_ms=0, max_attempts=2)
    jobs = {
        "fail": client.enqueue("py", "fail", b"", **no_wait),
        "trap": client.enqueue("py", "panic", b"", **no_wait),
        "timeout": client.enqueue("py", "sleep", b"5000", timeout_ms=200, **no_wait),
        "unknown_handler": client.enqueue("py", "no-such-handler", b"", **no_wait),
    }
    for outcome, job_id in jobs.items():
        job = eventually(f"{outcome} to be dead", lambda: _dead(client, "py", job_id), 60)
        attempts = [a["outcome"] for a in job.history]
        assert job.last_outcome == outcome
        assert attempts == [outcome] * (1 if outcome == "fail" else 2), outcome


def _dead(client: Client, queue: str, job_id: str):
    job = client.get_job(queue, job_id)
    return job if job is not None and job.state == "dead" else None


def test_an_exponential_base_over_the_default_cap_is_accepted_without_a_cap(
        client: Client, queue: str) -> None:
    job = client.get_job(queue, client.enqueue(queue, "echo", backoff_ms=7_200_000))
    assert job is not None
    assert (job.fields["backoff_ms"], job.fields["backoff_cap_ms"]) == (b"7200000", b"7200000")
    with pytest.raises(InvalidJob, match="backoff_cap_ms must not be below backoff_ms"):
        client.enqueue(queue, "echo", backoff_ms=7_200_000, backoff_cap_ms=3_600_000)


def test_a_fixed_backoff_has_no_cap(client: Client, host) -> None:
    job_id = client.enqueue("py", "panic", b"", backoff="fixed", backoff_ms=7_200_000,
                            backoff_jitter=0, max_attempts=2)

    def retrying():
        job = client.get_job("py", job_id)
        return job if job is not None and job.state == "retry" else None

    job = eventually("the first attempt to fail", retrying, 60)
    finished = job.history[0]["finished_at"]
    assert job.run_at_ms == finished + 7_200_000, "two hours, over the exponential cap of one"
    assert client.cancel("py", job_id) == {job_id: "cancelled"}


@pytest.mark.parametrize("args, reason", [
    (["0"], "number of jobs, 1 to 10000"),
    (["10001"], "number of jobs, 1 to 10000"),
    (["1", "j", "65", "handler", "h"], "number of field/value pairs must be 0 to 64"),
    (["1", "j", "2", "handler", "h", "handler", "h"], "field handler given twice"),
    (["1", "j", "3", "handler", "h", "group", "a", "group", "b"], "field group given twice"),
])
def test_the_documented_bounds_on_n_pairs_and_fields_are_enforced(
        client: Client, queue: str, args: List[str], reason: str) -> None:
    with pytest.raises(Exception, match=reason):
        raw_enqueue(client, queue, args)
    assert keyspace(client, queue) == {}


def test_the_script_checks_the_keys_it_is_given(client: Client, queue: str) -> None:
    keys = _protocol.keys(queue, _protocol.ENQUEUE_KEYS)
    for bad, reason in [
        (keys[:1] + keys[2:], "give the 11 keys"),
        ([keys[0], keys[1], keys[3], keys[2], *keys[4:]], "KEYS[3] must be"),
        ([k.replace(queue, "other") if i == 6 else k for i, k in enumerate(keys)], "KEYS[7]"),
    ]:
        with pytest.raises(Exception, match=reason.replace("[", r"\[")):
            client.redis.eval(_protocol.ENQUEUE_LUA, len(bad), *bad, "1", "j", "1", "handler", "h")
    assert keyspace(client, queue) == {}
    assert client.redis.keys("wasmq:{other}:*") == []


def test_a_damaged_key_writes_nothing_and_a_retry_with_the_same_id_enqueues_once(
        client: Client, queue: str) -> None:
    first = client.enqueue(queue, "echo", id="keep")
    client.redis.set(f"wasmq:{{{queue}}}:waiting", "damaged")
    before = keyspace(client, queue)
    with pytest.raises(WrongType) as wrong:
        client.enqueue_bulk(queue, [_protocol.JobSpec("echo", id="a"),
                                    _protocol.JobSpec("echo", id="b", delay_ms=1000)])
    assert (wrong.value.key, wrong.value.found) == (f"wasmq:{{{queue}}}:waiting", "string")
    assert keyspace(client, queue) == before, "nothing written"
    # Repaired (by a person), the producer retries the same ids: each is enqueued once.
    client.redis.delete(f"wasmq:{{{queue}}}:waiting")
    client.redis.zadd(f"wasmq:{{{queue}}}:waiting", {first: 1})
    for _ in range(2):
        client.enqueue_bulk(queue, [_protocol.JobSpec("echo", id="a"),
                                    _protocol.JobSpec("echo", id="b", delay_ms=1000)])
    assert client.counts(queue) == Counts(2, 1, 0, 0, 0, 0, False)
