"""Unit tests for the CGI translation layer (prefork_wasm.cgi)."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefork_wasm.cgi import (
    MAX_HEADER_BYTES,
    MAX_HEADER_LINES,
    CgiOutputError,
    build_environ,
    parse_cgi_response,
    plain_response,
)
from prefork_wasm.messages import Request, Response
from prefork_wasm.paths import request_path

# --------------------------------------------------------------------------- build_environ


def make_req(target: str = "/app/x/y?a=1&b=%20", headers=(), **kw) -> Request:
    fields = dict(
        method="GET",
        target=target,
        http_version="1.1",
        headers=list(headers),
        remote_addr="192.0.2.7",
        remote_port=54321,
        server_port=8080,
        request_id="req-0001",
        start=0.0,
        path=request_path(target),  # as the connection sets it
    )
    fields.update(kw)
    return Request(**fields)


def env_for(req: Request | None = None, script_name: str = "/app", *,
            content_length: int | None = None, extra=None, server_name: str = "example.test",
            ssl_vars: bool = False) -> dict[str, str]:
    return build_environ(
        req if req is not None else make_req(),
        server_name=server_name,
        script_name=script_name,
        script_filename="/srv/wasm/app.wasm",
        content_length=content_length,
        extra=extra or {},
        server_software="prefork-wasm/0.1.0",
        ssl_vars=ssl_vars,
    )


def test_all_base_variables_exact():
    req = make_req(headers=[(b"host", b"example.test:8080")], method="POST", http_version="1.0")
    env = env_for(req, content_length=12)
    assert env == {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_PROTOCOL": "HTTP/1.0",
        "SERVER_SOFTWARE": "prefork-wasm/0.1.0",
        "SERVER_NAME": "example.test",
        "SERVER_PORT": "8080",
        "REQUEST_METHOD": "POST",
        "REQUEST_SCHEME": "http",
        "REQUEST_URI": "/app/x/y?a=1&b=%20",
        "SCRIPT_NAME": "/app",
        "SCRIPT_FILENAME": "/srv/wasm/app.wasm",
        "PATH_INFO": "/x/y",
        "QUERY_STRING": "a=1&b=%20",
        "REMOTE_ADDR": "192.0.2.7",
        "REMOTE_PORT": "54321",
        "CONTENT_LENGTH": "12",
        "UNIQUE_ID": "req-0001",
        "HTTP_HOST": "example.test:8080",
    }
    assert all(isinstance(v, str) for v in env.values())


def test_content_length_absent_when_none_and_zero_kept():
    assert "CONTENT_LENGTH" not in env_for(content_length=None)
    assert env_for(content_length=0)["CONTENT_LENGTH"] == "0"


def test_content_type_only_when_present():
    assert "CONTENT_TYPE" not in env_for()
    env = env_for(make_req(headers=[(b"content-type", b"application/json"),
                                    (b"content-length", b"2")]))
    assert env["CONTENT_TYPE"] == "application/json"
    assert "HTTP_CONTENT_TYPE" not in env
    assert "HTTP_CONTENT_LENGTH" not in env
    assert "CONTENT_LENGTH" not in env  # only from the content_length argument


@pytest.mark.parametrize(
    ("target", "script_name", "path_info", "query"),
    [
        ("/app/x/y?a=1&b=%20", "/app", "/x/y", "a=1&b=%20"),
        ("/app", "/app", "", ""),
        ("/app/", "/app", "/", ""),
        ("/app?", "/app", "", ""),
        ("/app/a%20b/%C3%A9", "/app", "/a b/é", ""),
        ("/app/x?q=a?b", "/app", "/x", "q=a?b"),  # only the first '?' splits
        ("/app/x?q=%2F&r=+", "/app", "/x", "q=%2F&r=+"),  # query stays raw
        ("/app/p%3Fq?real=1", "/app", "/p?q", "real=1"),  # encoded '?' is path
        ("/app/x/../y/./z//", "/app", "/y/z/", ""),  # the normalised path, as matched
        ("/my%20app/x", "/my app", "/x", ""),  # script_name matched on the decoded path
        ("/", "", "/", ""),
        ("/x/y%21?z", "", "/x/y!", "z"),
        ("http://example.test:8080/app/x?a=1", "/app", "/x", "a=1"),  # absolute-form
        ("http://example.test", "", "/", ""),
    ],
)
def test_path_info_and_query(target, script_name, path_info, query):
    env = env_for(make_req(target), script_name)
    assert env["PATH_INFO"] == path_info
    assert env["QUERY_STRING"] == query
    assert env["SCRIPT_NAME"] == script_name
    assert env["REQUEST_URI"] == target


def test_script_name_mismatch_is_caller_error():
    with pytest.raises(ValueError, match="script_name"):
        env_for(make_req("/other/x"), "/app")


@pytest.mark.parametrize(
    ("name", "var"),
    [
        (b"host", "HTTP_HOST"),
        (b"user-agent", "HTTP_USER_AGENT"),
        (b"accept-encoding", "HTTP_ACCEPT_ENCODING"),
        (b"x-forwarded-for", "HTTP_X_FORWARDED_FOR"),
        (b"x-a1-b2", "HTTP_X_A1_B2"),
        (b"X-Mixed-Case", "HTTP_X_MIXED_CASE"),
    ],
)
def test_http_header_mapping(name, var):
    env = env_for(make_req(headers=[(name, b"v\xc3\xa9 1")]))
    assert env[var].encode() == b"v\xc3\xa9 1"  # the bytes received, not re-encoded


@pytest.mark.parametrize(
    "value, guest",
    [
        (b"caf\xc3\xa9 \xe2\x82\xac", b"caf\xc3\xa9 \xe2\x82\xac"),  # UTF-8: the same bytes
        (b"caf\xe9", b"caf\xef\xbf\xbd"),  # not UTF-8: U+FFFD, as WASI environment strings must be UTF-8
        (b"\xff\xfe\x80", b"\xef\xbf\xbd" * 3),
    ],
)
def test_header_values_reach_the_guest_as_received_when_utf8(value, guest):
    env = env_for(make_req(headers=[(b"x-name", value), (b"content-type", value)]))
    assert env["HTTP_X_NAME"].encode() == guest
    assert env["CONTENT_TYPE"].encode() == guest


@pytest.mark.parametrize(
    "name",
    [b"authorization", b"proxy-authorization", b"Authorization", b"proxy"],
)
def test_credentials_and_httpoxy_never_passed(name):
    env = env_for(make_req(headers=[(name, b"Basic dXNlcjpwYXNz")]))
    assert not any("dXNlcjpwYXNz" in v for v in env.values())
    assert "HTTP_AUTHORIZATION" not in env
    assert "HTTP_PROXY_AUTHORIZATION" not in env
    assert "HTTP_PROXY" not in env


@pytest.mark.parametrize("name", [b"x_forwarded_for", b"x.y", b"x y", b"x\xc3\xa9", b"-", b""])
def test_headers_with_odd_names_dropped(name):
    env = env_for(make_req(headers=[(b"x-forwarded-for", b"good"), (name, b"evil")]))
    assert env["HTTP_X_FORWARDED_FOR"] == "good"
    assert "evil" not in env.values()


def test_repeated_headers_joined():
    env = env_for(make_req(headers=[
        (b"accept", b"text/html"),
        (b"cookie", b"a=1"),
        (b"accept", b"application/json"),
        (b"cookie", b"b=2"),
        (b"cookie", b"c=3"),
    ]))
    assert env["HTTP_ACCEPT"] == "text/html, application/json"
    assert env["HTTP_COOKIE"] == "a=1; b=2; c=3"


def test_repeated_content_type_first_wins():
    env = env_for(make_req(headers=[(b"content-type", b"text/plain"),
                                    (b"content-type", b"text/html")]))
    assert env["CONTENT_TYPE"] == "text/plain"


def test_extra_applied_last_and_overrides():
    req = make_req(headers=[(b"host", b"h")])
    env = env_for(req, extra={"SERVER_NAME": "override", "HTTP_HOST": "x", "APP_MODE": "prod"})
    assert env["SERVER_NAME"] == "override"
    assert env["HTTP_HOST"] == "x"
    assert env["APP_MODE"] == "prod"
    assert list(env)[-1] == "APP_MODE"


def test_os_environ_does_not_leak(monkeypatch):
    monkeypatch.setenv("PREFORK_WASM_SENTINEL", "s3cr3t-sentinel")
    monkeypatch.setenv("PATH", "/sentinel/bin")
    env = env_for(make_req(headers=[(b"host", b"h")]))
    assert "PREFORK_WASM_SENTINEL" not in env
    assert "PATH" not in env
    assert not any("sentinel" in v for v in env.values())


def test_header_cache_is_consistent_across_calls():
    headers = [(b"x-weird_name", b"1"), (b"x-ok", b"2")]
    first = env_for(make_req(headers=headers))
    second = env_for(make_req(headers=headers))
    assert first == second
    assert first["HTTP_X_OK"] == "2" and "1" not in first.values()


# --------------------------------------------------------------------------- parse_cgi_response


def body_bytes(resp: Response) -> bytes:
    return bytes(resp.body)


@pytest.mark.parametrize(
    "raw",
    [
        b"Content-Type: text/plain\r\nX-A: 1\r\n\r\nhello",  # CRLF
        b"Content-Type: text/plain\nX-A: 1\n\nhello",  # bare LF
        b"Content-Type: text/plain\r\nX-A: 1\n\r\nhello",  # mixed
        b"Content-Type: text/plain\nX-A: 1\r\n\nhello",  # mixed the other way
        b"Content-Type:text/plain\r\nX-A:   1 \t\r\n\r\nhello",  # OWS stripped
    ],
)
def test_line_endings(raw):
    resp = parse_cgi_response(raw)
    assert resp.status == 200
    assert resp.reason == b""
    assert resp.headers == [(b"Content-Type", b"text/plain"), (b"X-A", b"1")]
    assert body_bytes(resp) == b"hello"


def test_first_blank_line_ends_headers_and_body_is_zero_copy():
    raw = b"Content-Type: a/b\n\nline1\n\nline2\r\n\r\nX: y\r\n"
    resp = parse_cgi_response(raw)
    assert isinstance(resp.body, memoryview)
    assert resp.body.obj is raw
    assert body_bytes(resp) == b"line1\n\nline2\r\n\r\nX: y\r\n"


def test_empty_body():
    resp = parse_cgi_response(b"Content-Type: text/plain\r\n\r\n")
    assert body_bytes(resp) == b""


def test_binary_body_all_bytes_intact():
    payload = bytes(range(256)) * 4 + b"\r\n\r\n" + b"\n\n" + b"\x00\r\n\r\n" + bytes(range(255, -1, -1))
    resp = parse_cgi_response(b"Content-Type: application/octet-stream\r\n\r\n" + payload)
    assert body_bytes(resp) == payload
    assert resp.headers == [(b"Content-Type", b"application/octet-stream")]


@pytest.mark.parametrize(
    ("status_line", "status", "reason"),
    [
        (b"Status: 404 Not Found", 404, b"Not Found"),
        (b"Status: 404", 404, b""),
        (b"Status:404", 404, b""),
        (b"status: 201 Created  ", 201, b"Created"),
        (b"STATUS: 500\tServer  Error", 500, b"Server  Error"),
        (b"Status: 200 OK", 200, b"OK"),
        (b"Status: 599 Whatever", 599, b"Whatever"),
        (b"Status: 418 I'm a teapot \xe9", 418, b"I'm a teapot \xe9"),
    ],
)
def test_status_forms(status_line, status, reason):
    resp = parse_cgi_response(status_line + b"\r\nContent-Type: text/plain\r\n\r\nx")
    assert (resp.status, resp.reason) == (status, reason)
    assert resp.headers == [(b"Content-Type", b"text/plain")]  # Status consumed


def test_status_alone_is_enough():
    resp = parse_cgi_response(b"Status: 204 No Content\r\n\r\n")
    assert (resp.status, resp.reason, resp.headers) == (204, b"No Content", [])


@pytest.mark.parametrize(
    "value",
    [b"", b"40", b"4040", b"404x", b"abc", b"99", b"099", b"600", b"999", b"1000",
     b"-40", b"+40", b"100 Continue", b"101", b"4 04", b"\xd9\xa4\xd9\xa0\xd9\xa4"],
)
def test_malformed_status(value):
    with pytest.raises(CgiOutputError, match="malformed Status"):
        parse_cgi_response(b"Status: " + value + b"\r\nContent-Type: text/plain\r\n\r\n")


def test_duplicate_status_rejected():
    with pytest.raises(CgiOutputError, match="Status"):
        parse_cgi_response(b"Status: 200\r\nStatus: 404\r\n\r\n")


@pytest.mark.parametrize(
    "location",
    [b"http://example.com/elsewhere", b"https://example.com/", b"/local/path?x=1", b"//other.host/x"],
)
def test_location_without_status_is_302(location):
    resp = parse_cgi_response(b"Location: " + location + b"\r\n\r\n")
    assert resp.status == 302
    assert resp.reason == b""
    assert resp.headers == [(b"Location", location)]


def test_location_with_status_keeps_status():
    resp = parse_cgi_response(
        b"Status: 301 Moved Permanently\r\nLocation: https://example.com/\r\n"
        b"Content-Type: text/html\r\n\r\n<a>moved</a>"
    )
    assert (resp.status, resp.reason) == (301, b"Moved Permanently")
    assert resp.headers == [(b"Location", b"https://example.com/"), (b"Content-Type", b"text/html")]
    assert body_bytes(resp) == b"<a>moved</a>"


def test_empty_location_rejected():
    with pytest.raises(CgiOutputError, match="Location"):
        parse_cgi_response(b"Location:  \r\n\r\n")


def test_repeated_headers_kept_in_order():
    resp = parse_cgi_response(
        b"Set-Cookie: a=1; Path=/\r\nContent-Type: text/plain\r\n"
        b"Set-Cookie: b=2\r\nset-cookie: c=3\r\nX-Empty:\r\n\r\n"
    )
    assert resp.headers == [
        (b"Set-Cookie", b"a=1; Path=/"),
        (b"Content-Type", b"text/plain"),
        (b"Set-Cookie", b"b=2"),
        (b"set-cookie", b"c=3"),
        (b"X-Empty", b""),
    ]


@pytest.mark.parametrize(
    "hop",
    [b"Connection: close", b"Transfer-Encoding: chunked", b"Content-Length: 999",
     b"Keep-Alive: timeout=5", b"Upgrade: websocket", b"Proxy-Connection: keep-alive",
     b"TE: trailers", b"Trailer: X-Checksum", b"CONTENT-LENGTH: 1"],
)
def test_hop_by_hop_and_framing_headers_dropped(hop):
    resp = parse_cgi_response(b"Content-Type: text/plain\r\n" + hop + b"\r\nX-Keep: 1\r\n\r\nabc")
    assert resp.headers == [(b"Content-Type", b"text/plain"), (b"X-Keep", b"1")]
    assert body_bytes(resp) == b"abc"


def test_only_dropped_headers_do_not_satisfy_required_fields():
    with pytest.raises(CgiOutputError, match="Content-Type, Location, Status"):
        parse_cgi_response(b"Content-Length: 3\r\nConnection: close\r\n\r\nabc")


@pytest.mark.parametrize(
    "raw",
    [
        b"Content-Type: text/plain\r\nX-Bad: a\rInjected: yes\r\n\r\n",  # bare CR
        b"Content-Type: text/plain\nX-Bad: a\rInjected: yes\n\n",
        b"Content-Type: text/plain\r\nX-Bad: a\x00b\r\n\r\n",  # NUL
        b"Content-Type: text/plain\r\nX-Bad: a\x0bb\r\n\r\n",  # VT (h11 refuses it)
        b"Content-Type: text/plain\r\nX-Bad: a\x0cb\r\n\r\n",  # FF
        b"Content-Type: text/plain\r\nX-Bad: a\r\r\n\r\n",  # CR before CRLF
        b"Status: 200 OK\rSet-Cookie: x=1\r\n\r\n",  # CR in the reason phrase
    ],
)
def test_injection_rejected(raw):
    with pytest.raises(CgiOutputError, match="control character"):
        parse_cgi_response(raw)


def test_other_control_characters_tolerated_like_h11():
    resp = parse_cgi_response(b"Content-Type: text/plain\r\nX-GA: a\x01b\x7f\r\n\r\n")
    assert resp.headers[1] == (b"X-GA", b"a\x01b\x7f")


@pytest.mark.parametrize(
    "raw",
    [
        b"Content-Type: text/plain\r\nX-Long: a\r\n  continued\r\n\r\n",
        b"Content-Type: text/plain\r\nX-Long: a\r\n\tcontinued\r\n\r\n",
        b" Content-Type: text/plain\r\n\r\n",
    ],
)
def test_obs_fold_rejected(raw):
    with pytest.raises(CgiOutputError, match="folding"):
        parse_cgi_response(raw)


@pytest.mark.parametrize(
    "line",
    [b"X Space: 1", b"X-Colon : 1", b": empty-name", b"X(paren): 1", b"X\xe9: 1", b"X/Y: 1"],
)
def test_invalid_header_name_rejected(line):
    with pytest.raises(CgiOutputError, match="header name"):
        parse_cgi_response(b"Content-Type: text/plain\r\n" + line + b"\r\n\r\n")


def test_line_without_colon_named_and_truncated():
    line = b"this line has no colon " + b"z" * 200
    with pytest.raises(CgiOutputError, match="without ':'") as exc:
        parse_cgi_response(b"Content-Type: text/plain\r\n" + line + b"\r\n\r\n")
    msg = str(exc.value)
    assert repr(line[:60]) in msg
    assert "z" * 61 not in msg


@pytest.mark.parametrize(
    "raw",
    [b"Content-Type: text/plain\r\n", b"Content-Type: text/plain", b"Content-Type: text/plain\r\nX: 1\r\nbody"],
)
def test_missing_blank_line(raw):
    with pytest.raises(CgiOutputError, match="no blank line after the CGI header block"):
        parse_cgi_response(raw)


def test_empty_output():
    with pytest.raises(CgiOutputError, match="empty output: no CGI header block"):
        parse_cgi_response(b"")


@pytest.mark.parametrize(
    "raw",
    [b"X-Foo: 1\r\n\r\nbody", b"\r\nbody", b"\nbody", b"Set-Cookie: a=1\n\n"],
)
def test_missing_required_field(raw):
    with pytest.raises(CgiOutputError, match="none of Content-Type, Location, Status"):
        parse_cgi_response(raw)


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"])
def test_header_block_at_size_limit_accepted(eol):
    head = b"Content-Type: text/plain" + eol + b"X-Pad: "
    pad = b"p" * (MAX_HEADER_BYTES - len(head) - len(eol))  # the limit counts line ends
    raw = head + pad + eol + eol + b"body"
    resp = parse_cgi_response(raw)
    assert resp.headers[1] == (b"X-Pad", pad)
    assert body_bytes(resp) == b"body"


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"])
@pytest.mark.parametrize("body", [b"body", b"x" * 200_000, b""])
def test_header_block_over_size_limit_rejected(eol, body):
    head = b"Content-Type: text/plain" + eol + b"X-Pad: "
    pad = b"p" * (MAX_HEADER_BYTES - len(head) - len(eol) + 1)  # one byte over
    with pytest.raises(CgiOutputError, match="larger than"):
        parse_cgi_response(head + pad + eol + eol + body)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"Content-Type: text/plain\r\nX: " + b"y" * 200_000, "larger than"),
        (b"Content-Type: text/plain\r\n" + b"X: y\r\n" * 20_000, "more than 100"),
    ],
)
def test_huge_output_without_blank_line_hits_a_limit(raw, message):
    with pytest.raises(CgiOutputError, match=message):
        parse_cgi_response(raw)


def test_header_line_count_limit():
    ok = b"Content-Type: text/plain\r\n" + b"X-N: 1\r\n" * (MAX_HEADER_LINES - 1) + b"\r\n"
    assert len(parse_cgi_response(ok).headers) == MAX_HEADER_LINES
    too_many = b"Content-Type: text/plain\r\n" + b"X-N: 1\r\n" * MAX_HEADER_LINES + b"\r\n"
    with pytest.raises(CgiOutputError, match=f"more than {MAX_HEADER_LINES}"):
        parse_cgi_response(too_many)


def test_errors_are_value_errors():
    assert issubclass(CgiOutputError, ValueError)


# --------------------------------------------------------------------------- plain_response


@pytest.mark.parametrize("output", [b"", b"hello\r\n\r\nworld", bytes(range(256))])
def test_plain_response(output):
    resp = plain_response(output, "text/plain; charset=utf-8")
    assert resp.status == 200
    assert resp.reason == b""
    assert resp.headers == [(b"Content-Type", b"text/plain; charset=utf-8")]
    assert resp.body is output


# --------------------------------------------------------------------------- properties

_header_line = st.builds(
    lambda n, v: n + b":" + v,
    st.sampled_from([b"Content-Type", b"Status", b"Location", b"X-A", b"Set-Cookie", b"Bad Name", b""]),
    st.binary(max_size=20).map(lambda v: v.replace(b"\n", b"")),  # keep the line structure
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_header_line, max_size=6), st.sampled_from([b"\r\n", b"\n"]), st.binary(max_size=50))
def test_accepted_output_is_sendable_by_h11(lines, eol, body):
    """Whatever the parser accepts, h11 can serialise: a guest can't crash the server."""
    raw = eol.join(lines) + eol + eol + body
    try:
        resp = parse_cgi_response(raw)
    except CgiOutputError:
        return
    assert bytes(resp.body) == body
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.next_event()
    out = conn.send(h11.Response(status_code=resp.status, reason=resp.reason,
                                 headers=resp.headers + [(b"Content-Length", b"%d" % len(body))]))
    assert out.startswith(b"HTTP/1.1 %d" % resp.status)
    assert out.count(b"\r\n\r\n") == 1 and out.endswith(b"\r\n\r\n")  # no injected block end


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_output_only_raises_cgi_output_error(raw):
    try:
        resp = parse_cgi_response(raw)
    except CgiOutputError:
        return
    assert 200 <= resp.status <= 599
    assert raw.endswith(bytes(resp.body))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=1, max_size=12), st.binary(max_size=12)), max_size=8))
def test_environ_keys_are_always_safe(headers):
    env = env_for(make_req(headers=headers))
    for key in env:
        if key.startswith("HTTP_"):
            assert key[5:].replace("_", "").isalnum() and key.isascii()
            assert key not in ("HTTP_AUTHORIZATION", "HTTP_PROXY_AUTHORIZATION", "HTTP_PROXY",
                               "HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH")
