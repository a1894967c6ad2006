"""The request checks of prefork_wasm.connection that need no socket: head limits, request
line, body framing, transfer codings (the socket side is tests/integration/test_hostile_http.py)."""

from __future__ import annotations

import dataclasses

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefork_wasm.connection import (
    MAX_FIELDS,
    HeadScanner,
    Limits,
    Refused,
    body_length,
    check_request_line,
    max_head_size,
    transfer_coding_refusal,
)

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


def test_a_leading_blank_line_is_left_to_h11() -> None:
    assert scan(b"\r\nGET / HTTP/1.1\r\n\r\n").done  # h11 answers 400 'no request line'


# The fast path (one packet, short head) and the line-by-line scan must agree on every head made
# of lines without CR or LF inside, whatever their line ends, leading whitespace and lengths.
LINE = st.tuples(
    st.sampled_from([b"", b" ", b"\t"]),
    st.binary(max_size=45).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from([b"\r\n", b"\r\n", b"\n"]),
).map(b"".join)


@settings(max_examples=300, derandomize=True, database=None)
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
        check_request_line(event, parsed)
    else:
        with pytest.raises(Refused) as e:
            check_request_line(event, parsed)
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
    assert body_length(version, headers) == expected


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
        body_length(version, headers)
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
