"""A small blocking HTTP client over componentize-py's `wasi:http` bindings, for wasmq handlers.

Ship it beside the handler (it is imported as a module of the app); it needs the world
`wasmq:job/handler@0.1.2` or later, which imports `wasi:http/outgoing-handler`.

    from wasmq_http import request, RequestFailed
    status, headers, body = request("POST", url, [("content-type", "application/json")], data)

A request the handler version is not granted raises `RequestFailed` with `denied` true (the
host's `HttpRequestDenied`); a request that gets an answer returns it, whatever its status.
"""

from typing import List, Optional, Tuple
from urllib.parse import urlsplit

from componentize_py_types import Err, Ok
from wit_world.imports import outgoing_handler
from wit_world.imports import wasi_http_types as http
from wit_world.imports.streams import StreamError_Closed

# What the host answers for a request it refuses: not granted, or an address it may not reach.
_DENIALS = (http.ErrorCode_HttpRequestDenied, http.ErrorCode_DestinationIpProhibited)

_METHODS = {
    "GET": http.Method_Get,
    "HEAD": http.Method_Head,
    "POST": http.Method_Post,
    "PUT": http.Method_Put,
    "DELETE": http.Method_Delete,
    "OPTIONS": http.Method_Options,
    "PATCH": http.Method_Patch,
}


class RequestFailed(Exception):
    """No answer: denied by the host, or the request failed (the `wasi:http` error code)."""

    def __init__(self, code: object) -> None:
        self.code = code
        self.denied = isinstance(code, _DENIALS)
        super().__init__(type(code).__name__.removeprefix("ErrorCode_") + _detail(code))


def _detail(code: object) -> str:
    value = getattr(code, "value", None)
    return f" ({value})" if value is not None else ""


def _unwrap(result: object) -> object:
    """The value of an `Ok`, raising `RequestFailed` for an `Err` holding an error code."""
    if isinstance(result, Err):
        raise RequestFailed(result.value)
    if isinstance(result, Ok):
        return result.value
    return result


def request(
    method: str,
    url: str,
    headers: Optional[List[Tuple[str, str]]] = None,
    body: bytes = b"",
) -> Tuple[int, List[Tuple[str, bytes]], bytes]:
    """Sends one request and reads the whole answer: `(status, headers, body)`."""
    parts = urlsplit(url)
    fields = http.Fields.from_list([(k, v.encode()) for k, v in (headers or [])])
    req = http.OutgoingRequest(fields)
    method_class = _METHODS.get(method.upper())
    req.set_method(method_class() if method_class else http.Method_Other(method))
    if parts.scheme == "http":
        req.set_scheme(http.Scheme_Http())
    elif parts.scheme == "https":
        req.set_scheme(http.Scheme_Https())
    else:
        req.set_scheme(http.Scheme_Other(parts.scheme))
    req.set_authority(parts.netloc)
    req.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))

    outgoing = req.body()
    try:
        future = outgoing_handler.handle(req, None)
    except Err as err:
        raise RequestFailed(err.value) from None
    with outgoing.write() as stream:
        for start in range(0, len(body), 4096):
            stream.blocking_write_and_flush(body[start : start + 4096])
    http.OutgoingBody.finish(outgoing, None)

    with future:
        while True:
            ready = future.get()
            if ready is not None:
                break
            with future.subscribe() as pollable:
                pollable.block()
        response = _unwrap(_unwrap(ready))

    with response:
        status = response.status()
        with response.headers() as fields:
            answer_headers = fields.entries()
        incoming = response.consume()
        chunks = []
        with incoming.stream() as stream:
            while True:
                try:
                    chunks.append(stream.blocking_read(65536))
                except Err as err:
                    if isinstance(err.value, StreamError_Closed):
                        break
                    raise RequestFailed(err.value) from None
        http.IncomingBody.finish(incoming).__exit__(None, None, None)
    return status, answer_headers, b"".join(chunks)
