"""Schemathesis hooks for the wasmq API run (tests/all/api.rs): the deploy endpoint takes the
raw bytes of a component (`application/wasm`), which schemathesis has no serializer for."""
import schemathesis


@schemathesis.serializer("application/wasm")
def wasm(ctx, value):
    if isinstance(value, bytes):
        return value
    return str(value).encode()
