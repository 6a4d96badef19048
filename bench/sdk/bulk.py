"""Bulk enqueue through the Python SDK: `python bulk.py URL QUEUE N CHUNK PAYLOAD_BYTES`.
Prints one JSON line: {"sdk": "python", "jobs": N, "seconds": ...} (bench/sdk-bulk.sh)."""

import json
import sys
import time

from wasmq import Client, JobSpec


def main() -> None:
    url, queue, n, chunk, size = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    payload = b"x" * size
    client = Client.from_url(url)
    client.counts(queue)  # connect and load the scripts outside the clock
    t0 = time.perf_counter()
    for done in range(0, n, chunk):
        k = min(chunk, n - done)
        client.enqueue_bulk(queue, [JobSpec("noop", payload) for _ in range(k)])
    seconds = time.perf_counter() - t0
    waiting = client.counts(queue).waiting
    client.close()
    if waiting != n:
        sys.exit(f"bulk.py: {waiting} jobs waiting, expected {n}")
    print(json.dumps({"sdk": "python", "jobs": n, "seconds": seconds}))


if __name__ == "__main__":
    main()
