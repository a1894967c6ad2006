"""Property-based fuzzing of the request path against the real server (hypothesis).

Inputs are mutated valid requests (bytes inserted, deleted, replaced, duplicated) and
generated ones (random methods, targets, versions, header names and values, chunk framing).
The property, for every input: the server answers with nothing but well-formed HTTP/1.1
responses, or closes; it does so within a bound; no answer is a 5xx except the protocol-level
501 and 505; no worker dies.

CI runs a fixed, derandomized budget. Long runs with random seeds: scripts/fuzz-http, which
sets FUZZ_HTTP_EXAMPLES. A failure prints the falsifying bytes: add them to CORPUS in
test_hostile_http.py with the expected outcome once fixed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from harness import Server
from test_hostile_http import TIMEOUT, exchange, parse_responses, pool

EXAMPLES = int(os.environ.get("FUZZ_HTTP_EXAMPLES", "150"))
LONG_RUN = "FUZZ_HTTP_EXAMPLES" in os.environ

# Only modules that cannot fail whatever the request: non-CGI, so the guest's output is the
# body and never parsed. Anything else is a 404.
CONFIG = pool(1) + f"""
Timeout {TIMEOUT}
KeepAliveTimeout {TIMEOUT}
LimitRequestLine 512
LimitRequestFieldSize 256
LimitRequestFields 16
<Location /plain>
    SetHandler wasm-handler
    WasmModule ${{EXAMPLES}}/plain.wasm
</Location>
<Location /echo>
    SetHandler wasm-handler
    WasmModule ${{EXAMPLES}}/echo.wasm
    LimitRequestBody 4K
</Location>
"""

PROTOCOL_5XX = {501, 505}  # Not Implemented (CONNECT, transfer codings), HTTP Version Not Supported


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("fuzz"), CONFIG, start_servers=1).start()
    yield srv
    srv.stop()


SEEDS = [
    b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /plain?a=b HTTP/1.0\r\nUser-Agent: fuzz\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\n\r\n",
    b"PUT /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
    b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET http://x/plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"b" * 5000,  # over LimitRequestBody
    b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1388\r\n" + b"b" * 5000 + b"\r\n0\r\n\r\n",
]

# Bytes that matter to HTTP framing, more likely than uniform random ones to reach new code.
INTERESTING = st.sampled_from(
    [b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b"\x00", b";", b",", b"-", b"0", b"f", b"\xff",
     b"\r\n\r\n", b"chunked", b"Content-Length: 9\r\n", b"Transfer-Encoding: chunked\r\n",
     b"Host: y\r\n", b" HTTP/1.1", b"HTTP/2.0", b"\r\n "]
)
SNIPPET = st.one_of(INTERESTING, st.binary(min_size=1, max_size=8))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A seed request with a few random edits."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        size = draw(st.integers(1, 8))
        edit = draw(st.sampled_from(["insert", "delete", "replace", "duplicate"]))
        if edit == "insert":
            data[at:at] = draw(SNIPPET)
        elif edit == "delete":
            del data[at : at + size]
        elif edit == "replace":
            data[at : at + size] = draw(SNIPPET)
        else:
            data[at:at] = data[at : at + size]
    return bytes(data)


TOKEN = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-!#$%&'*+.^_`|~", min_size=1, max_size=12
)
PRINTABLE = st.text("".join(map(chr, range(0x20, 0x7F))) + "\t", max_size=40).map(str.encode)
FIELD_NAME = st.one_of(
    st.sampled_from(["Host", "Content-Length", "Transfer-Encoding", "Expect", "Connection", "Upgrade", "Cookie"]),
    TOKEN,
    TOKEN,
    st.text(max_size=6),  # anything, even empty or with spaces and colons
).map(str.encode)
FIELD_VALUE = st.one_of(
    st.sampled_from([b"chunked", b"gzip, chunked", b"close", b"100-continue", b"5", b"0", b"-1", b"99999", b"v" * 300]),
    PRINTABLE,
    PRINTABLE,
    st.binary(max_size=20),
)


@st.composite
def chunk_framing(draw: st.DrawFn) -> bytes:
    """A chunked body whose declared sizes, extensions and line ends may or may not be right."""
    body = b""
    for data in draw(st.lists(st.binary(max_size=40), max_size=4)):
        size = len(data) + draw(st.sampled_from([0, 0, 0, -1, 1, 1 << 40]))
        size_text = b"%x" % size if size >= 0 else b"-1"
        ext = draw(st.sampled_from([b"", b";a=b", b" ", b";" + b"e" * 300]))
        end = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n", b""]))
        body += size_text + ext + b"\r\n" + data + end
    return body + draw(st.sampled_from([b"0\r\n\r\n", b"0\r\nX-T: v\r\n\r\n", b"0\r\n", b""]))


@st.composite
def generated(draw: st.DrawFn) -> bytes:
    """A request built from random parts: method, target, version, fields, framed body."""
    method = draw(st.one_of(st.sampled_from(["GET", "POST", "PUT", "OPTIONS", "CONNECT", "BREW"]), TOKEN)).encode()
    target = draw(st.one_of(
        st.sampled_from([b"/plain", b"/echo", b"/echo?x=1", b"*", b"http://x/plain", b"/nothing", b"/" + b"a" * 600]),
        st.sampled_from([b"/plain?", b"/echo/", b"/"]).flatmap(
            lambda p: PRINTABLE.map(lambda q: p + q.replace(b" ", b"+"))
        ),
        st.binary(min_size=1, max_size=30),
    ))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.9"]))
    fields = draw(st.lists(st.tuples(FIELD_NAME, FIELD_VALUE), max_size=18))
    if draw(st.integers(0, 4)):  # mostly: HTTP/1.1 without Host is always 400
        fields.insert(0, (b"Host", b"x"))
    body = draw(st.one_of(chunk_framing(), st.binary(max_size=60), st.just(b"b" * 5000)))
    head = b"%s %s %s\r\n" % (method, target, version)
    return head + b"".join(b"%s: %s\r\n" % field for field in fields) + b"\r\n" + body


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not LONG_RUN,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.one_of(mutated(), generated()))
def test_any_request_gets_wellformed_answers_and_no_worker_dies(server: Server, data: bytes) -> None:
    assume(b"HEAD" not in data)  # a HEAD response has no body to check framing against
    workers = server.worker_pids()
    start = time.monotonic()
    statuses = parse_responses(exchange(server.port, data, eof=True))  # EOF: nothing waits for Timeout
    assert time.monotonic() - start < TIMEOUT + 1
    event(f"answers {statuses}")  # shown by --hypothesis-show-statistics
    assert all(status < 500 or status in PROTOCOL_5XX for status in statuses), statuses
    assert server.worker_pids() == workers


def test_still_serving_after_the_fuzzing(server: Server) -> None:
    assert server.get("/plain")[2] == b"plain output, no CGI headers\n"
    assert server.request("POST", "/echo", body=b"abc")[2].endswith(b"\r\n\r\nabc")  # non-CGI: all is body
