"""`flaky`: fails transiently on attempt 1 and succeeds from attempt 2 on.

Returns `retry` on attempt 1 and `{"attempt":N}` on attempt N >= 2; the payload `{"fail":true}`
fails permanently on any attempt.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import context
from wit_world.imports import wasmq_job_types as types
from wit_world.imports.context import Level


def asks_to_fail(payload: bytes) -> bool:
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and doc.get("fail") is True


class WitWorld(wit_world.WitWorld):
    def handle(self, job: types.Job) -> bytes:
        context.log(Level.INFO, f"flaky attempt {job.attempt} of {job.max_attempts}")
        if asks_to_fail(job.payload):
            context.log(Level.ERROR, "the payload asks to fail")
            raise Err(types.JobError_Fail("failed on purpose: the payload asks to fail"))
        if job.attempt <= 1:
            context.progress(0)
            raise Err(types.JobError_Retry("attempt 1 fails on purpose; retry me"))
        context.progress(100)
        return f'{{"attempt":{job.attempt}}}'.encode()
