"""`echo`: returns the job payload as the result."""

import wit_world
from wit_world.imports import context
from wit_world.imports import wasmq_job_types as types
from wit_world.imports.context import Level


class WitWorld(wit_world.WitWorld):
    def handle(self, job: types.Job) -> bytes:
        context.log(Level.INFO, f"echo {len(job.payload)} bytes")
        context.progress(100)
        return job.payload
