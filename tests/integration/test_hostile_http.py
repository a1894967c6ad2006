"""Hostile HTTP against the real server: malformed and smuggling-shaped requests, head limits,
slowloris, a 2 GB upload over LimitRequestBody (the HTTP half of the hardening issue).

Every input is raw bytes over a real socket. The corpus is a table of input and expected
outcome: the statuses of the responses, in order ([] = closed without a response).
`exchange` and `parse_responses` are shared with test_fuzz_http.py.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from harness import Server, wait_for

TIMEOUT = 2  # the servers' Timeout and KeepAliveTimeout, seconds

LIMITS = f"""
Timeout {TIMEOUT}
KeepAliveTimeout {TIMEOUT}
LimitRequestLine 1024
LimitRequestFieldSize 1024
LimitRequestFields 20
"""

LOCATIONS = """
<Location /headers>
    SetHandler wasm-handler
    WasmModule ${MODULES}/headers.wasm
    WasmEnableCGI On
</Location>
<Location /echo>
    SetHandler wasm-handler
    WasmModule ${EXAMPLES}/echo.wasm
    WasmEnableCGI On
    LimitRequestBody 1M
</Location>
<Location /small>
    SetHandler wasm-handler
    WasmModule ${EXAMPLES}/echo.wasm
    WasmEnableCGI On
    LimitRequestBody 100
</Location>
<Location /server-status>
    SetHandler server-status
</Location>
"""


def pool(workers: int) -> str:
    """A fixed pool: MaxRequestWorkers stops the master from adding workers, so a changed
    pid can only mean a worker died."""
    return f"MaxRequestWorkers {workers}\nMinSpareServers 1\nMaxSpareServers 2\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("hostile"), pool(1) + LIMITS + LOCATIONS, start_servers=1).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two workers: one held by a slow client, one free for everybody else."""
    srv = Server(tmp_path_factory.mktemp("slow"), pool(2) + LIMITS + LOCATIONS, start_servers=2).start()
    yield srv
    srv.stop()


# --- a raw HTTP client ----------------------------------------------------------------------


def read_until_closed(sock: socket.socket, deadline: float | None = None) -> bytes:
    """Everything the server sends until it closes (a reset after its response counts as closed);
    the socket's timeout fails the test if it never does, and so does a `deadline`
    (time.monotonic()) that passes first."""
    received = bytearray()
    while True:
        if deadline is not None:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return bytes(received)
        except TimeoutError:
            if deadline is None:
                raise
            raise AssertionError(f"the connection was still open at the deadline, after {bytes(received)!r}") from None
        if not chunk:
            return bytes(received)
        received += chunk


def exchange(port: int, data: bytes, eof: bool = False, timeout: float = 3 * TIMEOUT + 2) -> bytes:
    """Send `data` (then half-close if `eof`: no more is coming) and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if eof:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered before reading it all; its answer is still to be read
        return read_until_closed(sock)


_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9])(?: [\t\x20-\x7e]*)?")


def parse_responses(data: bytes) -> list[int]:
    """The statuses of the responses in `data`, which must be nothing but complete, well-formed
    HTTP/1.1 responses (no HEAD requests: their bodies are absent)."""
    statuses = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        assert end >= 0, f"incomplete response head: {data[pos:pos + 300]!r}"
        status_line, *fields = data[pos:end].split(b"\r\n")
        match = _STATUS_LINE.fullmatch(status_line)
        assert match, f"invalid status line: {status_line!r}"
        status = int(match[1])
        headers = dict(field.lower().split(b": ", 1) for field in fields)
        pos = end + 4
        if status >= 200:
            length = int(headers[b"content-length"])
            assert pos + length <= len(data), f"truncated body: {data[pos:pos + 300]!r}"
            pos += length
        statuses.append(status)
    return statuses


def reading(server: Server) -> bool:
    """Whether a request is being read, from server-status: a head in a worker's event loop (a
    held connection, costing no worker: ConnsAsyncReading), or a body by a worker ('R')."""
    fields = dict(line.split(": ", 1) for line in server.get("/server-status?auto")[2].decode().splitlines()[1:])
    return int(fields["ConnsAsyncReading"]) > 0 or "R" in fields["Scoreboard"]


# --- the corpus -----------------------------------------------------------------------------

H = b"Host: x\r\n"
GOOD = b"GET /headers?status HTTP/1.1\r\n" + H + b"\r\n"
CLOSE = b"GET /headers?status HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n"


def post(target: bytes, fields: bytes, body: bytes = b"") -> bytes:
    return b"POST " + target + b" HTTP/1.1\r\n" + H + fields + b"\r\n" + body


def chunked(body: bytes, target: bytes = b"/echo") -> bytes:
    return post(target, b"Transfer-Encoding: chunked\r\n", body)


# (id, bytes sent, statuses expected, half-close after sending). Without the half-close the
# server must answer and close on its own: an error never waits for the client.
CORPUS = [
    # well-formed controls
    ("good", CLOSE, [201], False),
    ("http-1.0-without-host", b"GET /headers?status HTTP/1.0\r\n\r\n", [201], False),
    (
        "absolute-form",
        b"GET http://localhost/headers?status HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n",
        [201],
        False,
    ),
    ("odd-method", b"BREW /headers?status HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n", [201], False),
    ("http-1.2-served-as-1.1", b"GET /headers?status HTTP/1.2\r\n" + H + b"Connection: close\r\n\r\n", [201], False),
    (
        "obs-text-value",
        b"GET /headers?status HTTP/1.1\r\n" + H + b"X-Bin: \xff\xfe\x80\r\nConnection: close\r\n\r\n",
        [201],
        False,
    ),
    (
        "upgrade-not-switched",
        b"GET /headers?status HTTP/1.1\r\n" + H + b"Upgrade: websocket\r\nConnection: upgrade, close\r\n\r\n",
        [201],
        False,
    ),
    # Never switched, and an Upgrade asked on a kept-alive connection ends it after the answer.
    (
        "upgrade-asked-on-keep-alive",
        b"GET /headers?status HTTP/1.1\r\n" + H + b"Upgrade: h2c\r\nConnection: upgrade\r\n\r\n",
        [201],
        False,
    ),
    (
        "expect-100",
        post(b"/echo", b"Expect: 100-continue\r\nContent-Length: 3\r\nConnection: close\r\n", b"abc"),
        [100, 200],
        False,
    ),
    ("chunk-extension-and-trailer", chunked(b"3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n"), [200], True),
    ("chunk-extension-bws", chunked(b"3; name=value\r\nabc\r\n0 ;e = f\r\n\r\n"), [200], True),  # RFC 9112 7.1.1
    ("chunk-extensions-quoted", chunked(b'3;a;b="x \\" y";c=d\r\nabc\r\n0;e\r\n\r\n'), [200], True),
    ("tab-before-te-value", post(b"/echo", b"Transfer-Encoding:\tchunked\r\n", b"0\r\n\r\n"), [200], True),
    ("nothing-sent", b"", [], True),
    # request line
    ("double-space", b"GET  /headers HTTP/1.1\r\n" + H + b"\r\n", [400], False),
    ("tab-separator", b"GET\t/headers HTTP/1.1\r\n" + H + b"\r\n", [400], False),
    ("http-0.9-simple-request", b"GET /headers\r\n\r\n", [400], False),
    ("missing-target", b"GET HTTP/1.1\r\n" + H + b"\r\n", [400], False),
    ("lowercase-protocol", b"GET / http/1.1\r\n" + H + b"\r\n", [400], False),
    ("version-without-minor", b"GET / HTTP/1\r\n" + H + b"\r\n", [400], False),
    ("trailing-text", b"GET / HTTP/1.1 x\r\n" + H + b"\r\n", [400], False),
    ("http-0.9-version", b"GET / HTTP/0.9\r\n\r\n", [400], False),
    ("http-1.2-without-host", b"GET / HTTP/1.2\r\n\r\n", [400], False),
    ("http-2.0", b"GET / HTTP/2.0\r\n" + H + b"\r\n", [505], False),
    ("h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", [505], False),
    ("huge-request-line", b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\n" + H + b"\r\n", [414], False),
    ("endless-request-line", b"GET /" + b"a" * 5000, [414], False),
    ("huge-method", b"A" * 2000 + b" / HTTP/1.1\r\n" + H + b"\r\n", [414], False),
    ("bad-method-char", b"GE(T / HTTP/1.1\r\n" + H + b"\r\n", [400], False),
    ("nul-in-target", b"GET /a\x00b HTTP/1.1\r\n" + H + b"\r\n", [400], False),
    ("control-in-target", b"GET /a\x01b HTTP/1.1\r\n" + H + b"\r\n", [400], False),
    ("non-ascii-target", b"GET /headers?\xff HTTP/1.1\r\n" + H + b"\r\n", [400], False),
    ("relative-target", b"GET headers HTTP/1.1\r\n" + H + b"\r\n", [400], False),
    ("asterisk-not-options", b"GET * HTTP/1.1\r\n" + H + b"\r\n", [400], False),
    ("absolute-form-ftp", b"GET ftp://x/headers HTTP/1.1\r\n" + H + b"\r\n", [400], False),
    ("fragment", b"GET /headers#frag HTTP/1.1\r\n" + H + b"\r\n", [400], False),
    ("connect-authority", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", [501], False),
    ("connect-path", b"CONNECT /headers HTTP/1.1\r\n" + H + b"\r\n", [501], False),
    ("leading-blank-line", b"\r\n" + CLOSE, [201], False),  # RFC 9112 2.2: ignored
    ("ten-leading-blank-lines", b"\r\n" * 10 + CLOSE, [201], False),
    ("eleven-leading-blank-lines", b"\r\n" * 11 + CLOSE, [400], False),  # Apache's limit
    ("leading-bare-lf", b"\n" + CLOSE, [400], False),
    ("leading-bare-cr", b"\r" + CLOSE, [400], False),
    ("only-blank-lines", b"\r\n\r\n", [], True),
    ("tls-client-hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, [400], False),
    # header fields
    ("huge-field", b"GET / HTTP/1.1\r\n" + H + b"X: " + b"v" * 2000 + b"\r\n\r\n", [431], False),
    ("endless-field", b"GET / HTTP/1.1\r\n" + H + b"X: " + b"v" * 5000, [431], False),
    (
        "too-many-fields",
        b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-%d: v\r\n" % i for i in range(20)) + b"\r\n",
        [431],
        False,
    ),
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", [400], False),
    ("tab-before-colon", b"GET / HTTP/1.1\r\nHost\t: x\r\n\r\n", [400], False),
    ("obs-fold", b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n b\r\n\r\n", [400], False),
    ("obs-fold-tab", b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n\tb\r\n\r\n", [400], False),
    ("fold-before-first-field", b"GET / HTTP/1.1\r\n x: a\r\n" + H + b"\r\n", [400], False),
    ("bare-lf", b"GET /headers?status HTTP/1.1\nHost: x\n\n", [400], False),
    ("bare-lf-end-of-head", b"GET /headers?status HTTP/1.1\r\n" + H + b"\n", [400], False),
    ("bare-cr", b"GET / HTTP/1.1\r\n" + H + b"X: a\rb\r\n\r\n", [400], False),
    ("nul-in-value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x00b\r\n\r\n", [400], False),
    ("soh-in-value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x01b\r\n\r\n", [400], False),
    ("backspace-in-value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x08b\r\n\r\n", [400], False),
    ("esc-in-value", b"GET / HTTP/1.1\r\n" + H + b"X: \x1b[31m\r\n\r\n", [400], False),
    ("unit-separator-in-value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x1fb\r\n\r\n", [400], False),
    ("del-in-value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x7f\r\n\r\n", [400], False),
    ("control-in-host", b"GET / HTTP/1.1\r\nHost: x\x0e\r\n\r\n", [400], False),
    ("no-colon", b"GET / HTTP/1.1\r\n" + H + b"NoColon\r\n\r\n", [400], False),
    ("empty-name", b"GET / HTTP/1.1\r\n" + H + b": v\r\n\r\n", [400], False),
    ("non-ascii-name", b"GET / HTTP/1.1\r\n" + H + b"X\xe9: v\r\n\r\n", [400], False),
    ("missing-host", b"GET / HTTP/1.1\r\n\r\n", [400], False),
    ("two-hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", [400], False),
    # RFC 9112 3.2: a Host that is not uri-host[:port] is 400
    ("host-user-info", b"GET / HTTP/1.1\r\nHost: x@internal.test\r\n\r\n", [400], False),
    ("host-path", b"GET / HTTP/1.1\r\nHost: internal.test/x\r\n\r\n", [400], False),
    ("host-tab", b"GET / HTTP/1.1\r\nHost: internal\ttest\r\n\r\n", [400], False),
    ("host-non-ascii", b"GET / HTTP/1.1\r\nHost: internal.test\xff\r\n\r\n", [400], False),
    ("host-port-too-large", b"GET / HTTP/1.1\r\nHost: internal.test:99999\r\n\r\n", [400], False),
    ("host-port-not-digits", b"GET / HTTP/1.1\r\nHost: internal.test:abc\r\n\r\n", [400], False),
    ("absolute-form-user-info", b"GET http://x@internal.test/ HTTP/1.1\r\n" + H + b"\r\n", [400], False),
    # body framing and smuggling shapes
    ("cl-and-te", post(b"/echo", b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), [400], False),
    ("te-and-cl", post(b"/echo", b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"), [400], False),
    ("cl-differing", post(b"/echo", b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"), [400], False),
    ("cl-list-differing", post(b"/echo", b"Content-Length: 5, 6\r\n", b"hello!"), [400], False),
    ("cl-list-same", post(b"/echo", b"Content-Length: 5, 5\r\n", b"hello"), [400], False),
    ("cl-twice-same", post(b"/echo", b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"), [400], False),
    ("cl-negative", post(b"/echo", b"Content-Length: -1\r\n"), [400], False),
    ("cl-plus", post(b"/echo", b"Content-Length: +5\r\n", b"hello"), [400], False),
    ("cl-hex", post(b"/echo", b"Content-Length: 0x5\r\n", b"hello"), [400], False),
    ("cl-21-digits", post(b"/echo", b"Content-Length: " + b"9" * 21 + b"\r\n"), [400], False),
    ("cl-2gb-over-limit", post(b"/echo", b"Content-Length: 2147483648\r\n"), [413], False),
    ("cl-over-limit-expect-100", post(b"/small", b"Expect: 100-continue\r\nContent-Length: 101\r\n"), [413], False),
    ("cl-short-body-then-eof", post(b"/echo", b"Content-Length: 5\r\n", b"abc"), [400], True),
    ("te-gzip-chunked", post(b"/echo", b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"), [501], False),
    ("te-chunkedx", post(b"/echo", b"Transfer-Encoding: chunkedx\r\n", b"0\r\n\r\n"), [400], False),
    ("te-chunked-gzip", post(b"/echo", b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n"), [400], False),
    (
        "te-twice",
        post(b"/echo", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        [400],
        False,
    ),
    ("te-identity", post(b"/echo", b"Transfer-Encoding: identity\r\n", b"hello"), [400], False),
    ("te-space-before-colon", post(b"/echo", b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"), [400], False),
    ("te-in-http-1.0", b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", [400], False),
    ("chunk-size-not-hex", chunked(b"zz\r\nhello\r\n0\r\n\r\n"), [400], False),
    ("chunk-size-negative", chunked(b"-5\r\nhello\r\n0\r\n\r\n"), [400], False),
    ("chunk-size-0x", chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), [400], False),
    ("chunk-size-21-digits", chunked(b"1" + b"0" * 20 + b"\r\nhello\r\n0\r\n\r\n"), [400], False),
    ("chunk-size-overflow", chunked(b"f" * 20 + b"\r\n" + b"x" * 200, b"/small"), [413], False),
    ("chunk-data-without-crlf", chunked(b"5\r\nhelloX0\r\n\r\n"), [400], False),
    ("chunk-size-bare-lf", chunked(b"5\nhello\r\n0\r\n\r\n"), [400], False),
    ("chunk-ext-bare-cr", chunked(b"5;a=b\rc\r\nhello\r\n0\r\n\r\n"), [400], False),
    ("chunk-ext-nul", chunked(b"5;a=\x00\r\nhello\r\n0\r\n\r\n"), [400], False),
    ("chunk-ext-unbalanced-quote", chunked(b'5;a="b\r\nhello\r\n0\r\n\r\n'), [400], False),
    ("chunk-ext-control", chunked(b"5;a=\x01\r\nhello\r\n0\r\n\r\n"), [400], False),
    ("chunk-ext-no-name", chunked(b"5;=b\r\nhello\r\n0\r\n\r\n"), [400], False),
    ("chunk-size-trailing-space", chunked(b"5 \r\nhello\r\n0\r\n\r\n"), [400], False),
    ("chunk-size-trailing-tab", chunked(b"5\t\r\nhello\r\n0\r\n\r\n"), [400], False),
    ("chunk-data-bare-cr-end", chunked(b"5\r\nhello\r\r\n0\r\n\r\n"), [400], False),
    ("trailer-content-length", chunked(b"0\r\nContent-Length: 5\r\n\r\n"), [400], False),
    ("trailer-transfer-encoding", chunked(b"0\r\nTransfer-Encoding: chunked\r\n\r\n"), [400], False),
    ("trailer-host", chunked(b"0\r\nHost: evil\r\n\r\n"), [400], False),
    # RFC 9112 7.1.2: trailer fields that do not change framing or routing are discarded (they
    # never reach a guest), as gunicorn does; refusing them broke real clients.
    ("trailer-authorization-discarded", chunked(b"0\r\nAuthorization: Basic eDp5\r\n\r\n"), [200], True),
    ("trailer-content-type-discarded", chunked(b"0\r\nContent-Type: text/plain\r\nVary: *\r\n\r\n"), [200], True),
    ("trailer-obs-fold", chunked(b"0\r\nX: a\r\n b\r\n\r\n"), [400], False),
    ("trailer-control", chunked(b"0\r\nX: a\x01\r\n\r\n"), [400], False),
    ("trailer-bare-lf", chunked(b"0\r\nX: a\n\r\n"), [400], False),
    ("chunk-short-then-eof", chunked(b"5\r\nhel"), [400], True),
    (
        "chunked-over-limit",
        chunked(b"40\r\n" + b"x" * 64 + b"\r\n40\r\n" + b"x" * 64 + b"\r\n0\r\n\r\n", b"/small"),
        [413],
        False,
    ),
    # pipelining: the good request is answered, then the bad one refused
    ("pipelined-good-good", GOOD + CLOSE, [201, 201], False),
    ("pipelined-blank-line-between", GOOD + b"\r\n" + CLOSE, [201, 201], False),
    ("crlf-after-a-post-body", post(b"/echo", b"Content-Length: 3\r\n", b"abc\r\n") + CLOSE, [200, 201], False),
    ("pipelined-garbage", GOOD + b"GARBAGE\r\n\r\n", [201, 400], False),
    ("pipelined-bare-lf", GOOD + b"GET / HTTP/1.1\nHost: x\n\n", [201, 400], False),
    ("pipelined-huge-request-line", GOOD + b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\n\r\n", [201, 414], False),
    ("pipelined-too-many-fields", GOOD + b"GET / HTTP/1.1\r\n" + b"X: v\r\n" * 21 + b"\r\n", [201, 431], False),
    (
        "pipelined-cl-and-te",
        GOOD + post(b"/echo", b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        [201, 400],
        False,
    ),
    (
        "smuggled-request-in-body",
        post(b"/echo", b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + GOOD),
        [400],
        False,
    ),
]


@pytest.mark.parametrize("data, expected, eof", [pytest.param(d, e, f, id=i) for i, d, e, f in CORPUS])
def test_hostile_input(server: Server, data: bytes, expected: list[int], eof: bool) -> None:
    workers = server.worker_pids()
    start = time.monotonic()
    assert parse_responses(exchange(server.port, data, eof)) == expected
    assert time.monotonic() - start < TIMEOUT  # answered and closed without waiting for Timeout
    assert server.worker_pids() == workers


def test_corpus_is_large_and_ids_unique() -> None:
    ids = [case[0] for case in CORPUS]
    assert len(ids) >= 40 and len(set(ids)) == len(ids)


def bare_cr_smuggling_body() -> bytes:
    """A chunked body that a proxy ending lines at a bare CR forwards as one request, while h11
    alone (chunk extension 'a=b\\rZZZZZZZZZZ') reads it as two: a POST, then a smuggled GET.

    The proxy's chunk is 0x41 bytes from just after '41;a=b\\r', h11's from after the next
    CRLF, 12 bytes later. The proxy's next chunk, inside h11's data, covers h11's last chunk
    and the smuggled request."""
    smuggled = b"GET /headers?status HTTP/1.1\r\n" + H + b"\r\n"
    body = b"Z" * 10 + b"\r\n"  # h11's chunk extension ends here; its data starts at 12
    body += b"y" * (0x41 - len(body)) + b"\r\n"  # the proxy's data and its CRLF
    tail = b"\r\n0\r\n\r\n" + smuggled  # from 12 + 0x41: h11's CRLF, last chunk, then a request
    line = b"%x\r\n" % (12 + 0x41 + len(tail) - len(body) - 4)  # the proxy's second chunk
    body += line + b"y" * (12 + 0x41 - len(body) - len(line)) + tail + b"\r\n0\r\n\r\n"
    return b"41;a=b\r" + body


def test_the_bare_cr_smuggling_payload_is_answered_once(server: Server) -> None:
    workers = server.worker_pids()
    response = exchange(server.port, chunked(bare_cr_smuggling_body()))
    assert parse_responses(response) == [400]  # h11 alone: [200, 201, 400]
    assert server.worker_pids() == workers


def exchange_split(port: int, data: bytes, cut: int) -> bytes:
    """`exchange`, with `data` sent in two packets cut at `cut` (Nagle off, so the server
    mostly reads them apart)."""
    with socket.create_connection(("127.0.0.1", port), timeout=3 * TIMEOUT + 2) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.sendall(data[:cut])
            sock.sendall(data[cut:])
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_until_closed(sock)


def test_chunked_framing_holds_whatever_the_packet_boundaries(server: Server) -> None:
    """Cut anywhere, in the head, a chunk line, the data or the trailer: the same answers."""
    good = chunked(b'3;a="b c"\r\nabc\r\n0\r\nX-T: v\r\n\r\n') + b"\r\n" + CLOSE
    smuggling = chunked(bare_cr_smuggling_body())
    workers = server.worker_pids()
    for cut in range(1, len(good)):
        assert parse_responses(exchange_split(server.port, good, cut)) == [200, 201], cut
    for cut in range(1, len(smuggling)):
        assert parse_responses(exchange_split(server.port, smuggling, cut)) == [400], cut
    assert server.worker_pids() == workers


def test_a_2gb_chunked_upload_is_refused_without_reading_it(server: Server) -> None:
    """413 once the body passes LimitRequestBody (1M); then the server stops reading (lingering
    close reads 1 MiB at most) although the client goes on uploading until the connection
    breaks. The client never gets to send 2 GB, and the worker's memory does not grow with it."""
    (pid,) = server.worker_pids()
    worker = psutil.Process(pid)
    rss_before, peak_before = worker.memory_info().rss, peak_rss(pid)
    chunk = b"10000\r\n" + b"u" * 0x10000 + b"\r\n"
    sent = 0
    stop = threading.Event()

    def upload(sock: socket.socket) -> None:
        nonlocal sent
        try:
            while not stop.is_set() and sent < 2 << 30:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the server closed: it is done with us

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n")
        uploader = threading.Thread(target=upload, args=(sock,))
        uploader.start()
        try:
            response = read_until_closed(sock)
            uploader.join(timeout=10)  # it only stops when the server closes the connection
            assert not uploader.is_alive(), f"still uploading after {sent} bytes"
        finally:
            stop.set()
            uploader.join()
    assert parse_responses(response) == [413]
    assert sent < 64 << 20, f"the client could send {sent} bytes"
    assert worker.memory_info().rss - rss_before < 8 << 20
    assert peak_rss(pid) - peak_before < 8 << 20
    assert server.worker_pids() == {pid}


def peak_rss(pid: int) -> int:
    """VmHWM: the process's highest RSS so far, in bytes (Linux)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)[1]) * 1024


# --- slow clients ---------------------------------------------------------------------------


def trickle(sock: socket.socket, data: bytes, stop: threading.Event, interval: float = 0.05) -> None:
    """Send `data` a byte at a time until it is all sent, the server closes, or `stop`."""
    for i in range(len(data)):
        if stop.wait(interval):
            return
        try:
            sock.sendall(data[i : i + 1])
        except OSError:
            return


SLOW = [
    ("request-line", b"", b"GET /" + b"a" * 500 + b" HTTP/1.1\r\n"),
    ("headers", b"GET /headers?status HTTP/1.1\r\n", b"X-Slow: " + b"a" * 500 + b"\r\n"),
    ("body", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 500\r\n\r\n", b"b" * 500),
]


@pytest.mark.parametrize("prefix, slow", [pytest.param(p, s, id=i) for i, p, s in SLOW])
def test_slowloris_is_cut_after_timeout_while_others_are_served(pair: Server, prefix: bytes, slow: bytes) -> None:
    workers = pair.worker_pids()
    stop = threading.Event()
    with socket.create_connection(("127.0.0.1", pair.port), timeout=3 * TIMEOUT) as sock:
        start = time.monotonic()
        sock.sendall(prefix)
        trickler = threading.Thread(target=trickle, args=(sock, slow, stop))
        trickler.start()
        try:
            wait_for(lambda: reading(pair), timeout=TIMEOUT, what="the slow request being read")
            assert pair.get("/headers?status")[0] == 201  # the other worker serves meanwhile
            served = time.monotonic() - start
            response = read_until_closed(sock)
            cut = time.monotonic() - start
        finally:
            stop.set()
            trickler.join()
    assert parse_responses(response) == [408]
    assert TIMEOUT - 1 <= cut <= TIMEOUT + 1
    assert served < TIMEOUT / 2  # not held up by the slow client
    wait_for(lambda: not reading(pair), timeout=TIMEOUT, what="the slow client's connection to be let go")
    assert pair.worker_pids() == workers


def test_idle_connections_are_closed_silently(pair: Server) -> None:
    """A connection that never sends a byte is closed after Timeout, an idle keep-alive one after
    KeepAliveTimeout; neither gets a 408 (Apache's behaviour: there is no request to answer)."""
    with (
        socket.create_connection(("127.0.0.1", pair.port), timeout=3 * TIMEOUT) as silent,
        socket.create_connection(("127.0.0.1", pair.port), timeout=3 * TIMEOUT) as idle,
    ):
        start = time.monotonic()
        idle.sendall(GOOD)
        results = {}
        reader = threading.Thread(target=lambda: results.update(silent=read_until_closed(silent)))
        reader.start()
        kept_alive = read_until_closed(idle)
        idle_after = time.monotonic() - start
        reader.join()
        silent_after = time.monotonic() - start
    assert parse_responses(kept_alive) == [201]  # then nothing: no 408
    assert results["silent"] == b""
    assert TIMEOUT - 1 <= idle_after <= TIMEOUT + 1
    assert TIMEOUT - 1 <= silent_after <= TIMEOUT + 1


# --- RequestReadTimeout ----------------------------------------------------------------------

READ_TIMEOUT = """
Timeout 60
KeepAliveTimeout 4
RequestReadTimeout header=2-3,MinRate=500 body=2,MinRate=500
"""
BOUND = 3  # header=2-3: a client trickling far below MinRate is cut at 2 s, at 3 s whatever its rate


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two workers with Timeout 60: only RequestReadTimeout can cut a slow client in seconds."""
    srv = Server(tmp_path_factory.mktemp("reqtimeout"), pool(2) + READ_TIMEOUT + LOCATIONS, start_servers=2).start()
    yield srv
    srv.stop()


class SlowClient:
    """A connection that sends `prefix`, then trickles `slow` a byte every 0.3 s; `response` and
    `cut` (seconds from the start) are set once the server closes it."""

    def __init__(self, port: int, prefix: bytes, slow: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.start = time.monotonic()
        self.sock.sendall(prefix)
        self.stop = threading.Event()
        self.response: bytes | None = None
        self.cut = 0.0
        self.threads = [
            threading.Thread(target=trickle, args=(self.sock, slow, self.stop, 0.3)),
            threading.Thread(target=self._read),
        ]
        for thread in self.threads:
            thread.start()

    def _read(self) -> None:
        response = read_until_closed(self.sock)
        self.cut = time.monotonic() - self.start
        self.response = response

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()
        self.sock.close()


def test_trickling_clients_holding_every_worker_are_cut_at_the_bound_then_others_are_served(guarded: Server) -> None:
    workers = guarded.worker_pids()
    slow_line = b"GET /" + b"a" * 500 + b" HTTP/1.1\r\n"
    first = SlowClient(guarded.port, b"", slow_line)
    clients = [first]
    try:
        wait_for(lambda: reading(guarded), timeout=BOUND, what="the slow request being read")
        # Neither slow client takes a worker: their connections wait in the workers' event
        # loops, and the normal client is served at once (at the latest when a slow one is cut).
        clients.append(SlowClient(guarded.port, b"GET /headers?status HTTP/1.1\r\n", b"X-Slow: " + b"a" * 500))
        status = guarded.get("/headers?status", timeout=30)[0]
        served = time.monotonic() - first.start
        wait_for(lambda: all(client.response is not None for client in clients), timeout=BOUND + 1, what="both cut")
    finally:
        for client in clients:
            client.close()
    assert [parse_responses(client.response or b"") for client in clients] == [[408], [408]]
    assert all(client.cut <= BOUND + 0.5 for client in clients), [client.cut for client in clients]
    assert status == 201
    assert served <= first.cut + 1  # a worker freed by the cut serves the waiting client at once
    assert guarded.worker_pids() == workers


def test_a_trickled_body_is_cut_at_the_body_bound(guarded: Server) -> None:
    client = SlowClient(guarded.port, b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 500\r\n\r\n", b"b" * 500)
    try:
        # body=2: a fixed 2 s, extended by a negligible byte per 0.3 s. The deadline is the assertion.
        left = client.start + 2.5 - time.monotonic()
        wait_for(lambda: client.response is not None, timeout=left, what="the slow body to be cut within 2.5 s")
    finally:
        client.close()
    assert parse_responses(client.response or b"") == [408]
    assert guarded.get("/headers?status")[0] == 201


def test_a_silent_connection_is_closed_at_the_header_bound(guarded: Server) -> None:
    """The idle-connection flood: a connection that sends nothing holds its worker for
    RequestReadTimeout header= (2 s here, 20 by default), not Timeout (60)."""
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=30) as sock:
        # Nothing to answer: closed silently, within 2.5 s.
        assert read_until_closed(sock, deadline=time.monotonic() + 2.5) == b""


def test_an_idle_keep_alive_connection_is_bounded_by_keep_alive_timeout(guarded: Server) -> None:
    """As with mod_reqtimeout, the wait for a next request is KeepAliveTimeout's (4 s here);
    RequestReadTimeout header= starts with the request's first byte."""
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=30) as sock:
        sock.sendall(GOOD)
        answer = sock.recv(65536)
        answered = time.monotonic()  # KeepAliveTimeout counts from the response, not from the request
        answer += read_until_closed(sock, deadline=answered + 5)
        assert parse_responses(answer) == [201]  # then nothing: no 408
        assert time.monotonic() - answered >= 3


def test_still_serving_after_everything(server: Server, pair: Server) -> None:
    for srv in (server, pair):
        assert srv.get("/headers?status")[0] == 201
        assert srv.request("POST", "/echo", body=b"x" * 1000)[2] == b"x" * 1000
