"""`notify`: POSTs `{"job": <id>, "payload": <payload>}` to the config value `url`, with the
secret `NOTIFY_TOKEN` as `Authorization: Bearer <token>` (both read through `wasi:config/store`).

A 2xx answer's body is the result; a 5xx asks for a retry, a 4xx fails the job; a request the
host denies fails it. Uses `wasmq_http.py`, shipped beside the examples. The canonical behaviour
every language follows is in guest-examples/README.md.
"""

import json
from typing import Optional

import wit_world
from componentize_py_types import Err
from wit_world.imports import wasi_config_store as store
from wit_world.imports import wasmq_job_types as types

from wasmq_http import RequestFailed, request


def config(key: str) -> Optional[str]:
    """A key the handler version was not given reads as none; so does a store error."""
    try:
        return store.get(key)
    except Err:
        return None


class WitWorld(wit_world.WitWorld):
    def handle(self, job: types.Job) -> bytes:
        url = config("url")
        if url is None:
            raise Err(types.JobError_Fail("no url configured"))
        token = config("NOTIFY_TOKEN")
        if token is None:
            raise Err(types.JobError_Fail("no NOTIFY_TOKEN secret"))
        try:
            payload = json.loads(job.payload.decode("utf-8"))
        except (ValueError, RecursionError) as e:
            raise Err(types.JobError_Fail(f"invalid json: {e}"))
        body = json.dumps({"job": job.id, "payload": payload}, separators=(",", ":"))
        headers = [("content-type", "application/json"), ("authorization", f"Bearer {token}")]
        try:
            status, _, answer = request("POST", url, headers, body.encode())
        except RequestFailed as e:
            error = types.JobError_Fail if e.denied else types.JobError_Retry
            raise Err(error(f"request failed: {e}"))
        if 500 <= status <= 599:
            raise Err(types.JobError_Retry(f"HTTP {status}"))
        if not 200 <= status <= 299:
            raise Err(types.JobError_Fail(f"HTTP {status}"))
        return answer
