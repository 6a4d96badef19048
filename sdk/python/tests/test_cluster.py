"""The SDK on a Redis Cluster URL: queues in different slots, and a host on the same cluster."""

from __future__ import annotations

import pytest

from wasmq import Client, Counts, InvalidJob, JobSpec

from conftest import Host, rust_guest


def test_a_cluster_url_serves_every_operation(cluster) -> None:
    client = Client.from_url(cluster.url)
    host = Host(cluster.url, ["c1", "c2", "c3"], [rust_guest("echo")])
    try:
        slots = {client.redis.keyslot(f"wasmq:{{c{n}}}:waiting") for n in (1, 2, 3)}
        assert len(slots) == 3
        for n in (1, 2, 3):
            queue = f"c{n}"
            job_id = client.enqueue(queue, "echo", f"on {queue}")
            assert client.wait_for_result(queue, job_id, timeout=60) == f"on {queue}".encode()
            assert client.get_job(queue, job_id).state == "completed"
        done = client.enqueue_bulk("other", [JobSpec("echo", id=f"j{n}") for n in range(50)])
        assert len(done) == 50
        later = client.enqueue("other", "echo", delay_ms=60_000, group="g")
        assert client.counts("other") == Counts(50, 1, 0, 0, 0, 0, False)
        assert client.pause("other") and client.resume("other")
        assert client.cancel("other", later) == {later: "cancelled"}
        # A cancelled job is dead-lettered (outcome `cancelled`), so purge finds it.
        assert [j.last_outcome for j in client.dead_letters("other")] == ["cancelled"]
        assert client.purge("other") == [later] and client.replay("other") == []
        assert client.dead_letters("other") == []
        with pytest.raises(InvalidJob):
            client.enqueue("other", "echo", priority=5000)
    finally:
        host.stop()
        client.close()
