"""`transform`: `{"numbers":[1,2,3]}` -> `{"count":3,"sum":6,"max":3}`.

The output is canonical and byte-identical in every language of guest-examples/ (see
guest-examples/README.md): no spaces, keys in that order, integers in decimal, `max` null for
an empty list. Numbers must be integers within +-(2^53 - 1), the range every JSON parser holds
exactly, and so must every partial sum. A payload that is not JSON fails with
"invalid json: ..."; JSON of the wrong shape fails with "invalid input: ...". The payload
`{"spin":true}` busy-loops forever: a handler that only a deadline stops.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import context
from wit_world.imports import wasmq_job_types as types
from wit_world.imports.context import Level

MAX_SAFE = 2**53 - 1
NOT_INTEGERS = 'invalid input: "numbers" must be an array of integers'


def reject_constant(name: str) -> None:
    # Python's json accepts NaN and Infinity; JSON (and the other languages) does not.
    raise ValueError(f"{name} is not JSON")


def as_safe_integer(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and -MAX_SAFE <= value <= MAX_SAFE:
        return value
    return None


class WitWorld(wit_world.WitWorld):
    def handle(self, job: types.Job) -> bytes:
        try:
            doc = json.loads(job.payload.decode("utf-8"), parse_constant=reject_constant)
        # UnicodeDecodeError and JSONDecodeError are ValueErrors; a deeply nested document
        # exhausts the interpreter's recursion limit instead.
        except (ValueError, RecursionError) as e:
            raise Err(types.JobError_Fail(f"invalid json: {e}"))
        if isinstance(doc, dict) and doc.get("spin") is True:
            context.log(Level.WARN, "spinning until the deadline")
            while True:
                pass
        numbers = doc.get("numbers") if isinstance(doc, dict) else None
        if not isinstance(numbers, list):
            raise Err(types.JobError_Fail(NOT_INTEGERS))
        context.progress(50)
        total = 0
        largest = None
        for item in numbers:
            n = as_safe_integer(item)
            if n is None:
                raise Err(types.JobError_Fail(NOT_INTEGERS))
            total += n
            if not -MAX_SAFE <= total <= MAX_SAFE:
                raise Err(types.JobError_Fail("invalid input: sum out of range"))
            largest = n if largest is None else max(largest, n)
        context.log(Level.INFO, f"transform {len(numbers)} numbers")
        context.progress(100)
        max_text = "null" if largest is None else str(largest)
        return f'{{"count":{len(numbers)},"sum":{total},"max":{max_text}}}'.encode()
