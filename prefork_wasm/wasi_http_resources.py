"""The host objects behind wasi:http's resources, and one request's exchange.

Fields, streams, pollables, bodies, requests and responses as the wasi:http host (wasi_http.py)
hands them to a guest; the `Exchange` holds what one request gives the guest and what it answers,
and `incoming_request` / `response_of` translate between the server's messages and them. Pure
apart from the outbound client they start (outbound.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import outbound
from .component_host import Err
from .messages import TCHAR, Request, Response
from .wasi_filesystem import Mount

# Fields wasmtime keeps from guests in both directions (its DEFAULT_FORBIDDEN_HEADERS): a guest
# cannot set them, and they are removed from what it is given. The server frames the response.
FORBIDDEN = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "transfer-encoding", "upgrade", "host", "http2-settings",
})
# What a field value may hold (http's HeaderValue): visible ASCII, space, tab and obs-text.
_VALUE_BYTES = bytes([9, *range(0x20, 0x7F), *range(0x80, 0x100)])
METHODS = {"GET": "get", "HEAD": "head", "POST": "post", "PUT": "put", "DELETE": "delete",
            "CONNECT": "connect", "OPTIONS": "options", "TRACE": "trace", "PATCH": "patch"}
METHOD_NAMES = {case: name for name, case in METHODS.items()}
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


def check_name(name: str) -> str:
    """The field name lowercased, or raise Err with the header-error a guest gets."""
    encoded = name.encode("utf-8", "replace")
    if not encoded or encoded.translate(None, TCHAR):
        raise Err("invalid-syntax")
    lowered = name.lower()
    if lowered in FORBIDDEN:
        raise Err("forbidden")
    return lowered


def check_value(value: bytes) -> bytes:
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


READY = Pollable()


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


class LogSink(Sink):
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
    body = request.body if isinstance(request.body, bytes) else request.body.read()
    return IncomingRequest(request.method, target, scheme, authority, headers, body)


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
