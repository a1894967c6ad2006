"""The wasi:http/proxy host: serve a component that exports `wasi:http/incoming-handler@0.2.x`.

wasmtime-py links only wasmtime's outbound half of wasi:http, and resources made in Python do
not match the ones its http code makes. So this host defines, in Python, every interface that
touches streams or pollables (wasi:io, wasi:http, the monotonic clock, stdio, and refusals for
the filesystem and sockets), on top of wasmtime's own WASI 0.2 for the rest (environment,
arguments, random, wall clock, exit). See component_host.py for how the calls cross,
wasi_http_resources.py for the objects behind the resources.

Per request: the request becomes an `incoming-request` (method, path with query, scheme,
authority, fields as wasmtime serve gives them, the body as a stream), the guest's `handle`
runs in a fresh instance, and the `outgoing-response` it set becomes the server's response.
The body the guest writes is held (bounded by LimitResponseBody), so the server answers with
its length, or with an error status if the guest fails part way. A guest waiting on a pollable
is bounded by WasmTimeout as one running is; stdout and stderr go to the error log.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
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
from .messages import TCHAR
from .wasi_filesystem import Filesystem
from .wasi_http_resources import (
    FORBIDDEN,
    METHOD_NAMES,
    METHODS,
    READY,
    WRITE_BUDGET,
    BytesInput,
    Exchange,
    Fields,
    FutureIncomingResponse,
    FutureTrailers,
    IncomingBody,
    IncomingRequest,
    IncomingResponse,
    InputStream,
    IoError,
    LogSink,
    OutgoingBody,
    OutgoingRequest,
    OutgoingResponse,
    OutputStream,
    Pollable,
    RequestOptions,
    ResponseOutparam,
    Sink,
    Stopped,
    Timer,
    check_name,
    check_value,
)

HANDLER_PREFIX = "wasi:http/incoming-handler@0.2."


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
        return Fields((check_name(name), check_value(value)) for name, value in entries)

    def fields_get(self, fields: Fields, name: str) -> list[bytes]:
        return list(fields.map.get(name.lower(), ()))

    def fields_has(self, fields: Fields, name: str) -> bool:
        return name.lower() in fields.map

    def fields_set(self, fields: Fields, name: str, values: list[bytes]) -> None:
        if fields.immutable:
            raise Err("immutable")
        key = check_name(name)
        checked = [check_value(v) for v in values]
        if checked:
            fields.map[key] = checked
        else:
            fields.map.pop(key, None)

    def fields_delete(self, fields: Fields, name: str) -> None:
        if fields.immutable:
            raise Err("immutable")
        fields.map.pop(check_name(name), None)

    def fields_append(self, fields: Fields, name: str, value: bytes) -> None:
        if fields.immutable:
            raise Err("immutable")
        fields.map.setdefault(check_name(name), []).append(check_value(value))

    # --- incoming-request, incoming-body
    def request_method(self, request: IncomingRequest | OutgoingRequest) -> Any:
        case = METHODS.get(request.method)
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
        name = method[1] if isinstance(method, tuple) else METHOD_NAMES[method]
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
        return OutputStream(LogSink(self.x))

    def implementations(self) -> dict[str, Implementation]:
        """Each Python-defined interface (name without version) -> function name -> function."""
        def no_trailers(f: Any) -> Any:
            return Ok(Ok(None))
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
            "[method]future-trailers.subscribe": lambda f: READY,
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
            "[method]input-stream.subscribe": lambda s: READY,
            "[method]output-stream.check-write": self.check_write,
            "[method]output-stream.write": self.write,
            "[method]output-stream.blocking-write-and-flush": self.write,
            "[method]output-stream.flush": self.flush,
            "[method]output-stream.blocking-flush": self.flush,
            "[method]output-stream.subscribe": lambda s: READY,
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
    "wasi:sockets/tcp-create-socket": _refusals(
        "wasi:sockets/tcp-create-socket", ["create-tcp-socket"], "access-denied"
    ),
    "wasi:sockets/udp-create-socket": _refusals(
        "wasi:sockets/udp-create-socket", ["create-udp-socket"], "access-denied"
    ),
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
