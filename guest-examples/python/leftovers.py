"""`leftovers`: looks for anything an earlier job left behind in this instance, then leaves
marks of its own for the next job to find.

It counts its calls in a module global, scans a 256 KiB module-level `bytearray` (made when
the component was built, so it lies in the memory image) for the 8-byte mark `LEFTOVER`, which
it then writes all over it, and looks for an attribute it sets on the `builtins` module and for
entries it adds to a module-level dict (both on the interpreter's heap). The result is
`calls=<n> buffer=<marks found> builtins=<0|1> dict=<entries found>`: every job in a fresh
instance must see `calls=1 buffer=0 builtins=0 dict=0`, however many jobs ran in the same
pool slot before it.
"""

import builtins

import wit_world
from wit_world.imports import wasmq_job_types as types

MARK = b"LEFTOVER"
BUFFER = bytearray(256 * 1024)
SEEN: dict[int, bytes] = {}
CALLS = 0


class WitWorld(wit_world.WitWorld):
    def handle(self, job: types.Job) -> bytes:
        global CALLS
        CALLS += 1
        found = BUFFER.count(MARK)
        BUFFER[:] = MARK * (len(BUFFER) // len(MARK))
        left_in_builtins = int(hasattr(builtins, "wasmq_leftover"))
        builtins.wasmq_leftover = job.payload  # type: ignore[attr-defined]
        in_dict = len(SEEN)
        for i in range(1000):
            SEEN[i] = MARK * 16
        return f"calls={CALLS} buffer={found} builtins={left_in_builtins} dict={in_dict}".encode()
