"""CGI/1.1 translation layer (RFC 3875): HTTP request -> environ, guest stdout -> response.

Pure functions with no I/O so they can be tested exhaustively and stay cheap on
the per-request hot path: everything that can be computed once (lookup tables,
header-name -> variable-name mapping) is computed at import time or cached.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from . import sslvars
from .messages import FIELD_VALUE_BYTES, TCHAR, Request, Response

__all__ = [
    "CgiOutputError",
    "build_environ",
    "parse_cgi_response",
    "plain_response",
]


# --------------------------------------------------------------------------- request side


# Never passed to the guest: credentials stay with the server (as Apache does),
# Content-Type/Length become CONTENT_TYPE/CONTENT_LENGTH, and 'Proxy' would
# become HTTP_PROXY, which many HTTP client libraries read as their outbound
# proxy setting ("httpoxy", CVE-2016-5387; Apache >= 2.4.24 drops it too).
_EXCLUDED_HEADERS: Final = frozenset(
    {b"authorization", b"proxy-authorization", b"content-type", b"content-length", b"proxy"}
)

# header name (bytes, as received) -> 'HTTP_FOO_BAR', or '' when the header is dropped.
# Bounded so a client sending many distinct junk names cannot grow it forever.
_KEY_CACHE: dict[bytes, str] = {}
_KEY_CACHE_MAX: Final = 512


def _header_key(name: bytes) -> str:
    """Map a header name to its CGI variable ('' = drop), caching the result.

    Names with anything but ASCII letters, digits and '-' are dropped: 'foo_bar'
    and 'foo-bar' would both become HTTP_FOO_BAR, a known smuggling vector
    (Apache and nginx drop them for the same reason).
    """
    if name.lower() in _EXCLUDED_HEADERS or not name.replace(b"-", b"").isalnum():
        key = ""
    else:
        key = "HTTP_" + name.decode("ascii").upper().replace("-", "_")
    if len(_KEY_CACHE) < _KEY_CACHE_MAX:
        _KEY_CACHE[name] = key
    return key


def build_environ(
    req: Request,
    *,
    server_name: str,
    script_name: str,
    script_filename: str,
    content_length: int | None,
    extra: Mapping[str, str],
    server_software: str,
    path_info: str | None = None,
    ssl_vars: bool = False,
) -> dict[str, str]:
    """Build the complete CGI/1.1 environment for one request.

    The result is built only from the request and the arguments, never from
    os.environ, so nothing about the server process leaks into the guest.
    PATH_INFO is the request's normalised path (paths.request_path: decoded,
    dot segments removed, as Apache does) after script_name, the very path the
    Location was matched on; REQUEST_URI and QUERY_STRING stay raw. Header values
    reach the guest as the bytes received when they are UTF-8: WASI environment
    strings must be (wasmtime refuses any other), so an invalid sequence becomes
    U+FFFD. `extra` (WasmEnv) is applied last and wins.

    A script found on disk (a DirectoryIndex file, say) gives its own `path_info`.

    Over TLS, HTTPS=on and REQUEST_SCHEME=https, as mod_ssl sets them whatever SSLOptions says;
    `ssl_vars` (SSLOptions +StdEnvVars in force) adds mod_ssl's SSL_* variables (sslvars.py).

    Raises ValueError if the path does not start with script_name (a caller bug).
    """
    path = req.path
    if path_info is None:
        if not path.startswith(script_name):
            raise ValueError(f"request path {path!r} does not start with script_name {script_name!r}")
        path_info = path[len(script_name) :]

    env: dict[str, str] = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_PROTOCOL": "HTTP/" + req.http_version,
        "SERVER_SOFTWARE": server_software,
        "SERVER_NAME": server_name,
        "SERVER_PORT": str(req.server_port),
        "REQUEST_METHOD": req.method,
        "REQUEST_SCHEME": req.scheme,
        "REQUEST_URI": req.target,
        "SCRIPT_NAME": script_name,
        "SCRIPT_FILENAME": script_filename,
        "PATH_INFO": path_info,
        "QUERY_STRING": req.query,
        "REMOTE_ADDR": req.remote_addr,
        "REMOTE_PORT": str(req.remote_port),
        "UNIQUE_ID": req.request_id,
    }
    if content_length is not None:
        env["CONTENT_LENGTH"] = str(content_length)
    if req.tls is not None:
        env["HTTPS"] = "on"
        if ssl_vars:
            env.update(sslvars.standard(req.tls))

    content_type: str | None = None
    cache_get = _KEY_CACHE.get
    for name, value in req.headers:
        key = cache_get(name)
        if key is None:
            key = _header_key(name)
        if not key:
            # Only dropped headers get here; the first Content-Type wins (a
            # repeated one is invalid and joining it would produce garbage).
            if content_type is None and name.lower() == b"content-type":
                content_type = value.decode("utf-8", "replace")
            continue
        text = value.decode("utf-8", "replace")
        prev = env.get(key)
        if prev is None:
            env[key] = text
        else:  # RFC 9110 5.3 list join; Cookie uses '; ' (RFC 6265 5.4)
            env[key] = prev + ("; " if key == "HTTP_COOKIE" else ", ") + text
    if content_type is not None:
        env["CONTENT_TYPE"] = content_type

    if extra:
        env.update(extra)
    return env


# --------------------------------------------------------------------------- response side


class CgiOutputError(ValueError):
    """The guest's stdout is not a valid CGI response (the server answers 502)."""


MAX_HEADER_BYTES: Final = 64 * 1024  # header lines incl. their line ends, excl. the blank line
MAX_HEADER_LINES: Final = 100

# The server frames the response itself, so the guest's framing and hop-by-hop
# headers are meaningless (or dangerous: a guest Content-Length that disagrees
# with the body would desync the connection). The body we hold is authoritative.
_DROPPED_RESPONSE_HEADERS: Final = frozenset(
    {
        b"connection",
        b"transfer-encoding",
        b"content-length",
        b"keep-alive",
        b"upgrade",
        b"proxy-connection",
        b"te",
        b"trailer",
    }
)


def _line_repr(line: bytes) -> str:
    """Short repr of an offending line for error messages (logs, not the client)."""
    return repr(line[:60]) + ("..." if len(line) > 60 else "")


def _split_header_block(output: bytes) -> tuple[list[bytes], int]:
    """Return (header lines without line ends, start of body).

    Walks line by line rather than searching for the blank line, so the cost
    is bounded by the header block, never by the body's size. A line ends in
    LF or CRLF; the blank line is the first line that is empty either way.
    """
    lines: list[bytes] = []
    find = output.find
    pos = 0
    while True:
        nxt = output[pos : pos + 2]
        if nxt[:1] == b"\n":
            return lines, pos + 1
        if nxt == b"\r\n":
            return lines, pos + 2
        # The block counts header lines with their line ends, so the LF of its
        # last line is at index <= MAX_HEADER_BYTES - 1.
        nl = find(b"\n", pos, MAX_HEADER_BYTES)
        if nl < 0:
            if len(output) > MAX_HEADER_BYTES:
                raise CgiOutputError(f"CGI header block larger than {MAX_HEADER_BYTES} bytes")
            raise CgiOutputError("no blank line after the CGI header block")
        if len(lines) == MAX_HEADER_LINES:
            raise CgiOutputError(f"more than {MAX_HEADER_LINES} CGI header lines")
        lines.append(output[pos : nl - 1] if output[nl - 1] == 13 else output[pos:nl])  # 13 = CR
        pos = nl + 1


def _parse_status(value: bytes) -> tuple[int, bytes]:
    """Parse 'Status: 404 Not Found' / 'Status: 404'.

    1xx is refused too: CGI has no interim responses, and a final response
    cannot be one.
    """
    code = value[:3]
    if (
        len(code) != 3
        or not code.isdigit()
        or (len(value) > 3 and value[3] not in b" \t")
        or not 200 <= int(code) <= 599
    ):
        raise CgiOutputError(f"malformed Status {_line_repr(value)}: need 3 digits, 200-599")
    return int(code), value[4:].strip(b" \t")


def parse_cgi_response(output: bytes) -> Response:
    """Turn a guest's CGI stdout into a response (RFC 3875 section 6), or raise CgiOutputError.

    Strict where leniency would let a guest attack the connection: header names
    must be tokens, values may not contain CR/LF/NUL (response splitting) nor
    VT/FF (clients refuse them), and obs-fold is refused. Line ends
    may be CRLF, bare LF, or a mix.

    Status is consumed and must be 200-599 (no 1xx: it cannot be a final
    response); without it, Location gives 302 and anything else 200.
    RFC 3875 6.2.2 says a local-path Location ('/x') without Status is a
    *local* redirect that the server re-dispatches internally (Apache does);
    we do not do internal redirects and send it to the client as a 302 too.
    Framing and hop-by-hop headers (Connection, Transfer-Encoding,
    Content-Length, Keep-Alive, Upgrade, Proxy-Connection, TE, Trailer) are
    dropped because the server frames the response from the body it holds.
    The body is everything after the blank line, untouched (a memoryview).
    """
    if not output:
        raise CgiOutputError("empty output: no CGI header block")
    lines, start = _split_header_block(output)

    headers: list[tuple[bytes, bytes]] = []
    status: int | None = None
    reason = b""
    have_location = have_content_type = False
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise CgiOutputError(f"obsolete line folding in CGI header {_line_repr(line)}")
        colon = line.find(b":")
        if colon < 0:
            raise CgiOutputError(f"CGI header line without ':' {_line_repr(line)}")
        name = line[:colon]
        if not name or name.translate(None, TCHAR):
            raise CgiOutputError(f"invalid CGI header name in {_line_repr(line)}")
        value = line[colon + 1 :].strip(b" \t")
        if value.translate(None, FIELD_VALUE_BYTES):
            raise CgiOutputError(f"forbidden control character in CGI header {_line_repr(line)}")

        lname = name.lower()
        if lname == b"status":
            if status is not None:
                raise CgiOutputError("more than one Status header")
            status, reason = _parse_status(value)
            continue
        if lname in _DROPPED_RESPONSE_HEADERS:
            continue
        if lname == b"content-type":
            have_content_type = True
        elif lname == b"location":
            if not value:
                raise CgiOutputError("empty Location header")
            have_location = True
        headers.append((name, value))

    if status is None:
        if have_location:
            status = 302
        elif have_content_type:
            status = 200
        else:
            raise CgiOutputError("CGI response has none of Content-Type, Location, Status")

    body: bytes | memoryview = memoryview(output)[start:] if start < len(output) else b""
    return Response(status, headers, body, reason)


def plain_response(output: bytes, content_type: str) -> Response:
    """Wrap raw guest stdout as a 200 response (non-CGI mode: the guest writes only a body)."""
    return Response(200, [(b"Content-Type", content_type.encode("latin-1"))], output)
