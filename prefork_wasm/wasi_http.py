"""The wasi:http/proxy host: serve a component that exports `wasi:http/incoming-handler@0.2.x`.

wasmtime-py links only wasmtime's outbound half of wasi:http, and resources made in Python do
not match the ones its http code makes. So this host defines, in Python, every interface that
touches streams or pollables (wasi:io, wasi:http, the monotonic clock, stdio, and refusals for
the filesystem and sockets), on top of wasmtime's own WASI 0.2 for the rest (environment,
arguments, random, wall clock, exit). See component_host.py for how the calls cross.

Per request: the request becomes an `incoming-request` (method, path with query, scheme,
authority, fields as wasmtime serve gives them, the body as a stream), the guest's `handle`
runs in a fresh instance, and the `outgoing-response` it set becomes the server's response.
The body the guest writes is held (bounded by LimitResponseBody), so the server answers with
its length, or with an error status if the guest fails part way. A guest waiting on a pollable
is bounded by WasmTimeout as one running is; stdout and stderr go to the error log.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import wasmtime
from wasmtime.component import Component

from . import outbound
from .component_host import (
    Err,
    Implementation,
    Linked,
    Ok,
    call_with_resources,
    ignores_arguments,
    link_component,
)
from .messages import TCHAR, Request, Response
from .wasi_filesystem import Filesystem, Mount

HANDLER_PREFIX = "wasi:http/incoming-handler@0.2."

# Fields wasmtime keeps from guests in both directions (its DEFAULT_FORBIDDEN_HEADERS): a guest
# cannot set them, and they are removed from what it is given. The server frames the response.
FORBIDDEN = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "transfer-encoding", "upgrade", "host", "http2-settings",
})
# What a field value may hold (http's HeaderValue): visible ASCII, space, tab and obs-text.
_VALUE_BYTES = bytes([9, *range(0x20, 0x7F), *range(0x80, 0x100)])
_METHODS = {"GET": "get", "HEAD": "head", "POST": "post", "PUT": "put", "DELETE": "delete",
            "CONNECT": "connect", "OPTIONS": "options", "TRACE": "trace", "PATCH": "patch"}
_METHOD_NAMES = {case: name for name, case in _METHODS.items()}
# How much the guest may write in one call (output-stream.check-write).
WRITE_BUDGET = 1 << 20
# Guest stdout and stderr kept for the error log.
LOG_LIMIT = 64 * 1024


class Stopped(Exception):
    """The host stopped the guest from a host call: 'timeout' or 'too-large' (the runtime maps it)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class ResponseError(Exception):
    """The guest's response cannot be sent: `status` says how the server answers instead."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


# ----------------------------------------------------------------------------- host objects

class Fields:
    """A field map with wasmtime's semantics: lowercased names, each name's values together in
    the order its first value came."""

    __slots__ = ("immutable", "map")

    def __init__(self, entries: Iterable[tuple[str, bytes]] = (), immutable: bool = False) -> None:
        self.map: dict[str, list[bytes]] = {}
        for name, value in entries:
            self.map.setdefault(name, []).append(value)
        self.immutable = immutable

    def entries(self) -> list[tuple[str, bytes]]:
        return [(name, value) for name, values in self.map.items() for value in values]

    def copy(self, immutable: bool) -> Fields:
        fields = Fields(immutable=immutable)
        fields.map = {name: list(values) for name, values in self.map.items()}
        return fields


def _check_name(name: str) -> str:
    """The field name lowercased, or raise Err with the header-error a guest gets."""
    encoded = name.encode("utf-8", "replace")
    if not encoded or encoded.translate(None, TCHAR):
        raise Err("invalid-syntax")
    lowered = name.lower()
    if lowered in FORBIDDEN:
        raise Err("forbidden")
    return lowered


def _check_value(value: bytes) -> bytes:
    if value.translate(None, _VALUE_BYTES):
        raise Err("invalid-syntax")
    return value


class IoError:
    """wasi:io/error's error: a message, and the HTTP error-code behind it if there is one."""

    __slots__ = ("code", "message")

    def __init__(self, message: str, code: Any = None) -> None:
        self.message = message
        self.code = code


class Pollable:
    """Ready at once (data in memory, writes that are only counted) unless a subclass says otherwise."""

    __slots__ = ()

    def ready(self) -> bool:
        return True

    def wake_at(self) -> float:
        """time.monotonic() at which it becomes ready if nothing else happens."""
        return 0.0


_READY = Pollable()


class Timer(Pollable):
    __slots__ = ("when",)

    def __init__(self, when_ns: int) -> None:
        self.when = when_ns / 1e9

    def ready(self) -> bool:
        return time.monotonic() >= self.when

    def wake_at(self) -> float:
        return self.when


class InputStream:
    """What a guest reads: `read` gives up to n bytes, or raises Err('closed') at the end."""

    __slots__ = ()

    def read(self, n: int) -> bytes:
        raise NotImplementedError


class BytesInput(InputStream):
    """Bytes already in memory (a request body, an upstream's response body, empty stdin)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def read(self, n: int) -> bytes:
        if self.pos >= len(self.data):
            raise Err("closed")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += len(chunk)
        return chunk


class OutputStream:
    """Where a guest writes: a body, or its stdout/stderr (to the error log)."""

    __slots__ = ("sink",)

    def __init__(self, sink: Any) -> None:
        self.sink = sink  # a Sink, or anything that takes writes as one (wasi_filesystem.FileSink)


class Sink:
    """Collects written bytes up to a limit; over it, `over` says what happens."""

    __slots__ = ("chunks", "closed", "limit", "over", "size")

    def __init__(self, limit: int, over: Callable[[int], None]) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.limit = limit
        self.over = over
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.closed:
            raise Err("closed")
        self.size += len(data)
        if self.limit and self.size > self.limit:
            self.over(self.size)
            return
        self.chunks.append(data)

    def value(self) -> bytes:
        return b"".join(self.chunks)


class _LogSink(Sink):
    """The guest's stdout or stderr: kept for the error log, up to LOG_LIMIT."""

    __slots__ = ("exchange",)

    def __init__(self, exchange: Exchange) -> None:
        super().__init__(0, _never)
        self.exchange = exchange

    def write(self, data: bytes) -> None:
        self.exchange.write_output(data)


def _never(size: int) -> None:
    raise AssertionError("a sink without a limit passed it")


class OutgoingBody:
    __slots__ = ("finished", "sink", "taken")

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.taken = False
        self.finished = False


@dataclass(slots=True)
class IncomingRequest:
    method: str
    path_with_query: str | None
    scheme: str
    authority: str | None
    headers: Fields
    body: bytes
    consumed: bool = False


class IncomingBody:
    __slots__ = ("stream",)

    def __init__(self, data: bytes) -> None:
        self.stream: InputStream | None = BytesInput(data)


@dataclass(slots=True)
class OutgoingResponse:
    headers: Fields
    status: int = 200
    body: OutgoingBody | None = None


@dataclass(slots=True)
class ResponseOutparam:
    exchange: Exchange


@dataclass(slots=True)
class OutgoingRequest:
    headers: Fields
    method: str = "GET"
    scheme: str | None = None
    authority: str | None = None
    path_with_query: str | None = None
    body: OutgoingBody | None = None


@dataclass(slots=True)
class RequestOptions:
    connect: int | None = None  # nanoseconds
    first_byte: int | None = None
    between_bytes: int | None = None


@dataclass(slots=True)
class IncomingResponse:
    status: int
    headers: Fields
    body: bytes
    consumed: bool = False


class FutureIncomingResponse(Pollable):
    """An outbound request, made when the guest first waits for or asks for its response."""

    __slots__ = ("options", "request", "result", "taken")

    def __init__(self, request: OutgoingRequest, options: RequestOptions | None) -> None:
        self.request = request
        self.options = options
        self.result: Any = None  # Ok(IncomingResponse) or Err(error-code) once made
        self.taken = False

    def ready(self) -> bool:
        return self.result is not None


class FutureTrailers:
    __slots__ = ()


# ----------------------------------------------------------------------------- one request

@dataclass
class Exchange:
    """One request's crossing into the guest and back."""

    request: IncomingRequest
    body_limit: int  # LimitResponseBody (0: none)
    deadline: float = 0.0  # time.monotonic() when WasmTimeout ends (set by the runtime)
    mounts: Sequence[Mount] = ()  # WasmDir and WasmMapDir (set by the runtime)
    policy: outbound.Policy = field(default_factory=outbound.Policy)
    log: Callable[[str], None] = field(default=lambda text: None)  # one error-log line about this request
    response: OutgoingResponse | None = None
    error_code: Any = None  # what the guest set instead of a response
    output: bytearray = field(default_factory=bytearray)  # the guest's stdout and stderr
    output_dropped: int = 0

    def remaining(self) -> float:
        """Seconds left of WasmTimeout; Stopped when none are."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Stopped("timeout", "WasmTimeout reached while the guest waited in a host call")
        return left

    def sleep_until(self, when: float) -> None:
        """Wait for a pollable: never past WasmTimeout."""
        now = time.monotonic()
        if when >= self.deadline:
            time.sleep(max(0.0, self.deadline - now))
            self.remaining()
        elif when > now:
            time.sleep(when - now)

    def body_sink(self) -> Sink:
        def too_large(size: int) -> None:
            raise Stopped("too-large", f"the response body passes LimitResponseBody {self.body_limit}")
        return Sink(self.body_limit, too_large)

    def write_output(self, data: bytes) -> None:
        room = LOG_LIMIT - len(self.output)
        self.output += data[:room]
        self.output_dropped += max(0, len(data) - room)

    def stderr_text(self) -> bytes:
        """What the guest wrote to stdout and stderr, for the error log."""
        if self.output_dropped:
            return bytes(self.output) + b"\n[%d more bytes of output not logged]" % self.output_dropped
        return bytes(self.output)


def incoming_request(request: Request, scheme: str = "http") -> IncomingRequest:
    """The request as the guest sees it, as wasmtime serve gives it: the target's path and query
    (an absolute-form target's too), the authority from the target or else the Host field, and
    the fields without the forbidden ones, each name's values together."""
    target = request.target
    authority = None
    if not target.startswith("/") and "://" in target:  # absolute-form
        rest = target.split("://", 1)[1]
        authority, slash, path = rest.partition("/")
        target = slash + path if slash else "/"
    headers = Fields((name.decode("latin-1"), value) for name, value in request.headers
                     if name.decode("latin-1") not in FORBIDDEN)
    headers.immutable = True
    if authority is None:
        host = request.header(b"host")
        authority = host.decode("latin-1") if host else None
    return IncomingRequest(request.method, target, scheme, authority, headers, request.body)


def response_of(exchange: Exchange) -> Response:
    """The guest's response as the server's, or ResponseError. Field names and values were
    checked as the guest set them; the framing (content-length) is the server's."""
    response = exchange.response
    if response is None:
        if exchange.error_code is not None:
            raise ResponseError(500, f"the component answered with error {_code_text(exchange.error_code)}")
        raise ResponseError(500, "the component returned without setting a response")
    if not 200 <= response.status <= 599:
        raise ResponseError(502, f"the component set status {response.status}; a final response needs 200-599")
    body = b""
    if response.body is not None:
        if not response.body.finished:
            raise ResponseError(502, "the component did not finish its response body (outgoing-body.finish)")
        body = response.body.sink.value()
    declared = response.headers.map.get("content-length")
    if declared is not None and declared != [str(len(body)).encode()]:
        raise ResponseError(502, f"the component declared content-length {b', '.join(declared).decode('latin-1')} "
                                 f"but wrote {len(body)} bytes")
    fields = [(name.encode(), value) for name, values in response.headers.map.items()
              if name != "content-length" for value in values]
    return Response(response.status, fields, body)


def _code_text(code: Any) -> str:
    if isinstance(code, tuple):
        return f"{code[0]}({code[1]!r})"
    return str(code)


# ----------------------------------------------------------------------------- the interfaces

class Host:
    """The Python half of the interfaces, for one component in one worker; `exchange` is the
    request in flight."""

    def __init__(self) -> None:
        self.exchange: Exchange | None = None
        self.fs = Filesystem(OutputStream)

    @property
    def x(self) -> Exchange:
        assert self.exchange is not None, "a host function was called outside a request"
        return self.exchange

    # --- wasi:io/poll
    def poll(self, pollables: list[Pollable]) -> list[int]:
        while True:
            ready = [i for i, p in enumerate(pollables) if p.ready()]
            if ready:
                return ready
            self._wait(pollables)

    def block(self, pollable: Pollable) -> None:
        while not pollable.ready():
            self._wait([pollable])

    def _wait(self, pollables: list[Pollable]) -> None:
        """None is ready: make a pending outbound request, else sleep to the first timer."""
        for p in pollables:
            if isinstance(p, FutureIncomingResponse):
                self._send(p)
                return
        self.x.sleep_until(min(p.wake_at() for p in pollables))

    # --- wasi:io/streams
    def read(self, stream: InputStream, n: int) -> bytes:
        return stream.read(n)

    def skip(self, stream: InputStream, n: int) -> int:
        return len(stream.read(n))

    def check_write(self, stream: OutputStream) -> int:
        if stream.sink.closed:
            raise Err("closed")
        return WRITE_BUDGET

    def write(self, stream: OutputStream, data: bytes) -> None:
        stream.sink.write(data)

    def write_zeroes(self, stream: OutputStream, n: int) -> None:
        stream.sink.write(bytes(n))

    def flush(self, stream: OutputStream) -> None:
        if stream.sink.closed:
            raise Err("closed")

    def splice(self, stream: OutputStream, source: InputStream, n: int) -> int:
        data = source.read(n)
        stream.sink.write(data)
        return len(data)

    # --- wasi:http/types: fields
    def fields_from_list(self, entries: list[tuple[str, bytes]]) -> Fields:
        return Fields((_check_name(name), _check_value(value)) for name, value in entries)

    def fields_get(self, fields: Fields, name: str) -> list[bytes]:
        return list(fields.map.get(name.lower(), ()))

    def fields_has(self, fields: Fields, name: str) -> bool:
        return name.lower() in fields.map

    def fields_set(self, fields: Fields, name: str, values: list[bytes]) -> None:
        if fields.immutable:
            raise Err("immutable")
        key = _check_name(name)
        checked = [_check_value(v) for v in values]
        if checked:
            fields.map[key] = checked
        else:
            fields.map.pop(key, None)

    def fields_delete(self, fields: Fields, name: str) -> None:
        if fields.immutable:
            raise Err("immutable")
        fields.map.pop(_check_name(name), None)

    def fields_append(self, fields: Fields, name: str, value: bytes) -> None:
        if fields.immutable:
            raise Err("immutable")
        fields.map.setdefault(_check_name(name), []).append(_check_value(value))

    # --- incoming-request, incoming-body
    def request_method(self, request: IncomingRequest | OutgoingRequest) -> Any:
        case = _METHODS.get(request.method)
        return case if case is not None else ("other", request.method)

    def request_scheme(self, request: IncomingRequest | OutgoingRequest) -> Any:
        scheme = request.scheme
        if scheme is None:
            return None
        return {"http": "HTTP", "https": "HTTPS"}.get(scheme) or ("other", scheme)

    def request_consume(self, request: IncomingRequest) -> IncomingBody:
        if request.consumed:
            raise Err()
        request.consumed = True
        return IncomingBody(request.body)

    def body_stream(self, body: IncomingBody) -> InputStream:
        stream, body.stream = body.stream, None
        if stream is None:
            raise Err()
        return stream

    # --- outgoing-response, outgoing-body, response-outparam
    def set_status(self, response: OutgoingResponse, status: int) -> None:
        if not 100 <= status <= 999:
            raise Err()
        response.status = status

    def response_body(self, response: OutgoingResponse) -> OutgoingBody:
        if response.body is not None:
            raise Err()
        response.body = OutgoingBody(self.x.body_sink())
        return response.body

    def body_write(self, body: OutgoingBody) -> OutputStream:
        if body.taken:
            raise Err()
        body.taken = True
        return OutputStream(body.sink)

    def body_finish(self, body: OutgoingBody, trailers: Fields | None) -> None:
        body.finished = True
        body.sink.closed = True

    def outparam_set(self, outparam: ResponseOutparam, result: Ok | Err) -> None:
        exchange = outparam.exchange
        if isinstance(result, Ok):
            exchange.response = result.value
        else:
            exchange.error_code = result.value

    # --- outgoing-request, request-options
    def set_method(self, request: OutgoingRequest, method: Any) -> None:
        name = method[1] if isinstance(method, tuple) else _METHOD_NAMES[method]
        if not name or name.encode().translate(None, TCHAR):
            raise Err()
        request.method = name

    def set_scheme(self, request: OutgoingRequest, scheme: Any) -> None:
        if scheme is None:
            request.scheme = None
            return
        name = scheme[1] if isinstance(scheme, tuple) else scheme.lower()
        if not name or name.encode().translate(None, TCHAR):
            raise Err()
        request.scheme = name

    def set_authority(self, request: OutgoingRequest, authority: str | None) -> None:
        if authority is not None and any(c in authority for c in "/?# \t\r\n"):
            raise Err()
        request.authority = authority

    def set_path(self, request: OutgoingRequest, path: str | None) -> None:
        if path is not None and any(c in path for c in " \t\r\n#"):
            raise Err()
        request.path_with_query = path

    def request_body(self, request: OutgoingRequest) -> OutgoingBody:
        if request.body is not None:
            raise Err()
        limit = self.x.policy.max_body

        def too_large(size: int) -> None:
            raise Err(("last-operation-failed", IoError(f"request body passes WasmOutboundLimit {limit}")))
        request.body = OutgoingBody(Sink(limit, too_large))
        return request.body

    # --- outgoing-handler, future-incoming-response, incoming-response
    def outgoing_handle(self, request: OutgoingRequest, options: RequestOptions | None) -> FutureIncomingResponse:
        exchange = self.x
        scheme = request.scheme or "https"
        if scheme not in outbound.DEFAULT_PORTS:
            raise Err("HTTP-protocol-error")
        if not request.authority:
            raise Err("HTTP-request-URI-invalid")
        try:
            host, port = outbound.split_authority(request.authority, scheme)
        except ValueError:
            raise Err("HTTP-request-URI-invalid") from None
        if not exchange.policy.allows(scheme, host, port):
            exchange.log(f"outbound request to {scheme}://{request.authority} denied: no WasmAllowOutbound allows it")
            raise Err("HTTP-request-denied")
        return FutureIncomingResponse(request, options)

    def _send(self, future: FutureIncomingResponse) -> None:
        """Make the request now (once); its outcome is the future's result."""
        if future.result is not None:
            return
        exchange, request = self.x, future.request
        scheme = request.scheme or "https"
        host, port = outbound.split_authority(request.authority or "", scheme)
        policy, options = exchange.policy, future.options or RequestOptions()
        left = exchange.remaining()

        def phase(ns: int | None) -> float:
            return min(policy.timeout, ns / 1e9 if ns is not None else policy.timeout)
        timeouts = outbound.Timeouts(phase(options.connect), phase(options.first_byte), phase(options.between_bytes),
                                     deadline=time.monotonic() + left)
        body = request.body.sink.value() if request.body is not None else b""
        try:
            upstream = outbound.fetch(
                scheme, host, port, request.authority or "", request.method, request.path_with_query or "/",
                request.headers.entries(), body, timeouts, policy.max_body,
            )
        except outbound.OutboundError as e:
            exchange.log(f"outbound request to {scheme}://{request.authority} failed: {e}")
            exchange.remaining()  # past WasmTimeout, the guest stops rather than sees an error
            future.result = Err(e.code)
            return
        headers = Fields(((n, v) for n, v in upstream.headers if n not in FORBIDDEN), immutable=True)
        future.result = Ok(IncomingResponse(upstream.status, headers, upstream.body))

    def future_get(self, future: FutureIncomingResponse) -> Any:
        if future.result is None:
            return None
        if future.taken:
            return Err()
        future.taken = True
        return Ok(future.result)

    def response_consume(self, response: IncomingResponse) -> IncomingBody:
        if response.consumed:
            raise Err()
        response.consumed = True
        return IncomingBody(response.body)

    # --- stdio
    def log_stream(self) -> OutputStream:
        return OutputStream(_LogSink(self.x))

    def implementations(self) -> dict[str, Implementation]:
        """Each Python-defined interface (name without version) -> function name -> function."""
        no_trailers: Callable[..., Any] = lambda f: Ok(Ok(None))
        options_get = {"connect": lambda o: o.connect, "first-byte": lambda o: o.first_byte,
                       "between-bytes": lambda o: o.between_bytes}
        http_types: dict[str, Callable[..., Any]] = {
            "[constructor]fields": lambda: Fields(),
            "[static]fields.from-list": self.fields_from_list,
            "[method]fields.get": self.fields_get,
            "[method]fields.has": self.fields_has,
            "[method]fields.set": self.fields_set,
            "[method]fields.delete": self.fields_delete,
            "[method]fields.append": self.fields_append,
            "[method]fields.entries": lambda f: f.entries(),
            "[method]fields.clone": lambda f: f.copy(immutable=False),
            "[method]incoming-request.method": self.request_method,
            "[method]incoming-request.path-with-query": lambda r: r.path_with_query,
            "[method]incoming-request.scheme": self.request_scheme,
            "[method]incoming-request.authority": lambda r: r.authority,
            "[method]incoming-request.headers": lambda r: r.headers.copy(immutable=True),
            "[method]incoming-request.consume": self.request_consume,
            "[constructor]outgoing-request": lambda headers: OutgoingRequest(headers),
            "[method]outgoing-request.body": self.request_body,
            "[method]outgoing-request.method": self.request_method,
            "[method]outgoing-request.set-method": self.set_method,
            "[method]outgoing-request.path-with-query": lambda r: r.path_with_query,
            "[method]outgoing-request.set-path-with-query": self.set_path,
            "[method]outgoing-request.scheme": self.request_scheme,
            "[method]outgoing-request.set-scheme": self.set_scheme,
            "[method]outgoing-request.authority": lambda r: r.authority,
            "[method]outgoing-request.set-authority": self.set_authority,
            "[method]outgoing-request.headers": lambda r: r.headers.copy(immutable=True),
            "[constructor]request-options": lambda: RequestOptions(),
            **{f"[method]request-options.{name}-timeout": get for name, get in options_get.items()},
            "[method]request-options.set-connect-timeout": lambda o, d: setattr(o, "connect", d),
            "[method]request-options.set-first-byte-timeout": lambda o, d: setattr(o, "first_byte", d),
            "[method]request-options.set-between-bytes-timeout": lambda o, d: setattr(o, "between_bytes", d),
            "[static]response-outparam.set": self.outparam_set,
            "[method]incoming-response.status": lambda r: r.status,
            "[method]incoming-response.headers": lambda r: r.headers.copy(immutable=True),
            "[method]incoming-response.consume": self.response_consume,
            "[method]incoming-body.stream": self.body_stream,
            "[static]incoming-body.finish": lambda body: FutureTrailers(),
            "[method]future-trailers.subscribe": lambda f: _READY,
            "[method]future-trailers.get": no_trailers,
            "[constructor]outgoing-response": lambda headers: OutgoingResponse(headers),
            "[method]outgoing-response.status-code": lambda r: r.status,
            "[method]outgoing-response.set-status-code": self.set_status,
            "[method]outgoing-response.headers": lambda r: r.headers.copy(immutable=True),
            "[method]outgoing-response.body": self.response_body,
            "[method]outgoing-body.write": self.body_write,
            "[static]outgoing-body.finish": self.body_finish,
            "[method]future-incoming-response.subscribe": lambda f: f,
            "[method]future-incoming-response.get": self.future_get,
            "http-error-code": lambda e: e.code,
        }
        streams: dict[str, Callable[..., Any]] = {
            "[method]input-stream.read": self.read,
            "[method]input-stream.blocking-read": self.read,
            "[method]input-stream.skip": self.skip,
            "[method]input-stream.blocking-skip": self.skip,
            "[method]input-stream.subscribe": lambda s: _READY,
            "[method]output-stream.check-write": self.check_write,
            "[method]output-stream.write": self.write,
            "[method]output-stream.blocking-write-and-flush": self.write,
            "[method]output-stream.flush": self.flush,
            "[method]output-stream.blocking-flush": self.flush,
            "[method]output-stream.subscribe": lambda s: _READY,
            "[method]output-stream.write-zeroes": self.write_zeroes,
            "[method]output-stream.blocking-write-zeroes-and-flush": self.write_zeroes,
            "[method]output-stream.splice": self.splice,
            "[method]output-stream.blocking-splice": self.splice,
        }
        return {
            "wasi:io/error": {"[method]error.to-debug-string": lambda e: e.message},
            "wasi:io/poll": {
                "[method]pollable.ready": lambda p: p.ready(),
                "[method]pollable.block": self.block,
                "poll": self.poll,
            },
            "wasi:io/streams": streams,
            "wasi:http/types": http_types,
            "wasi:http/outgoing-handler": {"handle": self.outgoing_handle},
            "wasi:clocks/monotonic-clock": {
                "now": time.monotonic_ns,
                "resolution": lambda: 1,
                "subscribe-instant": Timer,
                "subscribe-duration": lambda d: Timer(time.monotonic_ns() + d),
            },
            "wasi:cli/stdin": {"get-stdin": lambda: BytesInput(b"")},
            "wasi:cli/stdout": {"get-stdout": self.log_stream},
            "wasi:cli/stderr": {"get-stderr": self.log_stream},
            **self.fs.implementations(),
            **REFUSED,
        }


def _refusal(name: str, code: str | None) -> Callable[..., Any]:
    """A function a guest may import but that this host does not offer: it answers `code` (a
    result's error), or traps naming itself."""
    if code is None:
        def trap() -> None:
            raise NotImplementedError(f"{name}: not offered to wasi:http components")
        return ignores_arguments(trap)

    def refuse() -> None:
        raise Err(code)
    return ignores_arguments(refuse)


# The sockets share wasi:io's streams and pollables, so they are defined here too: there is no
# network; their functions answer as wasmtime does without one (access-denied), or trap.
_TCP = (
    "start-bind", "finish-bind", "start-connect", "finish-connect", "start-listen", "finish-listen", "accept",
    "local-address", "remote-address", "is-listening", "address-family", "set-listen-backlog-size",
    "keep-alive-enabled", "set-keep-alive-enabled", "keep-alive-idle-time", "set-keep-alive-idle-time",
    "keep-alive-interval", "set-keep-alive-interval", "keep-alive-count", "set-keep-alive-count", "hop-limit",
    "set-hop-limit", "receive-buffer-size", "set-receive-buffer-size", "send-buffer-size",
    "set-send-buffer-size", "subscribe", "shutdown",
)
_UDP = (
    "start-bind", "finish-bind", "stream", "local-address", "remote-address", "address-family",
    "unicast-hop-limit", "set-unicast-hop-limit", "receive-buffer-size", "set-receive-buffer-size",
    "send-buffer-size", "set-send-buffer-size", "subscribe",
)


def _refusals(interface: str, names: Iterable[str], code: str | None) -> dict[str, Callable[..., Any]]:
    return {name: _refusal(f"{interface}#{name}", code) for name in names}


REFUSED: dict[str, Implementation] = {
    "wasi:sockets/tcp": _refusals("wasi:sockets/tcp", (f"[method]tcp-socket.{n}" for n in _TCP), None),
    "wasi:sockets/udp": {
        **_refusals("wasi:sockets/udp", (f"[method]udp-socket.{n}" for n in _UDP), None),
        **_refusals("wasi:sockets/udp", [
            "[method]incoming-datagram-stream.receive", "[method]incoming-datagram-stream.subscribe",
            "[method]outgoing-datagram-stream.check-send", "[method]outgoing-datagram-stream.send",
            "[method]outgoing-datagram-stream.subscribe",
        ], None),
    },
    "wasi:sockets/tcp-create-socket": _refusals("wasi:sockets/tcp-create-socket", ["create-tcp-socket"], "access-denied"),
    "wasi:sockets/udp-create-socket": _refusals("wasi:sockets/udp-create-socket", ["create-udp-socket"], "access-denied"),
    "wasi:sockets/ip-name-lookup": {
        **_refusals("wasi:sockets/ip-name-lookup", ["resolve-addresses"], "access-denied"),
        **_refusals("wasi:sockets/ip-name-lookup", [
            "[method]resolve-address-stream.resolve-next-address", "[method]resolve-address-stream.subscribe",
        ], None),
    },
}


# ----------------------------------------------------------------------------- a served component

class ProxyComponent:
    """A wasi:http component loaded in a worker: its linker (built once) and its handler."""

    def __init__(self, engine: wasmtime.Engine, component: Component, export: str) -> None:
        self.component = component
        self.export = export
        self.host = Host()
        implementations = self.host.implementations()
        self.linked: Linked = link_component(engine, component, implementations.get, _native)
        outer = component.get_export_index(export)
        index = component.get_export_index("handle", outer) if outer is not None else None
        if index is None:
            raise ValueError(f"the component exports no {export}#handle")
        self.index = index
        self.request_type = self.linked.type_ids["wasi:http/types#incoming-request"]
        self.outparam_type = self.linked.type_ids["wasi:http/types#response-outparam"]

    def handle(self, store: wasmtime.Store, exchange: Exchange) -> None:
        """Instantiate and call the guest's handle. Raises Stopped when the host stopped it,
        wasmtime.WasmtimeError for a trap or a failed link."""
        call = self.linked.call
        call.table.clear()
        call.failure = None
        self.host.exchange = exchange
        self.host.fs.begin(exchange.mounts)
        try:
            instance = self.linked.linker.instantiate(store, self.component)
            func = instance.get_func(store, self.index)
            assert func is not None
            params = [(exchange.request, self.request_type), (ResponseOutparam(exchange), self.outparam_type)]
            try:
                call_with_resources(store, func, params, call)
            except wasmtime.WasmtimeError:
                if call.failure is not None and not isinstance(call.failure, Exception):
                    raise call.failure from None  # SystemExit, KeyboardInterrupt: not the guest's
                if isinstance(call.failure, Stopped):
                    raise call.failure from None
                raise
        finally:
            self.host.exchange = None
            call.table.clear()
            self.host.fs.end()

    @property
    def host_failure(self) -> BaseException | None:
        """The host function's exception behind the last trap, if one was."""
        return self.linked.call.failure


def _native(linker: Any) -> None:
    linker.add_wasip2()


def link_component_for(engine: wasmtime.Engine, component: Component) -> Linked:
    """The linker this host gives a wasi:http component (the compiler's check; `missing` names
    what it imports that nothing here provides)."""
    return link_component(engine, component, Host().implementations().get, _native)
