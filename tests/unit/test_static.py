"""Static responses (static.py): validators, conditional requests, byte ranges, MIME types."""

from __future__ import annotations

from email.utils import formatdate
from pathlib import Path

import pytest

from prefork_wasm.messages import FileBody
from prefork_wasm.static import byte_ranges, content_type, etag, file_response, listing, plan, type_table

SIZE = 1000
MTIME_NS = 1_700_000_000_123_456_789
TAG = etag(SIZE, MTIME_NS)
LAST_MODIFIED = formatdate(1_700_000_000, usegmt=True).encode()
EARLIER = formatdate(1_699_999_999, usegmt=True).encode()


def headers(**values: str | bytes):  # type: ignore[no-untyped-def]
    table = {
        name.replace("_", "-").encode(): value if isinstance(value, bytes) else value.encode()
        for name, value in values.items()
    }
    return table.get


def test_etag_is_apaches_size_and_mtime_in_microseconds() -> None:
    assert TAG == b'"3e8-%x"' % (MTIME_NS // 1000)


@pytest.mark.parametrize(
    "method, request_headers, status",
    [
        ("GET", {}, 200),
        ("GET", {"if_none_match": TAG}, 304),
        ("HEAD", {"if_none_match": b'"x", ' + TAG}, 304),
        ("GET", {"if_none_match": b"W/" + TAG}, 304),  # weak comparison
        ("GET", {"if_none_match": b"*"}, 304),
        ("GET", {"if_none_match": b'"other"'}, 200),
        ("GET", {"if_none_match": b'"other"', "if_modified_since": LAST_MODIFIED}, 200),  # INM wins
        ("GET", {"if_modified_since": LAST_MODIFIED}, 304),
        ("GET", {"if_modified_since": EARLIER}, 200),
        ("GET", {"if_modified_since": b"not a date"}, 200),
        ("GET", {"if_match": b'"other"'}, 412),
        ("GET", {"if_match": b"W/" + TAG}, 412),  # If-Match compares strongly
        ("GET", {"if_match": TAG}, 200),
        ("GET", {"if_unmodified_since": EARLIER}, 412),
        ("GET", {"if_unmodified_since": LAST_MODIFIED}, 200),
    ],
)
def test_conditional_requests(method: str, request_headers: dict[str, bytes], status: int) -> None:
    assert plan(method, headers(**request_headers), SIZE, MTIME_NS).status == status


def test_a_304_carries_the_validators() -> None:
    answer = plan("GET", headers(if_none_match=TAG), SIZE, MTIME_NS)
    assert dict(answer.headers) == {b"ETag": TAG, b"Last-Modified": LAST_MODIFIED}
    assert answer.length == 0


@pytest.mark.parametrize(
    "value, spans",
    [
        (b"bytes=0-99", [(0, 99)]),
        (b"bytes=900-", [(900, 999)]),
        (b"bytes=-100", [(900, 999)]),
        (b"bytes=-5000", [(0, 999)]),
        (b"bytes=990-5000", [(990, 999)]),
        (b"BYTES = 1-2", [(1, 2)]),
        (b"bytes=0-0,5-9", [(0, 0), (5, 9)]),
        (b"bytes=1000-", []),
        (b"bytes=-0", []),
        (b"bytes=5-1", None),
        (b"bytes=x-1", None),
        (b"bytes=-", None),
        (b"items=0-1", None),
        (b"bytes 0-1", None),
    ],
)
def test_byte_ranges(value: bytes, spans: list[tuple[int, int]] | None) -> None:
    assert byte_ranges(value, SIZE) == spans


def test_a_single_range_is_206_with_content_range() -> None:
    answer = plan("GET", headers(range="bytes=10-19"), SIZE, MTIME_NS)
    assert (answer.status, answer.offset, answer.length) == (206, 10, 10)
    assert dict(answer.headers)[b"Content-Range"] == b"bytes 10-19/1000"


def test_an_unsatisfiable_range_is_416_with_the_size() -> None:
    answer = plan("GET", headers(range="bytes=2000-"), SIZE, MTIME_NS)
    assert (answer.status, answer.headers) == (416, [(b"Content-Range", b"bytes */1000")])


@pytest.mark.parametrize(
    "request_headers, status",
    [
        ({"range": "bytes=0-1,5-6"}, 200),  # several ranges: the whole file
        ({"range": "bytes=oops"}, 200),
        ({"range": "bytes=0-1", "if_range": TAG}, 206),
        ({"range": "bytes=0-1", "if_range": b'"old"'}, 200),
        ({"range": "bytes=0-1", "if_range": b"W/" + TAG}, 200),
        ({"range": "bytes=0-1", "if_range": LAST_MODIFIED}, 206),
        ({"range": "bytes=0-1", "if_range": EARLIER}, 200),
    ],
)
def test_range_variants(request_headers: dict[str, str | bytes], status: int) -> None:
    assert plan("GET", headers(**request_headers), SIZE, MTIME_NS).status == status


def test_head_ignores_range() -> None:
    assert plan("HEAD", headers(range="bytes=0-1"), SIZE, MTIME_NS).status == 200


def test_types_from_add_type_then_the_table(tmp_path: Path) -> None:
    types = tmp_path / "mime.types"
    types.write_text("# comment\ntext/x-own   own  OWN2\napplication/json json\n")
    table = type_table(types)
    assert table == {".own": "text/x-own", ".own2": "text/x-own", ".json": "application/json"}
    assert content_type("a.OWN", {}, table) == "text/x-own"
    assert content_type("a.json", {".json": "text/plain"}, table) == "text/plain"
    assert content_type("a.unknown", {}, table) is None
    assert content_type("README", {}, table) is None


def test_without_types_config_the_default_table_knows_html() -> None:
    assert content_type("index.html", {}, type_table(None)) == "text/html"


def test_file_response_hands_an_open_file_to_the_connection(tmp_path: Path) -> None:
    file = tmp_path / "f.txt"
    file.write_bytes(b"0123456789")
    response = file_response("GET", headers(range="bytes=2-4"), file, "text/plain")
    assert response.status == 206
    assert isinstance(response.body, FileBody)
    assert (response.body.offset, len(response.body)) == (2, 3)
    assert (b"Content-Type", b"text/plain") in response.headers
    response.body.file.close()
    assert file_response("POST", headers(), file, None).status == 405
    assert file_response("OPTIONS", headers(), file, None).headers == [(b"Allow", b"GET, HEAD, OPTIONS")]


def test_listing_escapes_names(tmp_path: Path) -> None:
    (tmp_path / "<b>&.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / ".htpasswd").write_text("x")
    body = bytes(listing(tmp_path, "/d/<i>/").body).decode()
    assert '<a href="%3Cb%3E%26.txt">&lt;b&gt;&amp;.txt</a>' in body
    assert '<a href="sub/">sub/</a>' in body
    assert "Index of /d/&lt;i&gt;/" in body
    assert ".htpasswd" not in body
