"""Every operation of the Python SDK against a real redis-server and a real `wasmq run` host,
its errors, and one test per point of issue #22 (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import wasmq
from wasmq import (
    AsyncClient,
    Client,
    InvalidJob,
    InvalidQueue,
    JobFailed,
    JobNotFound,
    JobSpec,
    PayloadTooLarge,
    QueueFull,
    WaitTimeout,
    WrongType,
)
from conftest import REPO, eventually


def test_the_package_ships_the_hosts_scripts_byte_for_byte() -> None:
    shipped = Path(wasmq.__file__).parent / "scripts"
    names = sorted(p.name for p in shipped.glob("*.lua"))
    assert names == sorted(f"{n}.lua" for n in
                           ("enqueue", "counts", "lib", "cancel", "replay", "purge", "pause",
                            "resume"))
    for name in names:
        host = REPO / "host" / "src" / "queue" / "scripts" / name
        assert (shipped / name).read_bytes() == host.read_bytes(), name


# ----- enqueue, run, wait ---------------------------------------------------------------------


def test_a_job_runs_on_a_host_and_wait_for_result_returns_its_result(client: Client, host) -> None:
    job_id = client.enqueue("py", "echo", b"\x00binary\xff payload")
    assert len(job_id) == 26  # a ULID
    assert client.wait_for_result("py", job_id, timeout=60) == b"\x00binary\xff payload"
    job = client.get_job("py", job_id)
    assert job is not None and job.state == "completed"
    assert [a["outcome"] for a in job.history] == ["ok"]


def test_wait_for_result_raises_job_failed_with_the_outcome_and_error(client: Client, host) -> None:
    job_id = client.enqueue("py", "fail", b"", max_attempts=3)
    with pytest.raises(JobFailed) as failed:
        client.wait_for_result("py", job_id, timeout=60)
    assert failed.value.outcome == "fail"
    assert failed.value.error == "permanent failure"


def test_wait_for_result_times_out_and_the_job_goes_on(client: Client, queue: str) -> None:
    job_id = client.enqueue(queue, "echo", b"x")
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as timed_out:
        client.wait_for_result(queue, job_id, timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 5
    assert timed_out.value.state == "waiting"
    assert isinstance(timed_out.value, TimeoutError)


def test_wait_for_result_of_an_unknown_job_raises_job_not_found_and_of_a_cancelled_one_failed(
        client: Client, server, queue: str) -> None:
    with pytest.raises(JobNotFound):
        client.wait_for_result(queue, "never-enqueued", timeout=1)
    job_id = client.enqueue(queue, "echo", b"x", delay_ms=60_000)
    # Cancelled while the waiter blocks on the events stream: the `cancelled` event wakes it.
    other = Client.from_url(server.url)
    timer = threading.Timer(0.3, lambda: other.cancel(queue, job_id, by="py", reason="test"))
    started = time.monotonic()
    timer.start()
    with pytest.raises(JobFailed) as failed:
        client.wait_for_result(queue, job_id, timeout=10)
    assert (failed.value.outcome, failed.value.error) == ("cancelled", "cancelled by py: test")
    assert time.monotonic() - started < 4, "woken by the event, not by a later look"
    timer.join()
    other.close()


def test_wait_for_result_wakes_on_the_completed_event(client: Client, host) -> None:
    # A job that takes 1.5 s: the waiter blocks on XREAD meanwhile and returns when the
    # `completed` event arrives, well before its next 5 s look at the job.
    job_id = client.enqueue("py", "sleep", b"1500")
    started = time.monotonic()
    assert client.wait_for_result("py", job_id, timeout=60) != b""
    assert time.monotonic() - started < 4.5


# ----- options ------------------------------------------------------------------------------


def test_every_enqueue_option_is_stored_as_given(client: Client, queue: str) -> None:
    run_at = datetime.now(timezone.utc) + timedelta(hours=1)
    job_id = client.enqueue(queue, "echo", "text payload", id="job-1", priority=7,
                            run_at=run_at, max_attempts=5, timeout_ms=2500, backoff="fixed",
                            backoff_ms=300, backoff_jitter=0.5, group="tenant-9")
    assert job_id == "job-1"
    job = client.get_job(queue, "job-1")
    assert job is not None
    assert (job.state, job.payload, job.priority, job.max_attempts, job.group) == (
        "delayed", b"text payload", 7, 5, "tenant-9")
    assert job.run_at_ms == int(run_at.timestamp() * 1000)
    f = job.fields
    assert (f["timeout_ms"], f["backoff"], f["backoff_ms"], f["backoff_jitter"]) == (
        b"2500", b"fixed", b"300", b"0.5")
    assert f["own_policy"] == b"attempts,backoff"
    delayed = client.get_job(queue, client.enqueue(queue, "echo", delay_ms=10_000))
    assert delayed is not None and delayed.state == "delayed"
    assert delayed.run_at_ms == delayed.created_at_ms + 10_000
    capped = client.get_job(queue, client.enqueue(queue, "echo", backoff_ms=50,
                                                  backoff_cap_ms=400))
    assert capped is not None and capped.fields["backoff_cap_ms"] == b"400"


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_trace_context_is_stored_and_a_malformed_one_refused(client: Client, queue: str) -> None:
    job = client.get_job(queue, client.enqueue(queue, "echo", traceparent=TRACEPARENT,
                                               tracestate="vendor=abc"))
    assert job is not None
    assert (job.traceparent, job.tracestate) == (TRACEPARENT, "vendor=abc")
    for bad in ["00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
                "00-00000000000000000000000000000000-b7ad6b7169203331-01",
                "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "00-abc"]:
        with pytest.raises(InvalidJob, match="traceparent"):
            client.enqueue(queue, "echo", id="bad-trace", traceparent=bad)
    with pytest.raises(InvalidJob, match="tracestate needs a traceparent"):
        client.enqueue(queue, "echo", id="bad-trace", tracestate="a=1")
    assert client.get_job(queue, "bad-trace") is None


def test_priority_orders_what_a_host_runs(client: Client, queue: str) -> None:
    low = client.enqueue(queue, "echo", priority=-5)
    high = client.enqueue(queue, "echo", priority=5)
    seq = {i: int(client.get_job(queue, i).fields["seq"]) for i in (low, high)}
    score = client.redis.zscore(f"wasmq:{{{queue}}}:waiting", high)
    assert score < client.redis.zscore(f"wasmq:{{{queue}}}:waiting", low)
    assert seq[low] < seq[high]


def test_an_existing_id_writes_nothing_so_retrying_an_enqueue_is_safe(
        client: Client, queue: str) -> None:
    first = client.enqueue_bulk(queue, [JobSpec("echo", b"one", id="same")])
    again = client.enqueue_bulk(queue, [JobSpec("echo", b"two", id="same")])
    assert (first[0].created, again[0].created, again[0].state) == (True, False, "waiting")
    assert client.get_job(queue, "same").payload == b"one"
    assert client.counts(queue).waiting == 1


def test_enqueue_bulk_is_all_or_nothing(client: Client, queue: str) -> None:
    jobs = [JobSpec("echo", f"{n}") for n in range(100)] + [JobSpec("echo", priority=5000)]
    with pytest.raises(InvalidJob) as invalid:
        client.enqueue_bulk(queue, jobs)
    assert "priority must be an integer in -1000..1000" in invalid.value.reason
    assert client.counts(queue).waiting == 0
    done = client.enqueue_bulk(queue, jobs[:100])
    assert [e.created for e in done] == [True] * 100
    assert client.counts(queue).waiting == 100


def test_errors_are_typed(client: Client, queue: str) -> None:
    with pytest.raises(InvalidJob) as invalid:
        client.enqueue(queue, "echo", id="bad id")
    assert invalid.value.job_id == "bad id"
    with pytest.raises(InvalidJob):
        client.enqueue(queue, "")
    with pytest.raises(InvalidQueue):
        client.enqueue("no{braces}", "echo")
    client.redis.hset(f"wasmq:{{{queue}}}:config", "max_payload_bytes", 10)
    with pytest.raises(PayloadTooLarge) as too_large:
        client.enqueue(queue, "echo", b"x" * 11, id="big")
    assert (too_large.value.job_id, too_large.value.size, too_large.value.limit) == ("big", 11, 10)
    assert client.counts(queue).waiting == 0
    client.redis.hset(f"wasmq:{{{queue}}}:config", "max_waiting", 1)
    client.enqueue(queue, "echo", id="first")
    with pytest.raises(QueueFull) as full:
        client.enqueue(queue, "echo", id="second")
    assert (full.value.queue, full.value.backlog, full.value.new, full.value.limit) == (queue, 1, 1, 1)
    assert client.counts(queue).waiting == 1


# ----- reading and managing -----------------------------------------------------------------


def test_counts_reads_every_state_in_one_call(client: Client, queue: str) -> None:
    client.enqueue(queue, "echo")
    client.enqueue(queue, "echo", group="g1")
    client.enqueue(queue, "echo", delay_ms=60_000)
    assert client.counts(queue) == wasmq.Counts(2, 1, 0, 0, 0, 0, False)
    assert client.pause(queue) is True
    assert client.counts(queue).paused is True


def test_cancel_dead_letters_jobs_keeping_who_and_why(client: Client, queue: str) -> None:
    a = client.enqueue(queue, "echo")
    b = client.enqueue(queue, "echo", delay_ms=60_000, group="g")
    assert client.cancel(queue, a, b, "nope", by="py", reason="no longer needed") == {
        a: "cancelled", b: "cancelled", "nope": "not_found"}
    job = client.get_job(queue, a)
    assert job is not None and (job.state, job.last_outcome) == ("dead", "cancelled")
    assert job.fields["cancelled_by"] == b"py"
    assert job.fields["cancel_reason"] == b"no longer needed"
    assert job.history[-1]["outcome"] == "cancelled"
    assert client.counts(queue) == wasmq.Counts(0, 0, 0, 0, 0, 2, False)
    assert client.cancel(queue, a) == {a: "dead"}


def test_cancel_stops_a_running_job_on_its_host(client: Client, host) -> None:
    job_id = client.enqueue("py", "sleep", b"60000")
    deadline = time.monotonic() + 60
    while (job := client.get_job("py", job_id)) is None or job.state != "active":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.02)
    assert client.cancel("py", job_id, by="py") == {job_id: "cancelled"}
    with pytest.raises(JobFailed) as failed:
        client.wait_for_result("py", job_id, timeout=5)
    assert failed.value.outcome == "cancelled"
    job = client.get_job("py", job_id)
    assert job is not None and [a["outcome"] for a in job.history] == ["cancelled"]
    assert job.history[0]["host"] != ""


def test_a_paused_queue_runs_nothing_until_resumed(client: Client, host) -> None:
    assert client.pause("py-pause") is True
    assert client.pause("py-pause") is False
    job_id = client.enqueue("py-pause", "echo", b"later")
    with pytest.raises(WaitTimeout):
        client.wait_for_result("py-pause", job_id, timeout=1.5)
    assert client.resume("py-pause") is True
    assert client.wait_for_result("py-pause", job_id, timeout=60) == b"later"


def test_dead_letters_are_listed_replayed_and_purged(client: Client, host) -> None:
    ids = [client.enqueue("py-dlq", "fail", f"{n}") for n in range(3)]
    eventually("three dead jobs", lambda: client.counts("py-dlq").dead == 3 or None)
    dead = client.dead_letters("py-dlq")
    assert sorted(j.id for j in dead) == sorted(ids)
    assert {j.last_outcome for j in dead} == {"fail"}
    assert client.replay("py-dlq", [ids[0]]) == [ids[0]]
    def died_again():
        job = client.get_job("py-dlq", ids[0])
        return job if job.state == "dead" and job.fields.get("replays") == b"1" else None

    assert len(eventually("the replayed job to die again", died_again).history) == 2
    assert sorted(client.purge("py-dlq", limit=10)) == sorted(ids)
    assert client.dead_letters("py-dlq") == []
    assert all(client.get_job("py-dlq", i) is None for i in ids)


def test_the_async_client_has_the_same_surface(server, host) -> None:
    async def main() -> None:
        async with AsyncClient.from_url(server.url) as client:
            job_id = await client.enqueue("py", "echo", b"async")
            assert await client.wait_for_result("py", job_id, timeout=60) == b"async"
            job = await client.get_job("py", job_id)
            assert job is not None and job.state == "completed"
            queue = "t-async"
            other = await client.enqueue(queue, "echo", delay_ms=60_000)
            assert (await client.counts(queue)).delayed == 1
            with pytest.raises(WaitTimeout):
                await client.wait_for_result(queue, other, timeout=0.3)
            assert await client.cancel(queue, other) == {other: "cancelled"}
            assert await client.pause(queue) and await client.resume(queue)
            with pytest.raises(InvalidJob):
                await client.enqueue(queue, "echo", max_attempts=0)
            failed = await client.enqueue("py", "fail")
            with pytest.raises(JobFailed):
                await client.wait_for_result("py", failed, timeout=60)
            assert failed in [j.id for j in await client.dead_letters("py")]
            assert await client.purge("py", [failed]) == [failed]
            assert await client.replay("py", ["gone"]) == []

    asyncio.run(main())


# ----- dedupe, debounce and expiry (issue #24) -------------------------------------------


def test_a_dedupe_key_creates_one_job_per_ttl_and_names_the_first(
        client: Client, queue: str) -> None:
    first = client.enqueue(queue, "echo", b"one", dedupe_key="order-7", dedupe_ttl_ms=300)
    again = client.enqueue_bulk(queue, [JobSpec("echo", b"two", dedupe_key="order-7",
                                                dedupe_ttl_ms=300)])
    assert (again[0].id, again[0].outcome, again[0].created, again[0].state) == (
        first, "deduplicated", False, "waiting")
    assert client.enqueue(queue, "echo", b"three", dedupe_key="order-7",
                          dedupe_ttl_ms=300) == first
    assert client.counts(queue).waiting == 1
    assert client.get_job(queue, first).payload == b"one"
    time.sleep(0.4)
    later = client.enqueue_bulk(queue, [JobSpec("echo", b"four", dedupe_key="order-7",
                                                dedupe_ttl_ms=300)])
    assert later[0].outcome == "created" and later[0].id != first
    assert client.counts(queue).waiting == 2


def test_a_debounce_key_keeps_one_pending_job_with_the_last_payload(
        client: Client, queue: str) -> None:
    first = client.enqueue(queue, "echo", b"1", debounce_key="user-3", debounce_ms=5000,
                           debounce_max_wait_ms=8000)
    created = client.get_job(queue, first)
    replies = client.enqueue_bulk(queue, [JobSpec("echo", b"2", debounce_key="user-3",
                                                  debounce_ms=5000)])
    assert (replies[0].id, replies[0].outcome, replies[0].state) == (
        first, "debounced", "delayed")
    job = client.get_job(queue, first)
    assert (job.state, job.payload) == ("delayed", b"2")
    assert created.run_at_ms <= job.run_at_ms <= created.created_at_ms + 8000
    assert job.fields["debounce_until"] == str(created.created_at_ms + 8000).encode()
    assert client.counts(queue).delayed == 1
    with pytest.raises(InvalidJob, match="takes no delay_ms"):
        client.enqueue(queue, "echo", debounce_key="k", debounce_ms=5, delay_ms=1)


def test_an_expired_job_is_dead_lettered_and_never_runs(client: Client, host) -> None:
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    job_id = client.enqueue("py", "echo", b"late", expires_at=past)
    with pytest.raises(JobFailed) as failed:
        client.wait_for_result("py", job_id, timeout=30)
    assert failed.value.outcome == "expired"
    job = client.get_job("py", job_id)
    assert (job.state, job.attempt, job.result) == ("dead", 0, None)
    assert [h["outcome"] for h in job.history] == ["expired"]
    on_time = client.enqueue("py", "echo", b"on time", expires_in_ms=60_000)
    assert client.wait_for_result("py", on_time, timeout=30) == b"on time"
