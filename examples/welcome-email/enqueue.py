#!/usr/bin/env python3
"""The welcome-email producer: one `welcome` job per user id, `{"userId": N}` with id
`welcome-<N>`, priority 10, run after a delay; all of them in one atomic call.

    python3 enqueue.py [--redis URL] [--queue emails] [--delay 2s] USER_ID...

Needs the wasmq SDK (`pip install ./sdk/python`). An id that exists is not enqueued again:
the script says so, and running it twice sends nobody a second email.
"""
import argparse
import json
import os
import sys

from wasmq import Client, JobSpec, WasmqError


def duration_ms(text: str) -> int:
    units = {"ms": 1, "s": 1000, "m": 60_000}
    for unit in ("ms", "s", "m"):
        if text.endswith(unit) and text[: -len(unit)].isdigit():
            return int(text[: -len(unit)]) * units[unit]
    raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 500ms, 2s or 1m")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default=os.environ.get("WASMQ_REDIS_URL", "redis://127.0.0.1:6379"))
    parser.add_argument("--queue", default="emails")
    parser.add_argument("--delay", type=duration_ms, default=2000, help="like 2s (default)")
    parser.add_argument("user_ids", nargs="+", type=int, metavar="USER_ID")
    args = parser.parse_args()

    client = Client.from_url(args.redis)
    jobs = [
        JobSpec(
            "welcome",
            json.dumps({"userId": user}),
            id=f"welcome-{user}",
            priority=10,
            delay_ms=args.delay,
        )
        for user in args.user_ids
    ]
    try:
        enqueued = client.enqueue_bulk(args.queue, jobs)
    except WasmqError as e:
        print(f"nothing enqueued: {e}", file=sys.stderr)
        return 1
    for job in enqueued:
        print(job.id if job.created else f"{job.id}: already exists ({job.state})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
