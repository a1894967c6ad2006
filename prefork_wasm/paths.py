"""The one normalised form of a request's path: what every access and routing decision uses
and what the guest sees (PATH_INFO, SCRIPT_NAME).

Apache does the same before its location walk (ap_process_request_internal): decode the
unreserved characters, remove dot segments (RFC 3986 5.2.4) and merge slashes, then decode the
rest. Matching `<Location>` on anything else lets `/%61dmin`, `/x/../admin` or `//admin` past an
access rule that the guest, seeing `/admin`, believes was applied. Pure: no I/O.
"""

from __future__ import annotations

import re

# RFC 3986 2.3: decoding these never changes what a URI means, so they are decoded before
# dot segments are removed ('%2e%2e' is '..').
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")
_VCHAR = re.compile(r"[\x21-\x7e]*")  # RFC 9112 request-target characters (h11 checks them too)

# AllowEncodedSlashes, as Apache: '%2F' is refused (404), decoded, or kept encoded.
ENCODED_SLASHES = ("off", "on", "nodecode")


class PathRefused(ValueError):
    """A path the server will not map: 400 when it is malformed, 404 when it encodes a NUL or
    (AllowEncodedSlashes Off) a slash, as Apache answers."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


def request_path(target: str, encoded_slashes: str = "off") -> str:
    """The normalised, percent-decoded path of a request-target, or PathRefused.

    The query is not part of it; an absolute-form target ('http://host/p') gives its path; the
    asterisk-form '*' (OPTIONS *) stays '*', which no Location covers. A path that climbs above
    '/' is refused, not clamped. The decoded bytes must be UTF-8 (a WASI guest's environment is
    UTF-8): an overlong or invalid sequence is refused, never reinterpreted. A backslash is an
    ordinary character, as in Apache on Unix.
    """
    raw = target.partition("?")[0]
    if raw == "*":
        return raw
    if not _VCHAR.fullmatch(raw):
        raise PathRefused(400, "The request target may only contain printable ASCII characters.")
    if "#" in raw:
        raise PathRefused(400, "The request target must not contain a fragment.")
    if raw[:1] != "/":
        raw = _origin_path(raw)
    if "%" not in raw and "/." not in raw and "//" not in raw:
        return raw  # the common case: nothing to decode or remove
    path = _remove_dot_segments(_decode_unreserved(raw))
    decoded, slashes = _decode_rest(path, encoded_slashes)
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise PathRefused(400, "The request path is not UTF-8 once percent-decoded.") from None
    # AllowEncodedSlashes On: a decoded '%2F' may have made new empty or dot segments.
    return _remove_dot_segments(text) if slashes else text


def _origin_path(target: str) -> str:
    """The path of an absolute-form target (RFC 9112 3.2.2), which a server must accept."""
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise PathRefused(400, "Invalid request target.")
    slash = rest.find("/")
    return "/" if slash < 0 else rest[slash:]


def _decode_unreserved(path: str) -> str:
    """Decode the escapes of unreserved characters; keep the others as sent. A '%' not followed
    by two hex digits is malformed (400), as in Apache."""
    parts = path.split("%")
    out = [parts[0]]
    for part in parts[1:]:
        code = part[:2]
        if len(code) < 2 or not _HEX.issuperset(code):
            raise PathRefused(400, f"Invalid percent-escape '%{code}' in the request path.")
        value = int(code, 16)
        out.append(chr(value) + part[2:] if value in _UNRESERVED else "%" + part)
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4 on an absolute path, with empty segments merged ('//' is '/'), as Apache's
    MergeSlashes On. A '..' with nothing left to remove is refused (400) rather than dropped."""
    segments = path.split("/")
    kept: list[str] = []
    for segment in segments[1:]:
        if segment == "..":
            if not kept:
                raise PathRefused(400, "The request path climbs above '/'.")
            kept.pop()
        elif segment and segment != ".":
            kept.append(segment)
    # A path ending in '/', '/.' or '/..' names a directory: keep its trailing slash.
    trailing = "/" if kept and segments[-1] in ("", ".", "..") else ""
    return "/" + "/".join(kept) + trailing


def _decode_rest(path: str, encoded_slashes: str) -> tuple[bytes, bool]:
    """Decode the remaining escapes to bytes, applying AllowEncodedSlashes; True when a '%2F'
    was decoded. An encoded NUL is 404 whatever the setting (Apache's ap_unescape_url)."""
    parts = path.split("%")
    out = bytearray(parts[0].encode("ascii"))
    slashes = False
    for part in parts[1:]:
        value = int(part[:2], 16)  # well-formed: _decode_unreserved checked every escape
        if value == 0:
            raise PathRefused(404, "The request path contains an encoded NUL (%00).")
        if value == 0x2F:
            if encoded_slashes == "nodecode":
                out += b"%" + part.encode("ascii")
                continue
            if encoded_slashes != "on":
                raise PathRefused(404, "The request path contains an encoded slash (%2F); see AllowEncodedSlashes.")
            slashes = True
        out.append(value)
        out += part[2:].encode("ascii")
    return bytes(out), slashes
