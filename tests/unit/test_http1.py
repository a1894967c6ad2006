"""prefork_wasm.http1, fed bytes: the request checks (head limits, request line, body framing,
transfer codings) and the response head (the socket side is
tests/integration/test_hostile_http.py)."""

from __future__ import annotations

import dataclasses

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefork_wasm.http1 import (
    CONTINUE,
    FORBIDDEN_TRAILERS,
    MAX_FIELDS,
    ChunkedScanner,
    HeadScanner,
    Limits,
    Refused,
    RequestParser,
    ResponseHeadError,
    body_length,
    check_request_line,
    common_head,
    framed_head,
    max_head_size,
    response_head,
    transfer_coding_refusal,
)
from prefork_wasm.messages import FileBody, Response

LIMITS = Limits(
    timeout=2, keep_alive=True, keep_alive_timeout=2, max_keep_alive_requests=0,
    request_line=40, field_size=30, fields=4,
)


def scan(*chunks: bytes, limits: Limits = LIMITS) -> HeadScanner:
    scanner = HeadScanner(limits)
    for chunk in chunks:
        scanner.feed(chunk)
    return scanner


def refusal(*chunks: bytes, limits: Limits = LIMITS) -> int | None:
    """The status the scanner refuses with, or None when it accepts what it saw."""
    try:
        scan(*chunks, limits=limits)
    except Refused as e:
        return e.status
    return None


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


GOOD = b"GET /x HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n"


# --- HeadScanner ---------------------------------------------------------------------------


def test_a_good_head_is_done_in_one_packet_or_a_byte_at_a_time() -> None:
    assert scan(GOOD).done
    assert scan(*bytewise(GOOD)).done
    assert not scan(GOOD[:-1]).done  # the blank line is not complete yet


def test_the_scan_stops_at_the_blank_line_and_ignores_the_body() -> None:
    body = b"x" * 500 + b"\n \n\n"  # would break every rule if it were head
    assert scan(GOOD + body).done
    assert scan(GOOD[:10], GOOD[10:] + body).done


def test_raw_keeps_one_packet_by_reference_and_joins_several() -> None:
    assert scan(GOOD).raw is GOOD
    assert bytes(scan(*bytewise(GOOD)).raw) == GOOD


def line_of(length: int) -> bytes:
    """A request line of exactly `length` bytes (CRLF excluded)."""
    return b"GET /" + b"a" * (length - 14) + b" HTTP/1.1"


@pytest.mark.parametrize("split", [False, True], ids=["one-packet", "bytewise"])
def test_request_line_limit_is_414_one_byte_over(split: bool) -> None:
    for length, expected in [(40, None), (41, 414)]:
        head = line_of(length) + b"\r\nHost: a\r\n\r\n"
        assert len(line_of(length)) == length
        assert refusal(*(bytewise(head) if split else [head])) == expected


def test_an_endless_request_line_is_refused_before_its_end() -> None:
    # LimitRequestLine + CR + one more byte: no CRLF needed to know it is too long.
    assert refusal(b"GET /" + b"a" * 36) is None
    assert refusal(b"GET /" + b"a" * 37) == 414
    assert refusal(*bytewise(b"GET /" + b"a" * 37)) == 414


@pytest.mark.parametrize("split", [False, True], ids=["one-packet", "bytewise"])
def test_field_size_limit_is_431_one_byte_over(split: bool) -> None:
    for length, expected in [(30, None), (31, 431)]:
        field = b"X: " + b"v" * (length - 3)
        head = b"GET / HTTP/1.1\r\nHost: a\r\n" + field + b"\r\n\r\n"
        assert refusal(*(bytewise(head) if split else [head])) == expected


def test_an_endless_field_is_refused_before_its_end() -> None:
    assert refusal(b"GET / HTTP/1.1\r\nX: " + b"v" * 29) == 431


@pytest.mark.parametrize("split", [False, True], ids=["one-packet", "bytewise"])
def test_field_count_limit_is_431_one_field_over(split: bool) -> None:
    for count, expected in [(4, None), (5, 431)]:
        head = b"GET / HTTP/1.1\r\n" + b"".join(b"F%d: v\r\n" % i for i in range(count)) + b"\r\n"
        assert refusal(*(bytewise(head) if split else [head])) == expected


def test_too_many_fields_are_refused_before_the_blank_line() -> None:
    assert refusal(b"GET / HTTP/1.1\r\n" + b"F: v\r\n" * 5) == 431


def test_limit_request_fields_zero_is_unlimited() -> None:
    unlimited = dataclasses.replace(LIMITS, fields=0)
    head = b"GET / HTTP/1.1\r\n" + b"F: v\r\n" * 1000 + b"\r\n"
    assert scan(head, limits=unlimited).done
    assert max_head_size(unlimited) == 40 + 2 + MAX_FIELDS * (30 + 2) + 2


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\n",
        b"GET / HTTP/1.1\nHost: a\n\n",
    ],
    ids=["request-line", "field", "blank-line", "all"],
)
def test_bare_lf_is_400(head: bytes) -> None:
    assert refusal(head) == 400
    assert refusal(*bytewise(head)) == 400


def test_a_crlf_split_between_packets_is_fine() -> None:
    assert scan(b"GET / HTTP/1.1\r", b"\nHost: a\r", b"\n\r", b"\n").done


@pytest.mark.parametrize("fold", [b" b", b"\tb"], ids=["space", "tab"])
def test_obs_fold_is_400(fold: bytes) -> None:
    head = b"GET / HTTP/1.1\r\nX: a\r\n" + fold + b"\r\n\r\n"
    assert refusal(head) == 400
    assert refusal(*bytewise(head)) == 400


def test_a_tab_inside_a_value_is_no_fold() -> None:
    assert scan(b"GET / HTTP/1.1\r\nX: a\tb\r\n\r\n").done


def skipped(*chunks: bytes) -> bytes:
    """What h11 is given of `chunks`: each minus the empty lines `feed` says to skip."""
    scanner = HeadScanner(LIMITS)
    return b"".join(chunk[scanner.feed(chunk) :] for chunk in chunks)


@pytest.mark.parametrize("blank", [b"\r\n", b"\r\n" * 10], ids=["one", "ten"])
def test_empty_lines_before_the_request_line_are_skipped(blank: bytes) -> None:
    head = blank + GOOD
    assert skipped(head) == GOOD
    assert skipped(*bytewise(head)) == GOOD  # a CR and its LF in different packets too
    assert skipped(blank, GOOD) == GOOD
    assert scan(head).done and scan(head).raw == GOOD


@pytest.mark.parametrize(
    "head, status",
    [
        (b"\r\n" * 11 + GOOD, 400),  # Apache's limit, DEFAULT_LIMIT_BLANK_LINES
        (b"\n" + GOOD, 400),  # a bare LF is no empty line
        (b"\r" + GOOD, None),  # a bare CR: h11 refuses the line it starts (400)
    ],
    ids=["eleven", "bare-lf", "bare-cr"],
)
def test_what_is_no_skippable_empty_line(head: bytes, status: int | None) -> None:
    assert refusal(head) == status
    assert refusal(*bytewise(head)) == (status or 400)  # split, the CR is known bare at once


@pytest.mark.parametrize(
    "byte", [bytes([c]) for c in [*range(0x01, 0x09), *range(0x0B, 0x0D), *range(0x0E, 0x20), 0x7F, 0x00]]
)
def test_a_control_character_in_a_value_is_400(byte: bytes) -> None:
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX: a" + byte + b"b\r\n\r\n"
    assert refusal(head) == 400
    assert refusal(*bytewise(head)) == 400


def test_htab_and_obs_text_in_a_value_are_fine() -> None:
    assert scan(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\tb\x80\xe9\xff\r\n\r\n").done


def test_size_is_where_the_head_ends() -> None:
    for chunks in ([GOOD + b"body"], bytewise(GOOD + b"body"), [GOOD[:5], GOOD[5:] + b"body"]):
        scanner = scan(*chunks)
        assert scanner.raw[: scanner.size] == GOOD


# The fast path (one packet, short head) and the line-by-line scan must agree on every head made
# of lines without CR or LF inside, whatever their line ends, leading whitespace and lengths.
LINE = st.tuples(
    st.sampled_from([b"", b" ", b"\t"]),
    st.binary(max_size=45).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from([b"\r\n", b"\r\n", b"\n"]),
).map(b"".join)


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(st.lists(LINE, min_size=1, max_size=8), st.sampled_from([b"\r\n", b"\n", b""]))
def test_fast_path_agrees_with_the_line_scan(lines: list[bytes], end: bytes) -> None:
    head = b"".join(lines) + end
    assert refusal(head) == refusal(*bytewise(head))
    if refusal(head) is None:
        assert scan(head).done == scan(*bytewise(head)).done


# --- request line --------------------------------------------------------------------------


Fields = list[tuple[bytes, bytes]]


def request(method: bytes, target: bytes, version: bytes, headers: Fields) -> tuple[h11.Request, Fields]:
    event = h11.Request(method=method, target=target, http_version=version, headers=headers)
    return event, list(event.headers)


@pytest.mark.parametrize(
    "method, target, version, headers, status",
    [
        (b"GET", b"/x?y", b"1.1", [(b"host", b"a")], None),
        (b"GET", b"/", b"1.0", [], None),  # HTTP/1.0 needs no Host
        (b"GET", b"/", b"1.2", [(b"host", b"a")], None),  # a newer 1.x minor is served as 1.1
        (b"GET", b"/", b"1.2", [], 400),  # ... and needs a Host like 1.1 (h11 checks 1.1 only)
        (b"GET", b"/", b"0.9", [], 400),
        (b"GET", b"/", b"2.0", [(b"host", b"a")], 505),
        (b"GET", b"/", b"9.9", [(b"host", b"a")], 505),
        (b"OPTIONS", b"*", b"1.1", [(b"host", b"a")], None),
        (b"GET", b"*", b"1.1", [(b"host", b"a")], 400),
        (b"GET", b"http://a/x", b"1.1", [(b"host", b"a")], None),
        (b"GET", b"HTTPS://a", b"1.1", [(b"host", b"a")], None),
        (b"GET", b"ftp://a/x", b"1.1", [(b"host", b"a")], 400),
        (b"GET", b"http:///x", b"1.1", [(b"host", b"a")], 400),
        (b"GET", b"x", b"1.1", [(b"host", b"a")], 400),
        (b"GET", b"/a#b", b"1.1", [(b"host", b"a")], 400),
        (b"CONNECT", b"a:443", b"1.1", [(b"host", b"a")], 501),
        (b"CONNECT", b"/x", b"1.1", [(b"host", b"a")], 501),
    ],
)
def test_check_request_line(method: bytes, target: bytes, version: bytes, headers: Fields, status: int | None) -> None:
    event, parsed = request(method, target, version, headers)
    if status is None:
        check_request_line(event.method, event.target, event.http_version, parsed)
    else:
        with pytest.raises(Refused) as e:
            check_request_line(event.method, event.target, event.http_version, parsed)
        assert e.value.status == status


# --- body framing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version, headers, expected",
    [
        (b"1.1", [], 0),
        (b"1.1", [(b"content-length", b"12")], 12),
        (b"1.1", [(b"transfer-encoding", b"chunked")], None),
        (b"1.0", [(b"content-length", b"3")], 3),
    ],
)
def test_body_length(version: bytes, headers: Fields, expected: int | None) -> None:
    assert body_length(version, headers, raw_head(headers)) == expected


def raw_head(headers: Fields) -> bytes:
    return b"POST / HTTP/1.1\r\n" + b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n"


@pytest.mark.parametrize(
    "fields",
    [b"Content-Length: 5, 5", b"Content-Length: 5\r\nContent-Length: 5", b"content-length: 5,5"],
)
def test_content_length_as_a_list_or_twice_is_400(fields: bytes) -> None:
    head = b"POST / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n\r\n"
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    event = conn.next_event()  # h11 takes each as Content-Length: 5
    assert isinstance(event, h11.Request)
    with pytest.raises(Refused) as e:
        body_length(b"1.1", list(event.headers), head)
    assert e.value.status == 400


def test_content_length_with_whitespace_around_it_is_fine() -> None:
    head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \t5 \r\n\r\n"
    assert body_length(b"1.1", [(b"content-length", b"5")], head) == 5


@pytest.mark.parametrize(
    "version, headers",
    [
        (b"1.1", [(b"content-length", b"5"), (b"transfer-encoding", b"chunked")]),
        (b"1.1", [(b"transfer-encoding", b"chunked"), (b"content-length", b"5")]),
        (b"1.0", [(b"transfer-encoding", b"chunked")]),
    ],
    ids=["cl-te", "te-cl", "te-in-1.0"],
)
def test_ambiguous_framing_is_400(version: bytes, headers: Fields) -> None:
    with pytest.raises(Refused) as e:
        body_length(version, headers, raw_head(headers))
    assert e.value.status == 400


@pytest.mark.parametrize(
    "fields, status",
    [
        (b"Transfer-Encoding: gzip, chunked", 501),
        (b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked", 501),
        (b"transfer-encoding: GZIP ,CHUNKED ", 501),
        (b"Transfer-Encoding: chunkedx", 400),
        (b"Transfer-Encoding: chunked, gzip", 400),
        (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", 400),
        (b"Transfer-Encoding: chunked, chunked", 400),
        (b"Transfer-Encoding: identity", 400),
        (b"Transfer-Encoding:", 400),
    ],
)
def test_transfer_coding_refusal(fields: bytes, status: int) -> None:
    head = b"POST / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n\r\n0\r\nTransfer-Encoding: gzip\r\n\r\n"
    with pytest.raises(h11.RemoteProtocolError) as e:  # what h11 makes of it: 501 for all
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(head)
        conn.next_event()
    assert e.value.error_status_hint == 501
    assert transfer_coding_refusal(head).status == status


# --- chunked framing -----------------------------------------------------------------------


def chunked(*chunks: bytes, limits: Limits = LIMITS) -> ChunkedScanner:
    scanner = ChunkedScanner(limits)
    for chunk in chunks:
        scanner.feed(chunk)
    return scanner


def chunked_refusal(body: bytes) -> int | None:
    """The status for `body`, the same whether it comes in one packet or a byte at a time."""
    statuses = set()
    for chunks in ([body], bytewise(body)):
        try:
            chunked(*chunks)
            statuses.add(None)
        except Refused as e:
            statuses.add(e.status)
    assert len(statuses) == 1, statuses
    return statuses.pop()


GOOD_BODIES = [
    b"0\r\n\r\n",
    b"5\r\nhello\r\n0\r\n\r\n",
    b"00005\r\nhello\r\n3\r\nabc\r\n000\r\n\r\n",
    b"A;x=1\r\n0123456789\r\n0\r\n\r\n",
    b'3;a;b=c;d="q \\" ;\\\\\t"\r\nabc\r\n0;e\r\n\r\n',
    b"1\r\n\n\r\n0\r\nX-Trailer: t\tu\x80\r\nY:\r\n\r\n",  # the data may hold any byte
    # RFC 9112 7.1.1: BWS around ';' and '=' of an extension, which a recipient must parse.
    b"5; name=value\r\nhello\r\n0\r\n\r\n",
    b"5 ;a=b\r\nhello\r\n0\r\n\r\n",
    b"5\t; a = \"b c\" ;d\r\nhello\r\n0 ; e\r\n\r\n",
    b"5;a = b\r\nhello\r\n0\r\n\r\n",
    # Trailer fields other than framing and Host are discarded, not refused (as gunicorn does).
    b"0\r\nContent-Type: text/plain\r\nVary: *\r\nAuthorization: x\r\n\r\n",
]


@pytest.mark.parametrize("body", GOOD_BODIES)
def test_a_good_chunked_body_is_done_at_its_end_whatever_the_split(body: bytes) -> None:
    next_request = b"GET / HTTP/1.1\r\n\r\n"
    for cut in range(len(body) + 1):  # every packet boundary
        scanner = ChunkedScanner(LIMITS)
        first = scanner.feed(body[:cut])
        assert not scanner.done or cut == len(body)
        assert scanner.feed(body[cut:] + next_request) == len(body) - first
        assert scanner.done
    assert chunked_refusal(body) is None


@pytest.mark.parametrize(
    "body",
    [
        b"41;a=b\r\r\n" + b"x" * 0x41 + b"\r\n0\r\n\r\n",  # the smuggling shape: a bare CR
        b"5;a=b\rc\r\nhello\r\n0\r\n\r\n",
        b"5;a=\x00\r\nhello\r\n0\r\n\r\n",
        b'5;a="b\r\nhello\r\n0\r\n\r\n',  # unbalanced quote
        b'5;a="b\x01"\r\nhello\r\n0\r\n\r\n',
        b"5 \r\nhello\r\n0\r\n\r\n",  # whitespace after the size
        b"5\t\r\nhello\r\n0\r\n\r\n",
        b"5;\r\nhello\r\n0\r\n\r\n",  # an extension without a name
        b"5;a=\r\nhello\r\n0\r\n\r\n",
        b"5;a=b c\r\nhello\r\n0\r\n\r\n",
        b"5;a@b\r\nhello\r\n0\r\n\r\n",
        b"\r\nhello\r\n0\r\n\r\n",  # no size
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"1" + b"0" * 20 + b"\r\n",  # 21 digits
        b"5\nhello\r\n0\r\n\r\n",  # bare LF
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhello\r\n0\r\n\n",
        b"5\r\nhelloX\r\n0\r\n\r\n",  # data longer than its size
        b"5\r\nhello\r\r\n0\r\n\r\n",
        b"0\r\n x: folded\r\n\r\n",
        b"0\r\nX : v\r\n\r\n",
        b"0\r\nNoColon\r\n\r\n",
        b"0\r\nX: a\x01b\r\n\r\n",
        b"0\r\nX: a\x7f\r\n\r\n",
        b"0\r\nX: a\rb\r\n\r\n",
    ],
)
def test_bad_chunked_framing_is_400(body: bytes) -> None:
    assert chunked_refusal(body) == 400


@pytest.mark.parametrize("name", sorted(FORBIDDEN_TRAILERS))
def test_framing_routing_and_other_forbidden_fields_in_a_trailer_are_400(name: bytes) -> None:
    assert chunked_refusal(b"0\r\n" + name.title() + b": 1\r\n\r\n") == 400


def test_chunk_lines_and_trailers_obey_the_head_limits() -> None:
    # LimitRequestFieldSize 30 for a chunk-size line and a trailer field, LimitRequestFields 4.
    ext = b";" + b"e" * 28
    assert chunked_refusal(b"1" + ext + b"\r\nx\r\n0\r\n\r\n") is None
    assert chunked_refusal(b"1" + ext + b"e\r\nx\r\n0\r\n\r\n") == 400
    assert chunked_refusal(b"1" + ext + b"e" * 1000) == 400  # before its end
    assert chunked_refusal(b"0\r\nX: " + b"v" * 27 + b"\r\n\r\n") is None
    assert chunked_refusal(b"0\r\nX: " + b"v" * 28 + b"\r\n\r\n") == 431
    assert chunked_refusal(b"0\r\n" + b"X: v\r\n" * 4 + b"\r\n") is None
    assert chunked_refusal(b"0\r\n" + b"X: v\r\n" * 5 + b"\r\n") == 431


def test_h11_accepts_what_the_chunked_scanner_accepts() -> None:
    """The scanner is the stricter of the two: h11 never refuses a body it let through (as the
    scanner forwards it), and ends it at the same byte."""
    for body in GOOD_BODIES:
        scanner = chunked(body + b"GET")
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + scanner.forward)
        while not isinstance(conn.next_event(), h11.EndOfMessage):
            pass
        assert conn.trailing_data[0] == b"GET"


# --- RequestParser: bytes in, Requests out


def parser(limits: Limits = LIMITS) -> RequestParser:
    parser = RequestParser(limits, ("192.0.2.1", 4321), 8080, "192.0.2.9")
    parser.next_request()
    return parser


def fed(parser: RequestParser, *chunks: bytes, eof: bool = False) -> bool:
    """Whether the parser is done with the head after `chunks` (`eof` after the last)."""
    done = False
    for i, chunk in enumerate(chunks):
        done = parser.head(chunk, eof and i == len(chunks) - 1)
    return done


def test_a_head_in_pieces_becomes_a_request_with_the_connection_s_facts() -> None:
    p = parser()
    assert not fed(p, *bytewise(GOOD[:-1]))
    assert fed(p, GOOD[-1:])
    request = p.request("id-1")
    assert (request.method, request.target, request.http_version) == ("GET", "/x", "1.1")
    assert request.headers == [(b"host", b"a"), (b"accept", b"*/*")]
    assert (request.remote_addr, request.remote_port, request.server_port, request.server_addr) == (
        "192.0.2.1", 4321, 8080, "192.0.2.9",
    )
    assert request.request_id == "id-1"
    assert p.check(request) == 0
    assert request.path == "/x"
    p.start_body(0, 0)
    assert p.body() == b""
    assert p.trailing == (b"", False)
    assert p.ready_for_next and not p.client_closes


def test_empty_lines_before_the_head_are_skipped_and_not_a_head_begun() -> None:
    p = parser()
    assert not fed(p, b"\r\n", b"\r\n")
    assert not p.scanner.raw
    assert fed(p, GOOD)
    assert p.request("1").target == "/x"


def test_pipelined_requests_follow_one_another() -> None:
    p = parser()
    assert fed(p, GOOD + b"\r\n" + GOOD.replace(b"/x", b"/y"))
    p.check(p.request("1"))
    p.start_body(0, 0)
    assert p.body() == b""
    pending, closed = p.trailing
    p.next_request()
    assert fed(p, pending, eof=closed)
    assert p.request("2").target == "/y"


def test_a_client_that_closes_before_a_head_is_closed_not_refused() -> None:
    p = parser()
    assert fed(p, b"", eof=True)
    assert p.closed


@pytest.mark.parametrize(
    "head, status",
    [
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # h11: no Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: x, chunked\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, x\r\n\r\n", 400),
        (b"GET /x\nHost: a\r\n\r\n", 400),  # the scanner: a bare LF
    ],
)
def test_what_h11_or_the_scanner_refuses_is_refused_with_its_status(head: bytes, status: int) -> None:
    with pytest.raises(Refused) as refused:
        fed(parser(), head)
    assert refused.value.status == status


def test_a_head_refused_after_h11_read_it_is_still_a_request() -> None:
    p = parser()
    assert fed(p, b"GET /a%2Fb HTTP/1.1\r\nHost: a\r\n\r\n")
    request = p.request("1")
    with pytest.raises(Refused) as refused:
        p.check(request)
    assert refused.value.status == 404  # AllowEncodedSlashes off
    assert request.target == "/a%2Fb"


def checked(head: bytes) -> int | None:
    """The status the head is refused with (by h11 or after it), None if it is served."""
    p = parser()
    try:
        assert fed(p, head)
        p.check(p.request("1"))
    except Refused as e:
        return e.status
    return None


@pytest.mark.parametrize(
    "host",
    [
        b"internal.test", b"INTERNAL.test:8080", b"127.0.0.1", b"127.0.0.1:80", b"[::1]", b"[::1]:443",
        b"[v1.fe80::a+en1]", b"a_b.test", b"xn--bch.ex", b"%41.test", b"internal.test:", b"",
    ],
)
def test_a_host_of_uri_host_and_port_is_served(host: bytes) -> None:
    assert checked(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n") is None
    if host:  # an http URI has a host (RFC 9110 4.2.1); an empty Host says there is none
        assert checked(b"GET http://" + host + b"/x HTTP/1.1\r\nHost: other\r\n\r\n") is None


@pytest.mark.parametrize(
    "host",
    [
        b"x@in.test",  # user info
        b"in.test/x",  # a path
        b"in\ttest",
        b"in.test\xff",
        b"in.test:99999",  # no such port
        b"in.test:abc",
        b"in.test:80:80",
        b"[::1",
        b"[not:an:ip]",
        b"::1",
        b"a b",
    ],
)
def test_an_invalid_host_is_400_as_rfc_9112_says(host: bytes) -> None:
    """RFC 9112 3.2: 'A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1
    request message that lacks a Host header field and to any request message that contains more
    than one Host header field line or a Host header field with an invalid field-value.'"""
    assert checked(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n") == 400
    if b" " not in host and b"\t" not in host and b"/" not in host:  # else the target is another
        assert checked(b"GET http://" + host + b"/x HTTP/1.1\r\nHost: a\r\n\r\n") == 400


def test_two_host_fields_are_400() -> None:
    assert checked(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n") == 400


POST_HEAD = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"
CHUNKED_HEAD = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


def body_of(head: bytes, *chunks: bytes, limit: int = 0) -> bytes | None:
    """The body the parser returns once `chunks` followed `head`, None if it wants more."""
    p = parser()
    assert fed(p, head)
    p.start_body(p.check(p.request("1")), limit)
    for chunk in chunks:
        p.feed_body(chunk)
    return p.body()


def test_a_body_with_the_head_or_after_it() -> None:
    assert body_of(POST_HEAD + b"hello") == b"hello"
    assert body_of(POST_HEAD, b"hel") is None
    assert body_of(POST_HEAD, b"hel", b"lo") == b"hello"
    assert body_of(CHUNKED_HEAD, b"3\r\nhel\r\n", b"2\r\nlo\r\n0\r\n\r\n") == b"hello"


def test_limit_request_body_refuses_a_content_length_at_once_and_a_chunked_body_as_it_passes() -> None:
    with pytest.raises(Refused) as refused:
        body_of(POST_HEAD, limit=4)
    assert refused.value.status == 413
    assert body_of(CHUNKED_HEAD, b"3\r\nhel\r\n", limit=4) is None
    with pytest.raises(Refused) as refused:
        body_of(CHUNKED_HEAD, b"3\r\nhel\r\n", b"2\r\nlo\r\n", limit=4)
    assert refused.value.status == 413


def test_a_body_cut_short_is_refused_by_h11() -> None:
    with pytest.raises(Refused) as refused:
        body_of(POST_HEAD, b"hel", b"")
    assert refused.value.status == 400


@pytest.mark.parametrize("body", GOOD_BODIES)
def test_a_good_chunked_body_reaches_the_guest_whatever_the_split(body: bytes) -> None:
    """BWS in a chunk-size line, which h11 refuses, is taken off before h11 parses the line:
    also when the line came with the head (h11 then parses the head again) or in pieces."""
    data = bytes(chunked(body).forward)
    expected = body_of(CHUNKED_HEAD + data)
    assert expected is not None
    for cut in range(1, len(body)):  # (an empty packet would be the client's close)
        assert body_of(CHUNKED_HEAD + body[:cut], body[cut:]) == expected
        assert body_of(CHUNKED_HEAD, body[:cut], body[cut:]) == expected
    assert body_of(CHUNKED_HEAD, *bytewise(body)) == expected


def test_a_chunk_size_line_with_bws_before_its_extensions_goes_to_h11_without_them() -> None:
    assert chunked(b"5 ;a=b\r\nhello\r\n0\r\n\r\n").forward == b"5\r\nhello\r\n0\r\n\r\n"
    plain = b"5;a=b\r\nhello\r\n0\r\n\r\n"
    assert chunked(plain).forward is plain  # the usual body: passed on as it is, not copied
    assert body_of(CHUNKED_HEAD + b"5; name=value\r\nhel", b"lo\r\n0\r\nVary: *\r\n\r\n") == b"hello"


def test_a_chunked_body_is_checked_before_h11_sees_it() -> None:
    with pytest.raises(Refused):
        body_of(CHUNKED_HEAD + b"3;a\rb\r\nhel\r\n")  # with the head
    with pytest.raises(Refused):
        body_of(CHUNKED_HEAD, b"3;a\rb\r\nhel\r\n")  # after it


def test_expect_100_continue_is_seen_before_the_body() -> None:
    p = parser()
    assert fed(p, POST_HEAD.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n"))
    p.start_body(p.check(p.request("1")), 0)
    assert p.expects_continue
    assert CONTINUE == b"HTTP/1.1 100 Continue\r\n\r\n"


@pytest.mark.parametrize(
    "head, closes, ready",
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", True, False),
        (b"GET / HTTP/1.0\r\n\r\n", True, False),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True, False),  # h11 keeps no HTTP/1.0 alive
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", False, False),
    ],
)
def test_after_the_body_the_parser_knows_whether_the_client_can_go_on(head: bytes, closes: bool, ready: bool) -> None:
    p = parser()
    assert fed(p, head)
    p.start_body(p.check(p.request("1")), 0)
    assert p.body() == b""
    assert (p.client_closes, p.ready_for_next) == (closes, ready)


# --- the common head: parsed without h11, as h11 would parse it


def h11_reading(head: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]], bool] | None:
    """What h11 makes of a whole head (without its final CRLFs): method, target, fields and whether
    the client closes after it; None if it refuses it or reads more into it than a bodiless
    HTTP/1.1 request that is over at once (a body, a protocol switch, a wait for 100 Continue)."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head + b"\r\n\r\n")
    try:
        request, end = conn.next_event(), conn.next_event()
    except h11.RemoteProtocolError:
        return None
    if (
        not isinstance(request, h11.Request) or not isinstance(end, h11.EndOfMessage)
        or request.http_version != b"1.1" or conn.they_are_waiting_for_100_continue
        or conn.their_state not in (h11.DONE, h11.MUST_CLOSE)
    ):
        return None
    return request.method, request.target, list(request.headers), conn.their_state is h11.MUST_CLOSE


def assert_read_as_h11_reads(head: bytes) -> bool:
    """Whether `common_head` took `head`; if it did, it read it as h11 does."""
    common = common_head(head)
    if common is not None:
        assert (common.method, common.target, common.headers, common.closes) == h11_reading(head)
    return common is not None


@pytest.mark.parametrize(
    "head",
    [
        b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1:8080",  # what wrk sends
        b"GET /a?b=c&d HTTP/1.1\r\nHost: a.test\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n"
        b"Accept: text/html,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\nCookie: a=b; c=d",
        b"HEAD / HTTP/1.1\r\nhOsT:a\r\nConnection: close",
        b"DELETE /x HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: closed",  # not the close token
        b"GET / HTTP/1.1\r\nHost: a\r\nX:\r\nY:  \t spaced \t value\t  \r\nZ: \x80\xff",
        b"OPTIONS * HTTP/1.1\r\nHost: a",
        b"GET http://a.test/x HTTP/1.1\r\nHost: a.test",
        b"GET /%00/../x HTTP/1.1\r\nHost: a",  # the path's checks come later, on either parse
        b"POST /x HTTP/1.1\r\nHost: a",  # no Content-Length: no body
    ],
)
def test_common_heads_are_parsed_without_h11_as_h11_parses_them(head: bytes) -> None:
    assert assert_read_as_h11_reads(head)


@pytest.mark.parametrize(
    "head",
    [
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3",
        b"POST /x HTTP/1.1\r\nHost: a\r\ncontent-length: 0",
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked",
        b"POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue",
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a",
        b"GET / HTTP/1.0",
        b"GET / HTTP/1.0\r\nHost: a",
        b"GET / HTTP/2.0\r\nHost: a",
        b"GET / http/1.1\r\nHost: a",
        b"GET / HTTP/1.1",  # no Host: h11 refuses
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b",  # two: h11 refuses
        b"GET /\x80 HTTP/1.1\r\nHost: a",
        b"GET  / HTTP/1.1\r\nHost: a",
        b"GET / HTTP/1.1 \r\nHost: a",
        b"G(T / HTTP/1.1\r\nHost: a",
        b"GET / HTTP/1.1\r\nHost : a",
        b"GET / HTTP/1.1\r\n Host: a",
        b"GET / HTTP/1.1\r\nHost: a\r\n X: folded",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\nb",
        b"GET / HTTP/1.1\nHost: a",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: \x00",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: \x0b",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: \x7f",
        b"GET / HTTP/1.1\r\nHost: a\r\nno colon",
        b"GET / HTTP/1.1\r\nHost: a\r\n: no name",
    ],
)
def test_other_heads_are_left_to_h11(head: bytes) -> None:
    assert common_head(head) is None


# Heads made of pieces h11 and common_head could read differently, joined by line ends of every
# kind, then bytes that break lines, names and values put anywhere.
REQUEST_LINES = st.sampled_from([
    b"GET / HTTP/1.1", b"POST /a?b HTTP/1.1", b"CONNECT a:1 HTTP/1.1", b"GET * HTTP/1.1", b"get /x HTTP/1.1",
    b"GET / HTTP/1.0", b"GET / HTTP/1.2", b"GET  / HTTP/1.1", b"GET /\x80 HTTP/1.1", b"GET / HTTP/1.1 ",
    b" GET / HTTP/1.1",
])
FIELDS = st.sampled_from([
    b"Host: a", b"host:a", b"HOST: \t a \t", b"Host :a", b" Host: a", b"\tHost: a", b"Host: b", b"Host:", b"X: a\tb",
    b"X: \x80\xff", b"X:", b"X: a\rb", b"X: a b", b"X\x00: a", b"X: \x7f", b"X: \x0c", b"(X): a", b"X Y: a", b": a",
    b"X::a", b"Connection: close", b"connection: keep-alive, CLOSE", b"Connection: ,close,", b"Connection: close x",
    b"Content-Length: 0", b"Content-Length: 1", b"Transfer-Encoding: chunked", b"Expect: 100-continue",
    b"Upgrade: h2c", b"Connection: upgrade", b"X-A_b.c~d!: 1",
])
LINE_ENDS = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n", b"\r\n "])
TRICKY = st.sampled_from([b"\r", b"\n", b"\r\n", b" ", b"\t", b":", b"\x00", b"\x80", b"\x7f", b",", b"\xff"])


@settings(max_examples=1500, derandomize=True, database=None, deadline=None)
@given(
    REQUEST_LINES, st.lists(st.tuples(LINE_ENDS, FIELDS).map(b"".join), max_size=6),
    st.lists(st.tuples(st.integers(0, 200), TRICKY), max_size=2),
)
def test_common_head_reads_no_head_otherwise_than_h11(
    line: bytes, fields: list[bytes], inserts: list[tuple[int, bytes]],
) -> None:
    head = line + b"".join(fields)
    for at, byte in inserts:
        at %= len(head) + 1
        head = head[:at] + byte + head[at:]
    assert_read_as_h11_reads(head)


def test_the_random_heads_reach_both_answers() -> None:
    """The test above would prove nothing if common_head took all of its heads, or none."""
    taken = [common_head(b"GET / HTTP/1.1" + b"".join(fields)) is not None for fields in (
        [b"\r\nHost: a"], [b"\r\nHost: a", b"\r\nX: a\tb", b"\r\nConnection: ,close,"], [b"\r\nHost: a", b"\nX: a"],
        [b"\r\nHost: a", b"\r\nContent-Length: 0"],
    )]
    assert taken == [True, True, False, False]


@pytest.mark.parametrize(
    "head",
    [GOOD, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", b"GET /x HTTP/1.1\r\nHost: a\r\n\r\nGET /y"],
)
def test_a_common_head_whole_or_through_h11_makes_the_same_request(head: bytes) -> None:
    """In one packet a common head is parsed without h11; in two, h11 parses it."""
    made = []
    for chunks in ([head], [head[:5], head[5:]]):
        p = parser()
        assert fed(p, *chunks)
        request = p.request("1")
        p.start_body(p.check(request), 0)
        assert p.body() == b""
        made.append((dataclasses.replace(request, start=0.0), p.trailing, p.client_closes, p.ready_for_next))
    assert made[0] == made[1]


@pytest.mark.parametrize(
    "target", [b"/a/../b", b"//x//y", b"/%2e%2e/x", b"/%2E./x", b"/a%2Fb", b"/%00", b"/a/./b/", b"/..", b"/%c0%ae/x"],
)
def test_a_hostile_path_is_the_same_request_or_refusal_whoever_parses_the_head(target: bytes) -> None:
    """Dot segments, doubled slashes and encoded bytes are normalised (or refused) after the
    parse, one way for both parsers."""
    head = b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    outcomes = []
    for chunks in ([head], [head[:5], head[5:]]):  # common_head, then h11
        p = parser()
        assert fed(p, *chunks)
        request = p.request("1")
        try:
            p.check(request)
        except Refused as e:
            outcomes.append(("refused", e.status))
        else:
            outcomes.append(("served", request.path))
    assert outcomes[0] == outcomes[1]


# --- the response head


def read_back(head: bytes) -> h11.Response:
    """The head as a client reads it: h11 on the client side."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
    client.receive_data(head)
    event = client.next_event()
    assert isinstance(event, h11.Response)
    return event


def test_a_response_head_is_the_status_line_then_the_fields_in_their_order() -> None:
    fields = [(b"date", b"Tue, 01 Dec 2026 12:00:00 GMT"), (b"Content-Type", b"text/plain"), (b"content-length", b"5")]
    assert response_head(404, b"Not Found", fields) == (
        b"HTTP/1.1 404 Not Found\r\ndate: Tue, 01 Dec 2026 12:00:00 GMT\r\nContent-Type: text/plain\r\n"
        b"content-length: 5\r\n\r\n"
    )
    assert response_head(100, b"Continue", []) == b"HTTP/1.1 100 Continue\r\n\r\n"


@pytest.mark.parametrize(
    "status, reason, fields",
    [
        (200, b"OK", [(b"Location", b"/x\r\nSet-Cookie: owned=1")]),  # response splitting
        (200, b"OK", [(b"Location", b"/x\nSet-Cookie: owned=1")]),
        (200, b"OK", [(b"Location", b"/x\rSet-Cookie: owned=1")]),
        (200, b"OK", [(b"X", b"a\x00b")]),
        (200, b"OK", [(b"X", b"a\x0bb")]),
        (200, b"OK", [(b"X", b"a\x0cb")]),
        (200, b"OK\r\nSet-Cookie: owned=1", []),  # through the reason (which h11 sends unchecked)
        (200, b"O\x00K", []),
        (200, b"OK", [(b"Set-Cookie: owned=1\r\nX", b"1")]),  # through a name
        (200, b"OK", [(b"Bad Name", b"1")]),
        (200, b"OK", [(b"Bad:Name", b"1")]),
        (200, b"OK", [(b"", b"1")]),
        (200, b"OK", [(b"X", b"1"), (b"\xc3\xa9", b"1")]),
        (99, b"", []),
        (600, b"", []),
    ],
)
def test_a_response_head_that_could_be_split_or_misread_is_refused(
    status: int, reason: bytes, fields: list[tuple[bytes, bytes]]
) -> None:
    with pytest.raises(ResponseHeadError):
        response_head(status, reason, fields)


_NAMES = st.binary(max_size=6) | st.sampled_from([b"X-A", b"ETag", b"a_b", b"x~1"])
_VALUES = st.binary(max_size=12) | st.text(alphabet="ab \t\x01\xe9", max_size=12).map(lambda t: t.encode("latin-1"))


@settings(max_examples=500, deadline=None)
@given(fields=st.lists(st.tuples(_NAMES, _VALUES), max_size=3), reason=st.sampled_from([b"OK", b"", b"Fine \xe9t\xe9"]))
def test_a_response_head_takes_the_fields_h11_would_send_and_a_client_reads_them_back(
    fields: list[tuple[bytes, bytes]], reason: bytes
) -> None:
    """h11's own rules are the oracle: a head is refused exactly when h11 would refuse to send
    its fields (values taken without surrounding blanks, which h11 refuses and which split
    nothing); one that is made reads back as the same status, reason and fields."""
    framing = (b"content-length", b"transfer-encoding")
    fields = [(name, value.strip(b" \t")) for name, value in fields if name.lower() not in framing]
    try:
        h11.Response(status_code=200, headers=fields, reason=reason)
    except h11.LocalProtocolError:
        with pytest.raises(ResponseHeadError):
            response_head(200, reason, fields)
        return
    event = read_back(response_head(200, reason, fields))
    assert (event.status_code, event.reason) == (200, reason)
    assert [(name.lower(), value) for name, value in event.headers.raw_items()] == [(n.lower(), v) for n, v in fields]


def fields_of(head: bytes) -> dict[bytes, bytes]:
    return {name.lower(): value for name, value in read_back(head).headers.raw_items()}


@pytest.mark.parametrize(
    "status, head_only, close, length, with_body",
    [
        (200, False, False, b"5", True),
        (200, True, False, b"5", False),  # HEAD: the length of the body it would get
        (200, False, True, b"5", True),
        (204, False, False, None, False),  # a guest's body for a 204 or 304 is dropped
        (304, False, False, None, False),
    ],
)
def test_framed_head_adds_date_server_length_and_close_and_says_whether_the_body_follows(
    status: int, head_only: bool, close: bool, length: bytes | None, with_body: bool
) -> None:
    head, body_follows = framed_head(Response(status, [(b"x-a", b"1")], b"hello"), head_only, close)
    fields = fields_of(head)
    assert body_follows is with_body
    assert fields.get(b"content-length") == length
    assert (fields.get(b"connection") == b"close") is close
    assert b"date" in fields and fields[b"server"] == b"prefork-wasm" and fields[b"x-a"] == b"1"


def test_the_server_writes_its_own_field_names_in_canonical_case_and_a_guest_s_as_given() -> None:
    """As Apache, nginx and gunicorn write them ('Date', 'Content-Length'); a CGI guest's names
    go out as it wrote them, as Apache sends a script's."""
    head, _ = framed_head(Response(200, [(b"x-guest", b"1")], b"hello"), False, True)
    names = [line.split(b":")[0] for line in head.split(b"\r\n")[1:] if line]
    assert names == [b"Date", b"Server", b"x-guest", b"Content-Length", b"Connection"]


def test_framed_head_frames_a_file_body_by_its_span_and_an_empty_body_as_none() -> None:
    span = FileBody(None, 10, 7)  # type: ignore[arg-type]  # only its length is read
    head, body_follows = framed_head(Response(200, body=span), False, False)
    assert fields_of(head)[b"content-length"] == b"7" and body_follows
    head, body_follows = framed_head(Response(200), False, False)
    assert fields_of(head)[b"content-length"] == b"0" and not body_follows
