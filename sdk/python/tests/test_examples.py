"""The producers of examples/ that use this SDK, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from wasmq import Client
from conftest import REPO


def run_example(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "examples" / script), *args],
        capture_output=True, text=True, timeout=60, env=dict(os.environ),
    )


def test_welcome_email_enqueue_py_writes_one_delayed_job_per_user_once(
        client: Client, server, queue: str) -> None:
    before_ms = int(time.time() * 1000)
    first = run_example("welcome-email/enqueue.py", "--redis", server.url, "--queue", queue,
                        "--delay", "60s", "1", "2")
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["welcome-1", "welcome-2"]
    for user in (1, 2):
        job = client.get_job(queue, f"welcome-{user}")
        assert job is not None
        assert job.handler == "welcome"
        assert json.loads(job.payload) == {"userId": user}
        assert job.priority == 10
        assert job.state == "delayed"
        assert job.run_at_ms is not None and job.run_at_ms >= before_ms + 59_000

    again = run_example("welcome-email/enqueue.py", "--redis", server.url, "--queue", queue,
                        "--delay", "60s", "2", "3")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == ["welcome-2: already exists (delayed)", "welcome-3"]
    assert client.counts(queue).delayed == 3


def test_welcome_email_enqueue_py_refuses_a_bad_delay_and_writes_nothing(
        client: Client, server, queue: str) -> None:
    bad = run_example("welcome-email/enqueue.py", "--redis", server.url, "--queue", queue,
                      "--delay", "soon", "1")
    assert bad.returncode == 2
    assert "not a duration" in bad.stderr
    assert client.get_job(queue, "welcome-1") is None
