"""The harness: a private redis-server on a free loopback port, and a real `wasmq run` host
serving the queues the tests run jobs on, with the Rust example handlers.

Needs WASMQ_BIN (the wasmq binary) and WASMQ_RUST_GUESTS (the folder of the Rust example
components, guest-examples/rust/target/wasm32-wasip2/release); scripts/test.sh sets both."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional, TypeVar

import pytest
import redis

from wasmq import Client

REPO = Path(__file__).resolve().parents[3]
#: Queues the host serves; the others are left alone, so their counts are the tests' own.
SERVED = ("py", "py-pause", "py-dlq")
HANDLERS = ("echo", "fail", "panic", "sleep")
T = TypeVar("T")


def free_port(below: int = 65536) -> int:
    # redis 7.0 has no `--port 0`: take a port the kernel gives, then free it for the server.
    # A cluster node also listens on its port + 10000 (the cluster bus), hence `below`.
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < below:
            return port


def need(var: str) -> str:
    value = os.environ.get(var)
    if not value:
        pytest.fail(f"{var} is not set: run the suite with scripts/test.sh (or see conftest.py)")
    return value


def eventually(what: str, probe: Callable[[], Optional[T]], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class RedisServer:
    def __init__(self, extra: List[str] = (), port: Optional[int] = None) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is missing: bash scripts/install-deps.sh")
        self.dir = tempfile.TemporaryDirectory()
        cluster = "--cluster-enabled" in extra
        self.port = port or free_port(below=55536 if cluster else 65536)
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir.name, *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        conn = redis.Redis(port=self.port)
        eventually("redis-server to answer", lambda: _ping(conn), timeout=10)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.dir.cleanup()


def _ping(conn: redis.Redis) -> Optional[bool]:
    try:
        return conn.ping() or None
    except redis.ConnectionError:
        return None


class Host:
    """A `wasmq run` process; its log is printed when a test fails with it running."""

    def __init__(self, url: str, queues: List[str], handlers: List[str]) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.log = Path(self.dir.name) / "host.log"
        args = [need("WASMQ_BIN"), "run", "--redis", url, "--queues", ",".join(queues),
                "--concurrency", "4"]
        for handler in handlers:
            args += ["--handler", handler]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=log,
                                            env={**os.environ, "RUST_LOG": "info"})

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.dir.cleanup()


def rust_guest(name: str) -> str:
    path = Path(need("WASMQ_RUST_GUESTS")) / f"{name.replace('-', '_')}.wasm"
    if not path.exists():
        pytest.fail(f"{path} is missing: bash guest-examples/rust/build.sh")
    return f"{name}={path}"


@pytest.fixture(scope="session")
def server() -> Iterator[RedisServer]:
    s = RedisServer()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def host(server: RedisServer) -> Iterator[Host]:
    h = Host(server.url, list(SERVED), [rust_guest(n) for n in HANDLERS])
    yield h
    h.stop()


@pytest.fixture
def client(server: RedisServer) -> Iterator[Client]:
    c = Client.from_url(server.url)
    yield c
    c.close()


@pytest.fixture
def queue(request: pytest.FixtureRequest) -> str:
    """A queue of this test's own, which no host serves."""
    return "t-" + re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:100]


class Cluster:
    """A private 3-primary Redis Cluster on loopback ports, as `redis+cluster://` URL."""

    def __init__(self) -> None:
        self.nodes = [RedisServer(["--cluster-enabled", "yes", "--cluster-config-file",
                                   "nodes.conf", "--cluster-node-timeout", "2000"])
                      for _ in range(3)]
        subprocess.run(["redis-cli", "--cluster", "create",
                        *[f"127.0.0.1:{n.port}" for n in self.nodes],
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for node in self.nodes:
            conn = redis.Redis(port=node.port)
            eventually("the cluster to form",
                       lambda: b"cluster_state:ok" in conn.execute_command("CLUSTER", "INFO")
                       or None, timeout=30)
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    yield c
    c.stop()
