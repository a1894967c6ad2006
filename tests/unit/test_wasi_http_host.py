"""The wasi:http host's pure parts: fields as wasmtime keeps them, the request as the guest
sees it, the guest's response as the server sends it, and the outbound allowlist."""

from __future__ import annotations

import time

import pytest

from prefork_wasm import outbound, wasi_filesystem
from prefork_wasm.component_host import Err, Ok
from prefork_wasm.messages import Request
from prefork_wasm.wasi_http import Host
from prefork_wasm.wasi_http_resources import (
    Exchange,
    Fields,
    OutgoingBody,
    OutgoingRequest,
    OutgoingResponse,
    ResponseError,
    ResponseOutparam,
    Sink,
    Stopped,
    Timer,
    incoming_request,
    response_of,
)


def request(target: str = "/p?q=1", headers: list[tuple[bytes, bytes]] | None = None, body: bytes = b"") -> Request:
    return Request("GET", target, "1.1", headers if headers is not None else [(b"host", b"example.test")],
                   "127.0.0.1", 1, 80, "r-1", time.time(), body)


def exchange(req: Request | None = None, body_limit: int = 0, **kw: object) -> Exchange:
    return Exchange(incoming_request(req or request()), body_limit, time.monotonic() + 5, **kw)  # type: ignore[arg-type]


def host_for(ex: Exchange) -> Host:
    host = Host()
    host.exchange = ex
    return host


def test_fields_group_each_names_values_in_the_order_the_name_first_came() -> None:
    fields = Fields([("a", b"1"), ("b", b"2"), ("a", b"3")])
    assert fields.entries() == [("a", b"1"), ("a", b"3"), ("b", b"2")]


def test_a_guest_cannot_set_invalid_forbidden_or_immutable_fields() -> None:
    host = host_for(exchange())
    fields = host.fields_from_list([("X-Mixed", b"v")])
    assert fields.entries() == [("x-mixed", b"v")]
    for name, value, error in [("bad name", b"v", "invalid-syntax"), ("x", b"a\r\nb", "invalid-syntax"),
                               ("x", b"nul\x00", "invalid-syntax"), ("Connection", b"close", "forbidden"),
                               ("host", b"h", "forbidden"), ("transfer-encoding", b"chunked", "forbidden")]:
        with pytest.raises(Err) as caught:
            host.fields_append(fields, name, value)
        assert caught.value.value == error
    frozen = fields.copy(immutable=True)
    with pytest.raises(Err) as caught:
        host.fields_set(frozen, "x", [b"1"])
    assert caught.value.value == "immutable"
    host.fields_set(fields, "X-Mixed", [b"1", b"2"])
    assert host.fields_get(fields, "x-MIXED") == [b"1", b"2"] and host.fields_has(fields, "X-mixed")


def test_the_request_is_given_as_wasmtime_serve_gives_it() -> None:
    req = request("/p/q?x=1", [(b"host", b"example.test:8080"), (b"x-a", b"1"), (b"connection", b"keep-alive"),
                               (b"x-b", b"2"), (b"x-a", b"3"), (b"te", b"trailers")])
    incoming = incoming_request(req)
    assert (incoming.path_with_query, incoming.authority, incoming.scheme) == ("/p/q?x=1", "example.test:8080", "http")
    assert incoming.headers.entries() == [("x-a", b"1"), ("x-a", b"3"), ("x-b", b"2"), ("te", b"trailers")]
    assert incoming.headers.immutable
    absolute = incoming_request(request("http://other.test/x?y", [(b"host", b"example.test")]))
    assert (absolute.path_with_query, absolute.authority) == ("/x?y", "other.test")
    assert incoming_request(request("/", [])).authority is None


def test_the_request_body_is_read_once_as_a_stream() -> None:
    ex = exchange(request(body=b"0123456789"))
    host = host_for(ex)
    body = host.request_consume(ex.request)
    with pytest.raises(Err):
        host.request_consume(ex.request)
    stream = host.body_stream(body)
    assert [host.read(stream, 4), host.read(stream, 4), host.read(stream, 4)] == [b"0123", b"4567", b"89"]
    with pytest.raises(Err) as caught:
        host.read(stream, 4)
    assert caught.value.value == "closed"


def respond(
    ex: Exchange, status: int, fields: list[tuple[str, bytes]], chunks: list[bytes], finish: bool = True
) -> None:
    host = host_for(ex)
    response = OutgoingResponse(host.fields_from_list(fields))
    host.set_status(response, status)
    body = host.response_body(response)
    stream = host.body_write(body)
    for chunk in chunks:
        host.write(stream, chunk)
    if finish:
        host.body_finish(body, None)
    host.outparam_set(ResponseOutparam(ex), Ok(response))


def test_the_guests_response_becomes_the_servers_with_the_length_it_wrote() -> None:
    ex = exchange()
    respond(ex, 404, [("content-type", b"text/plain"), ("x-a", b"1"), ("x-a", b"2")], [b"no ", b"such page"])
    response = response_of(ex)
    assert (response.status, response.headers, bytes(response.body)) == (
        404, [(b"content-type", b"text/plain"), (b"x-a", b"1"), (b"x-a", b"2")], b"no such page"
    )
    declared = exchange()
    respond(declared, 200, [("content-length", b"5")], [b"hello"])
    assert response_of(declared).headers == [] and bytes(response_of(declared).body) == b"hello"


@pytest.mark.parametrize(("status", "fields", "chunks", "finish", "answer", "why"), [
    (200, [("content-length", b"9")], [b"short"], True, 502, "declared content-length 9 but wrote 5 bytes"),
    (103, [], [], True, 502, "set status 103"),
    (200, [], [b"partial"], False, 502, "did not finish its response body"),
])
def test_a_response_that_cannot_be_sent_is_an_error(
    status: int, fields: list[tuple[str, bytes]], chunks: list[bytes], finish: bool, answer: int, why: str
) -> None:
    ex = exchange()
    respond(ex, status, fields, chunks, finish)
    with pytest.raises(ResponseError) as caught:
        response_of(ex)
    assert caught.value.status == answer and why in str(caught.value)


def test_no_response_or_an_error_code_is_a_500() -> None:
    with pytest.raises(ResponseError, match="without setting a response") as caught:
        response_of(exchange())
    assert caught.value.status == 500
    ex = exchange()
    host_for(ex).outparam_set(ResponseOutparam(ex), Err("internal-error"))
    with pytest.raises(ResponseError, match="error internal-error"):
        response_of(ex)


def test_a_body_past_limit_response_body_stops_the_guest() -> None:
    ex = exchange(body_limit=10)
    with pytest.raises(Stopped) as caught:
        respond(ex, 200, [], [b"12345", b"678901"])
    assert caught.value.reason == "too-large"


def test_waiting_past_wasm_timeout_stops_the_guest() -> None:
    ex = exchange()
    ex.deadline = time.monotonic() + 0.05
    host = host_for(ex)
    started = time.monotonic()
    with pytest.raises(Stopped) as caught:
        host.block(Timer(time.monotonic_ns() + 10_000_000_000))
    assert caught.value.reason == "timeout" and time.monotonic() - started < 1
    soon = Timer(time.monotonic_ns())
    assert host.poll([Timer(time.monotonic_ns() + 10**12), soon]) == [1]


def test_an_outbound_request_nothing_allows_is_denied_and_logged() -> None:
    lines: list[str] = []
    ex = exchange(policy=outbound.Policy((outbound.parse_destination("https://api.example.com"),)), log=lines.append)
    host = host_for(ex)
    req = OutgoingRequest(Fields())
    host.set_scheme(req, "HTTP")
    host.set_authority(req, "127.0.0.1:9")
    with pytest.raises(Err) as caught:
        host.outgoing_handle(req, None)
    assert caught.value.value == "HTTP-request-denied"
    assert lines == ["outbound request to http://127.0.0.1:9 denied: no WasmAllowOutbound allows it"]


def test_an_outgoing_body_over_the_outbound_limit_fails_the_write() -> None:
    ex = exchange(policy=outbound.Policy(max_body=4))
    host = host_for(ex)
    body = host.request_body(OutgoingRequest(Fields()))
    assert isinstance(body, OutgoingBody)
    with pytest.raises(Err) as caught:
        host.write(host.body_write(body), b"12345")
    assert caught.value.value[0] == "last-operation-failed"


@pytest.mark.parametrize(("pattern", "allowed", "refused"), [
    (
        "http://127.0.0.1:8081",
        [("http", "127.0.0.1", 8081)],
        [("http", "127.0.0.1", 8082), ("https", "127.0.0.1", 8081)],
    ),
    ("https://api.example.com", [("https", "API.example.com", 443)], [("https", "api.example.com", 8443)]),
    ("https://*.example.com", [("https", "a.b.example.com", 443)], [("https", "example.com", 443)]),
    ("*://localhost:*", [("http", "localhost", 1), ("https", "localhost", 65535)], [("http", "localhost.example", 80)]),
    ("http://[::1]:80", [("http", "::1", 80)], [("http", "::2", 80)]),
])
def test_destinations_match_as_spins_allowed_outbound_hosts(
    pattern: str, allowed: list[tuple[str, str, int]], refused: list[tuple[str, str, int]]
) -> None:
    destination = outbound.parse_destination(pattern)
    assert all(destination.allows(*where) for where in allowed)
    assert not any(destination.allows(*where) for where in refused)


@pytest.mark.parametrize("pattern", ["example.com", "ftp://x", "http://", "http://x/path", "*://x", "http://x:0",
                                     "http://a*.example.com", "http://x:port"])
def test_a_malformed_destination_says_the_form_it_needs(pattern: str) -> None:
    with pytest.raises(ValueError, match="SCHEME://HOST|port|host"):
        outbound.parse_destination(pattern)


def test_an_authority_splits_into_host_and_port() -> None:
    assert outbound.split_authority("example.test", "https") == ("example.test", 443)
    assert outbound.split_authority("[::1]:8080", "http") == ("::1", 8080)
    for bad in ("user@host", "host:x", ":80", "[::1]x"):
        with pytest.raises(ValueError):
            outbound.split_authority(bad, "http")


def test_sink_counts_what_it_drops_past_its_limit() -> None:
    seen: list[int] = []
    sink = Sink(4, seen.append)
    sink.write(b"abc")
    sink.write(b"de")
    assert (sink.value(), seen) == (b"abc", [5])


def test_a_guest_path_stays_beneath_its_mount() -> None:
    assert wasi_filesystem._components("a/./b/../c") == ["a", "c"]
    assert wasi_filesystem._components(".") == []
    for path, error in [("../x", "not-permitted"), ("a/../../x", "not-permitted"), ("/etc", "not-permitted"),
                        ("", "invalid"), ("a\0b", "invalid")]:
        with pytest.raises(Err) as caught:
            wasi_filesystem._components(path)
        assert caught.value.value == error
