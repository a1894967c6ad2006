"""A wasi:http/proxy app in Python (componentize-py): the world Spin and `wasmtime serve` run.

It answers by the last segment of the request's path, so it serves the same under any
Location prefix (the request's path-with-query is the whole path, as the client sent it):

    /proxy                hello, and the ?name= of the query string
    /proxy/info           method, path with query, scheme and authority as the guest sees them
    /proxy/headers        the request's fields, one 'name: value' line each, in name order
    /proxy/echo           the request body back, with its content-type
    /proxy/missing        a 404 of the app's own, with custom fields
    /proxy/big            a 300 KB body; ?length declares its Content-Length first
    /proxy/env            WasmEnv's GREETING and WasmArg's arguments
    /proxy/files/NAME     GET reads /data/NAME, PUT writes it (WasmMapDir /data DIRECTORY [rw])
    /proxy/fetch?URL      an outbound GET of URL (through wasi:http/outgoing-handler), relayed

and, to show how the server bounds a guest (each answered by the server, not the app):

    /proxy/trap           raises: the component traps (500)
    /proxy/no-response    returns without setting a response (500)
    /proxy/loop           never returns (504 after WasmTimeout)
    /proxy/alloc          allocates without end (500 at WasmMemoryLimit)

Build it with `scripts/build-components`, which writes examples/wasm/proxy.wasm.
"""

import asyncio
import os
import sys
from urllib.parse import parse_qs, urlsplit

from componentize_py_types import Err, Ok
from poll_loop import PollLoop, Sink, Stream, register, send
from wit_world import exports
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.types import (
    Fields,
    IncomingBody,
    IncomingRequest,
    Method_Get,
    Method_Put,
    OutgoingBody,
    OutgoingRequest,
    OutgoingResponse,
    ResponseOutparam,
    Scheme_Http,
    Scheme_Https,
    Scheme_Other,
)

BIG_SIZE = 300 * 1000


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        """Small answers are written at once; a body read or relayed as it streams runs on
        componentize-py's asyncio loop over wasi:io/poll."""
        target = request.path_with_query() or "/"
        path, _, query = target.partition("?")
        route = path.rstrip("/").rsplit("/", 1)[-1]
        if "/files/" in path:
            files(request, response_out, path.split("/files/", 1)[1])
        elif route in STREAMED:
            loop = PollLoop()
            asyncio.set_event_loop(loop)
            loop.run_until_complete(STREAMED[route](request, response_out, query))
        elif route == "info":
            respond(response_out, 200, [], info(request).encode())
        elif route == "headers":
            lines = [f"{name}: {value.decode('latin-1')}\n" for name, value in request.headers().entries()]
            lines.sort(key=lambda line: line.partition(":")[0])  # stable: repeated fields keep their order
            respond(response_out, 200, [], "".join(lines).encode())
        elif route == "missing":
            fields = [("x-app", b"proxy example"), ("x-multi", b"one"), ("x-multi", b"two")]
            respond(response_out, 404, fields, b"no such page\n")
        elif route == "env":
            respond(response_out, 200, [], f"GREETING={os.environ.get('GREETING', '')}\nargv={sys.argv[1:]}\n".encode())
        elif route == "trap":
            raise RuntimeError("this route fails on purpose")
        elif route == "no-response":
            return
        elif route == "loop":
            while True:
                pass
        elif route == "alloc":
            hoard = []
            while True:
                hoard.append(bytearray(1 << 20))
        else:
            name = parse_qs(query).get("name", ["world"])[0]
            respond(response_out, 200, [], f"hello, {name}, from a wasi:http component\n".encode())


def info(request: IncomingRequest) -> str:
    method = request.method()
    scheme = request.scheme()
    scheme_name = {Scheme_Http: "http", Scheme_Https: "https"}.get(type(scheme), "")
    if isinstance(scheme, Scheme_Other):
        scheme_name = scheme.value
    method_name = getattr(method, "value", None) or type(method).__name__.removeprefix("Method_").upper()
    return (
        f"method={method_name}\npath_with_query={request.path_with_query()}\n"
        f"scheme={scheme_name}\nauthority={request.authority()}\n"
    )


def files(request: IncomingRequest, response_out: ResponseOutparam, name: str) -> None:
    """GET reads /data/NAME, PUT writes the request body there (a WasmMapDir mount)."""
    path = f"/data/{name}"
    try:
        if isinstance(request.method(), Method_Put):
            with open(path, "wb") as f:
                f.write(read_all(request))
            respond(response_out, 201, [], f"wrote {path}\n".encode())
        else:
            with open(path, "rb") as f:
                respond(response_out, 200, [], f.read())
    except FileNotFoundError:
        respond(response_out, 404, [], f"no file {path}\n".encode())
    except OSError as e:
        respond(response_out, 403, [], f"{path}: {type(e).__name__}: {e.strerror}\n".encode())


def read_all(request: IncomingRequest) -> bytes:
    body = request.consume()
    chunks = []
    with body.stream() as stream:
        while True:
            try:
                chunks.append(stream.blocking_read(65536))
            except Err as error:
                if isinstance(error.value, StreamError_Closed):
                    break
                raise
    IncomingBody.finish(body)
    return b"".join(chunks)


def respond(response_out: ResponseOutparam, status: int, fields: list, body: bytes) -> None:
    """A whole response at once: blocking writes of at most 4096 bytes each (the WIT's bound)."""
    response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain; charset=utf-8"), *fields]))
    response.set_status_code(status)
    response_body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    with response_body.write() as stream:
        for start in range(0, len(body), 4096):
            stream.blocking_write_and_flush(body[start:start + 4096])
    OutgoingBody.finish(response_body, None)


async def echo(request: IncomingRequest, response_out: ResponseOutparam, query: str) -> None:
    """Streams the body back as it reads it: no Content-Length of its own."""
    content_type = request.headers().get("content-type") or [b"application/octet-stream"]
    response = OutgoingResponse(Fields.from_list([("content-type", content_type[0])]))
    response_body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    stream = Stream(request.consume())
    sink = Sink(response_body)
    while True:
        chunk = await stream.next()
        if chunk is None:
            break
        await sink.send(chunk)
    sink.close()


async def big(request: IncomingRequest, response_out: ResponseOutparam, query: str) -> None:
    """Written in 16 KiB chunks; with ?length after a content-length field, without a flush
    after the last chunk (a host may close the stream once the declared length is written)."""
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,-+*/=()[]{}<>!?:;@#$%&~\n"
    body = (line * (BIG_SIZE // len(line) + 1))[:BIG_SIZE]
    fields = [("content-type", b"text/plain")]
    if "length" in parse_qs(query, keep_blank_values=True):
        fields.append(("content-length", str(len(body)).encode()))
    response = OutgoingResponse(Fields.from_list(fields))
    response_body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    stream = response_body.write()
    offset = 0
    while offset < len(body):
        room = stream.check_write()
        if room == 0:
            await register(asyncio.get_event_loop(), stream.subscribe())
            continue
        chunk = body[offset:offset + min(room, 16384)]
        stream.write(chunk)
        offset += len(chunk)
    stream.__exit__(None, None, None)
    OutgoingBody.finish(response_body, None)


async def fetch(request: IncomingRequest, response_out: ResponseOutparam, url: str) -> None:
    """GET the URL in the query string and relay the upstream's status, content-type and body."""
    parts = urlsplit(url)
    request = OutgoingRequest(Fields())
    request.set_method(Method_Get())
    request.set_scheme(Scheme_Https() if parts.scheme == "https" else Scheme_Http())
    request.set_authority(parts.netloc)
    request.set_path_with_query(parts.path + (f"?{parts.query}" if parts.query else "") or "/")
    try:
        upstream = await send(request)
    except Exception as error:  # an error-code: denied, refused, timed out...
        code = type(getattr(error, "value", error)).__name__.removeprefix("ErrorCode_")
        respond(response_out, 502, [("x-upstream-error", code.encode())], f"upstream error: {code}\n".encode())
        return
    content_type = upstream.headers().get("content-type") or [b"application/octet-stream"]
    response = OutgoingResponse(Fields.from_list([("content-type", content_type[0])]))
    response.set_status_code(upstream.status())
    response_body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    stream = Stream(upstream.consume())
    sink = Sink(response_body)
    while True:
        chunk = await stream.next()
        if chunk is None:
            break
        await sink.send(chunk)
    sink.close()



STREAMED = {"echo": echo, "big": big, "fetch": fetch}
