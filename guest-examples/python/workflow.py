"""`workflow`: durable steps from Python, the same workflow as the Rust `workflow` guest.

Three durable steps, `one`, `two` and `three`, each returning `<name>@<attempt>` (the attempt
that ran it); the result is `one@A,two@B,three@C`. The payload (JSON, all optional):
`{"sleep_ms": N}` sleeps durably (`nap`) for N ms between steps one and two;
`{"fail_two_once": true}` makes step two ask for a retry on attempt 1. A step stored by an
earlier attempt is not run again (see docs/workflows.md).
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import context, workflow
from wit_world.imports import wasmq_job_types as types
from wit_world.imports.context import Level


def step(name: str, run) -> bytes:
    """Step `name`'s stored result, or `run()`'s, stored before it is returned."""
    try:
        stored = workflow.step_get(name)
    except Err as err:
        raise Err(types.JobError_Retry(f"step {name!r}: {err.value}"))
    if stored is not None:
        return stored
    value = run()
    try:
        workflow.step_save(name, value)
    except Err as err:
        raise Err(types.JobError_Retry(f"step {name!r}: {err.value}"))
    return value


def options(payload: bytes) -> dict:
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


class WitWorld(wit_world.WitWorld):
    def handle(self, job: types.Job) -> bytes:
        opts = options(job.payload)
        attempt = job.attempt

        def one() -> bytes:
            context.log(Level.INFO, "running step one")
            return f"one@{attempt}".encode()

        def two() -> bytes:
            context.log(Level.INFO, "running step two")
            if attempt == 1 and opts.get("fail_two_once") is True:
                raise Err(types.JobError_Retry("step two fails on attempt 1, on purpose"))
            return f"two@{attempt}".encode()

        def three() -> bytes:
            context.log(Level.INFO, "running step three")
            return f"three@{attempt}".encode()

        results = [step("one", one)]
        sleep_ms = opts.get("sleep_ms")
        if isinstance(sleep_ms, int) and sleep_ms >= 0:
            try:
                workflow.sleep("nap", sleep_ms)
            except Err as err:
                raise Err(types.JobError_Retry(f"sleep 'nap': {err.value}"))
        results.append(step("two", two))
        results.append(step("three", three))
        return b",".join(results)
