"""Static files, as Apache's default handler serves them: MIME type (mod_mime), ETag and
Last-Modified, conditional requests (304/412), a single byte range (206/416), HEAD, and a
minimal directory listing for Options Indexes.

`plan` is the pure part (RFC 9110 sections 13 and 14 on a file's size and mtime); `file_response`
opens the file and hands it to the connection, which sends it with sendfile: the
body is never read into memory.
"""

from __future__ import annotations

import functools
import html
import mimetypes
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from urllib.parse import quote

from .dirconfig import extension
from .messages import FileBody, Response, error_response

SYSTEM_TYPES = Path("/etc/mime.types")
ALLOWED = b"GET, HEAD, OPTIONS"

Header = Callable[[bytes], bytes | None]  # a request header's value by lowercase name


@functools.lru_cache(maxsize=4)
def type_table(types_config: Path | None) -> dict[str, str]:
    """'.ext' -> MIME type from TypesConfig; without one the system's mime.types if present,
    else Python's built-in table. Read once per worker."""
    path = types_config or (SYSTEM_TYPES if SYSTEM_TYPES.is_file() else None)
    if path is None:
        return dict(mimetypes.MimeTypes().types_map[True])
    table: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        words = line.split("#", 1)[0].split()
        for ext in words[1:]:
            table["." + ext.lower()] = words[0].lower()
    return table


def content_type(name: str, add_types: dict[str, str], table: dict[str, str]) -> str | None:
    """AddType first, then the table, by the name's last extension; None (no Content-Type
    header, as Apache 2.4 sends none) for an unknown one."""
    ext = extension(name)
    return add_types.get(ext) or table.get(ext)


ETAG_PARTS = ("INode", "MTime", "Size")  # what FileETag names
DEFAULT_ETAG = frozenset({"MTime", "Size"})  # Apache 2.4's default FileETag


def etag(size: int, mtime_ns: int, inode: int = 0, parts: frozenset[str] = DEFAULT_ETAG) -> bytes | None:
    """Apache's ETag of a file: the FileETag parts in hex, joined by '-' in Apache's order
    (inode, size, mtime in microseconds); None for FileETag None (no ETag)."""
    values = [("INode", inode), ("Size", size), ("MTime", mtime_ns // 1000)]
    found = [b"%x" % value for part, value in values if part in parts]
    return b'"' + b"-".join(found) + b'"' if found else None


@dataclass(frozen=True, slots=True)
class Plan:
    """What to answer for a file: status, validator and range headers, and the byte span of
    the file that is the body (length 0: no file body)."""

    status: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    offset: int = 0
    length: int = 0


def plan(method: str, header: Header, size: int, mtime_ns: int, tag: bytes | None = b"") -> Plan:
    """RFC 9110 13.2.2's order: If-Match, If-Unmodified-Since (412), If-None-Match, else
    If-Modified-Since (304 for GET/HEAD), then Range with If-Range (206/416). Several ranges
    are answered 200 with the whole file (RFC 9110 14.2 lets a server ignore Range). `tag`:
    the file's ETag (b'': the default one; None: FileETag None, no ETag)."""
    if tag == b"":
        tag = etag(size, mtime_ns)
    seconds = mtime_ns // 1_000_000_000
    validators = [(b"Last-Modified", formatdate(seconds, usegmt=True).encode())]
    if tag is not None:
        validators.append((b"ETag", tag))
    if_match = header(b"if-match")
    if if_match is not None:
        if not _tag_matches(if_match, tag, weak=False):
            return Plan(412)
    elif _newer(seconds, header(b"if-unmodified-since")):
        return Plan(412)
    if_none_match = header(b"if-none-match")
    if if_none_match is not None:
        if _tag_matches(if_none_match, tag, weak=True):
            return Plan(304 if method in ("GET", "HEAD") else 412, validators)
    elif method in ("GET", "HEAD") and _not_newer(seconds, header(b"if-modified-since")):
        return Plan(304, validators)
    headers = [*validators, (b"Accept-Ranges", b"bytes")]
    range_header = header(b"range")
    if method != "GET" or range_header is None or not _if_range_holds(header(b"if-range"), tag, seconds):
        return Plan(200, headers, 0, size)
    spans = byte_ranges(range_header, size)
    if spans is None or len(spans) > 1:
        return Plan(200, headers, 0, size)
    if not spans:
        return Plan(416, [(b"Content-Range", b"bytes */%d" % size)])
    start, end = spans[0]
    return Plan(206, [*headers, (b"Content-Range", b"bytes %d-%d/%d" % (start, end, size))], start, end - start + 1)


_RANGE_SPEC = re.compile(r"\s*(\d*)\s*-\s*(\d*)\s*")


def byte_ranges(value: bytes, size: int) -> list[tuple[int, int]] | None:
    """The satisfiable (first, last) byte positions of a Range header; [] when none is
    satisfiable (416); None when the header is malformed or not in bytes (ignored: 200)."""
    unit, eq, specs = value.decode("latin-1").partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return None
    spans = []
    for spec in specs.split(","):
        match = _RANGE_SPEC.fullmatch(spec)
        if match is None or match[1] == match[2] == "":
            return None
        first, last = match[1], match[2]
        if first == "":  # a suffix: the last n bytes
            if int(last) > 0 and size > 0:
                spans.append((max(0, size - int(last)), size - 1))
        elif last != "" and int(last) < int(first):
            return None
        elif int(first) < size:
            spans.append((int(first), min(int(last), size - 1) if last else size - 1))
    return spans


def _tag_matches(value: bytes, tag: bytes | None, weak: bool) -> bool:
    """An If-Match/If-None-Match list against our (strong) tag; '*' matches any."""
    for candidate in value.split(b","):
        candidate = candidate.strip()
        if candidate == b"*":
            return True
        if candidate.startswith(b"W/"):
            if not weak:
                continue
            candidate = candidate[2:]
        if candidate == tag:
            return True
    return False


def _date(value: bytes | None) -> int | None:
    """An HTTP date as POSIX seconds; None when absent or invalid (then ignored, RFC 9110)."""
    if value is None:
        return None
    try:
        return int(parsedate_to_datetime(value.decode("latin-1")).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _newer(seconds: int, value: bytes | None) -> bool:
    date = _date(value)
    return date is not None and seconds > date


def _not_newer(seconds: int, value: bytes | None) -> bool:
    date = _date(value)
    return date is not None and seconds <= date


def _if_range_holds(value: bytes | None, tag: bytes | None, seconds: int) -> bool:
    """No If-Range, or one that still matches: an entity tag strongly, a date exactly."""
    if value is None:
        return True
    value = value.strip()
    if value.startswith((b'"', b"W/")):
        return value == tag
    return _date(value) == seconds


def file_response(
    method: str, header: Header, path: Path, mime: str | None, etag_parts: frozenset[str] = DEFAULT_ETAG
) -> Response:
    """The response for a regular file: the descriptor is opened here, the connection sends
    the planned span from it with sendfile and closes it. `etag_parts`: FileETag's."""
    if method == "OPTIONS":
        return Response(200, [(b"Allow", ALLOWED)])
    if method not in ("GET", "HEAD"):
        response = error_response(405, f"The method {method} is not allowed for a static file.")
        response.headers.append((b"Allow", ALLOWED))
        return response
    file = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by the connection, or below)
    handed_over = False
    try:
        st = os.fstat(file.fileno())
        tag = etag(st.st_size, st.st_mtime_ns, st.st_ino, etag_parts)
        answer = plan(method, header, st.st_size, st.st_mtime_ns, tag)
        if answer.status in (412, 416):
            response = error_response(answer.status, "The request's conditions or range do not fit this file.")
            response.headers += answer.headers
            return response
        headers = [(b"Content-Type", mime.encode())] if mime and answer.status != 304 else []
        response = Response(answer.status, [*headers, *answer.headers])
        if answer.status != 304:
            response.body = FileBody(file, answer.offset, answer.length)
            handed_over = True
        return response
    finally:
        if not handed_over:
            file.close()


def listing(directory: Path, url: str) -> Response:
    """A minimal HTML index of a directory (Options Indexes): names escaped, hidden .ht* left out."""
    entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    items = []
    for entry in entries:
        if entry.name.startswith(".ht"):
            continue
        name = entry.name + ("/" if entry.is_dir() else "")
        href = html.escape(quote(name, errors="surrogateescape"), quote=True)
        items.append(f'<li><a href="{href}">{html.escape(name)}</a></li>')
    title = html.escape(f"Index of {url}")
    body = f"<!DOCTYPE html>\n<html><head><title>{title}</title></head><body>\n<h1>{title}</h1>\n<ul>\n"
    body += "\n".join(items) + "\n</ul>\n</body></html>\n"
    encoded = body.encode("utf-8", "surrogateescape")
    return Response(200, [(b"Content-Type", b"text/html;charset=UTF-8")], encoded)
