"""Request semantics against the real server: CGI, non-CGI, guest failures (issue 2, items 2-3)."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import EXAMPLES, HELLO, Server, env_of, wait_for

DATA = EXAMPLES.parent / "data"

LOCATIONS = f"""
<Location /env>
    SetHandler wasm-handler
    WasmModule ${{EXAMPLES}}/env.wasm
    WasmEnableCGI On
    WasmArg first
    WasmArg "second arg"
    WasmEnv GREETING "hello there"
</Location>
<Location /echo>
    SetHandler wasm-handler
    WasmModule ${{EXAMPLES}}/echo.wasm
    WasmEnableCGI On
</Location>
<Location /headers>
    SetHandler wasm-handler
    WasmModule ${{MODULES}}/headers.wasm
    WasmEnableCGI On
</Location>
<Location /plain>
    SetHandler wasm-handler
    WasmModule ${{EXAMPLES}}/plain.wasm
</Location>
<Location /typed>
    SetHandler wasm-handler
    WasmModule ${{EXAMPLES}}/plain.wasm
    ForceType text/plain
</Location>
<Location /mapped>
    SetHandler wasm-handler
    WasmModule ${{MODULES}}/readfile.wasm
    WasmEnableCGI On
    WasmMapDir /data {DATA}
</Location>
<Location /wasmdir>
    SetHandler wasm-handler
    WasmModule ${{EXAMPLES}}/cat.wasm
    WasmEnableCGI On
    WasmDir {DATA}
</Location>
<Location /trap>
    SetHandler wasm-handler
    WasmModule ${{MODULES}}/trap.wasm
    WasmEnableCGI On
</Location>
<Location /loop>
    SetHandler wasm-handler
    WasmModule ${{MODULES}}/loop.wasm
    WasmEnableCGI On
    WasmTimeout 1
</Location>
<Location /membomb>
    SetHandler wasm-handler
    WasmModule ${{MODULES}}/membomb.wasm
    WasmEnableCGI On
    WasmMemoryLimit 32M
</Location>
<Location /recurse>
    SetHandler wasm-handler
    WasmModule ${{MODULES}}/recurse.wasm
    WasmEnableCGI On
</Location>
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    # One worker, so "the same worker serves the next request" is observable by pid.
    srv = Server(tmp_path_factory.mktemp("requests"), LOCATIONS, start_servers=1).start()
    yield srv
    srv.stop()


def test_cgi_environment(server: Server) -> None:
    status, headers, body, _ = server.get(
        "/env/some/path%20x?q=1&r=%20", headers={"X-Custom": "yes", "Authorization": "Basic c2VjcmV0"}
    )
    assert status == 200 and headers["content-type"] == "text/plain"
    env = env_of(body)
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == "/env"
    assert env["PATH_INFO"] == "/some/path x"
    assert env["QUERY_STRING"] == "q=1&r=%20"
    assert env["REQUEST_URI"] == "/env/some/path%20x?q=1&r=%20"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_PORT"] == str(server.port)
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert env["SERVER_SOFTWARE"].startswith("prefork-wasm/")
    assert env["REMOTE_ADDR"] == "127.0.0.1" and int(env["REMOTE_PORT"]) > 0
    assert env["REQUEST_SCHEME"] == "http"
    assert env["SCRIPT_FILENAME"].endswith("env.wasm")
    assert env["HTTP_X_CUSTOM"] == "yes"
    assert "HTTP_AUTHORIZATION" not in env
    assert env["GREETING"] == "hello there"  # WasmEnv
    assert env["argv[1]"] == "first" and env["argv[2]"] == "second arg"  # WasmArg
    assert "CONTENT_LENGTH" not in env


def test_header_values_reach_the_guest_as_the_bytes_received(server: Server) -> None:
    """UTF-8 in a header value reaches the guest unchanged (it was re-encoded as if latin-1:
    c3 a9 became c3 83 c2 a9); bytes that are not UTF-8 become U+FFFD, since WASI environment
    strings must be UTF-8."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"GET /env HTTP/1.1\r\nHost: x\r\nX-Name: caf\xc3\xa9\r\nX-Latin: caf\xe9\r\nConnection: close\r\n\r\n"
        )
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 200 ")
    assert b"\nHTTP_X_NAME=caf\xc3\xa9\n" in response
    assert b"\nHTTP_X_LATIN=caf\xef\xbf\xbd\n" in response


def test_server_environment_does_not_leak(server: Server) -> None:
    _, _, body, _ = server.get("/env")
    env = env_of(body)
    allowed_prefixes = ("HTTP_", "argv[")
    cgi_names = {
        "REQUEST_METHOD", "QUERY_STRING", "PATH_INFO", "SCRIPT_NAME", "SCRIPT_FILENAME",
        "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "SERVER_SOFTWARE", "GATEWAY_INTERFACE",
        "REMOTE_ADDR", "REMOTE_PORT", "REQUEST_URI", "REQUEST_SCHEME", "UNIQUE_ID", "GREETING",
    }
    leaked = {k for k in env if k not in cgi_names and not k.startswith(allowed_prefixes)}
    assert leaked == set()
    assert "PATH" not in env and "HOME" not in env


def test_body_with_content_length(server: Server) -> None:
    payload = bytes(range(256)) * 300
    status, headers, body, _ = server.request(
        "POST", "/echo", body=payload, headers={"Content-Type": "application/x-test"}
    )
    assert status == 200
    assert body == payload
    assert headers["content-type"] == "application/x-test"
    assert headers["x-body-length"] == str(len(payload))


def test_body_chunked(server: Server) -> None:
    chunks = [b"hello ", b"chunked ", b"world"]
    status, headers, body, _ = server.request(
        "POST", "/echo", body=iter(chunks), headers={"Transfer-Encoding": "chunked"}  # type: ignore[arg-type]
    )
    assert status == 200 and body == b"hello chunked world"


def test_chunked_body_sets_content_length_for_the_guest(server: Server) -> None:
    status, _, body, _ = server.request(
        "POST", "/env", body=iter([b"abc", b"de"]), headers={"Transfer-Encoding": "chunked"}  # type: ignore[arg-type]
    )
    assert status == 200 and env_of(body)["CONTENT_LENGTH"] == "5"


@pytest.mark.parametrize(
    "query, status, check",
    [
        ("status", 201, lambda h, b: b == b"created\n"),
        ("redirect", 302, lambda h, b: h["location"] == "http://example.com/elsewhere"),
        ("lf", 200, lambda h, b: h["x-lf"] == "yes" and b == b"lf body\n"),
        ("binary", 200, lambda h, b: b == bytes(range(256)) * 2),
        ("exit3-out", 200, lambda h, b: b == b"partial\n"),
    ],
)
def test_cgi_response_headers(server: Server, query: str, status: int, check) -> None:
    got, headers, body, _ = server.get(f"/headers?{query}")
    assert got == status
    assert check(headers, body)


def test_repeated_set_cookie_kept(server: Server) -> None:
    _, _, _, resp = server.get("/headers?cookies")
    assert resp.headers.get_all("Set-Cookie") == ["a=1", "b=2"]


def test_head_runs_module_and_sends_no_body(server: Server) -> None:
    status, headers, body, _ = server.request("HEAD", "/headers?binary")
    assert status == 200 and body == b""
    assert headers["content-length"] == "512"


def test_unmapped_path_is_404(server: Server) -> None:
    assert server.get("/nothing-here")[0] == 404
    assert server.get("/envelope")[0] == 404  # a prefix match is on path segments


def test_non_cgi_mode(server: Server) -> None:
    status, headers, body, _ = server.get("/plain")
    assert status == 200 and body == b"plain output, no CGI headers\n"
    assert headers["content-type"] == "application/octet-stream"
    status, headers, _, _ = server.get("/typed")
    assert status == 200 and headers["content-type"] == "text/plain"


def test_wasm_map_dir_read_and_sandbox(server: Server) -> None:
    status, _, body, _ = server.get("/mapped?/data/greeting.txt")
    assert status == 200
    text = body.decode()
    assert "/data/greeting.txt: opened" in text
    assert "Hello from a mapped directory!" in text
    assert "/etc/passwd: denied" in text
    assert "../../etc/passwd: denied" in text
    assert "root:" not in text


def test_wasm_dir_is_seen_at_its_host_path(server: Server) -> None:
    status, _, body, _ = server.get(f"/wasmdir?{DATA}/greeting.txt")
    assert status == 200 and body == b"Hello from a mapped directory!\n"
    assert server.get("/wasmdir?/etc/passwd")[0] == 404  # the module's "cannot open"


def log_lines_with(server: Server, needle: str) -> list[str]:
    return [line for line in server.log().splitlines() if needle in line]


@pytest.mark.parametrize(
    "path, status, cause",
    [
        ("/trap", 500, "unreachable"),
        ("/headers?garbage", 502, "malformed CGI output"),
        ("/headers?empty", 502, "malformed CGI output"),
        ("/headers?exit3", 500, "exited with status 3"),
        ("/headers?badstatus", 502, "malformed Status"),
        ("/headers?inject", 502, "forbidden control character"),
        ("/membomb", 500, "unreachable"),
        ("/recurse", 500, "stack overflow"),
    ],
)
def test_guest_failures_answered_and_logged_and_worker_survives(
    server: Server, path: str, status: int, cause: str
) -> None:
    workers = server.worker_pids()
    got, headers, _, resp = server.get(path)
    assert got == status
    lines = wait_for(lambda: [line for line in log_lines_with(server, cause) if path.split("?")[0] in line], what=cause)
    assert ":error]" in lines[-1] and "request " in lines[-1]
    assert server.get("/headers?status")[0] == 201
    assert server.worker_pids() == workers


def test_endless_loop_is_504_within_timeout(server: Server) -> None:
    workers = server.worker_pids()
    start = time.monotonic()
    status = server.get("/loop")[0]
    elapsed = time.monotonic() - start
    assert status == 504
    assert elapsed < 1 + 1.0  # WasmTimeout 1 plus a second
    wait_for(lambda: log_lines_with(server, "WasmTimeout reached"))
    assert server.get("/headers?status")[0] == 201
    assert server.worker_pids() == workers


def test_guest_stderr_goes_to_error_log_with_request_id(server: Server) -> None:
    status, _, body, _ = server.get("/headers?stderr")
    assert status == 200 and body == b"ok\n"
    line = wait_for(lambda: log_lines_with(server, "guest says hello on stderr"))[-1]
    assert "request " in line and "headers.wasm" in line
    wait_for(lambda: "/headers?stderr" in server.access_log.read_text(), what="the access log line")


def test_failure_log_line_carries_the_request_id_the_guest_saw(server: Server) -> None:
    _, _, body, _ = server.get("/env")
    request_id = env_of(body)["UNIQUE_ID"]
    assert request_id
    server.get("/trap")
    line = wait_for(lambda: log_lines_with(server, "/trap"))[-1]
    prefix = request_id.rsplit("-", 1)[0]
    assert f"request {prefix}-" in line


def test_keep_alive_and_pipelining(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"GET /headers?status HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /headers?status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 201 ") == 2
    assert data.count(b"HTTP/1.1 200 ") == 1
    assert data.index(b"plain output") > data.index(b"created")


def _fixed_output_module(path: Path, output: bytes) -> Path:
    """A module that writes `output` to stdout and returns."""
    data = "".join(f"\\{b:02x}" for b in output)
    path.write_text(
        '(module (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))'
        f' (memory (export "memory") 1) (data (i32.const 16) "{data}")'
        ' (func (export "_start") (i32.store (i32.const 0) (i32.const 16))'
        f' (i32.store (i32.const 4) (i32.const {len(output)}))'
        ' (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))'
    )
    return path


@pytest.mark.parametrize("status", [204, 304])
def test_a_bodiless_status_from_a_guest_is_answered_without_its_body(
    make_server: Callable[..., Server], tmp_path: Path, status: int
) -> None:
    """RFC 9110 6.4.1: 204 and 304 have no body, and a 204 no Content-Length (8.6). A guest that
    writes a body anyway gets its head sent, the body dropped and the exchange logged, on a
    connection that stays usable (Apache drops it the same way)."""
    module = _fixed_output_module(tmp_path / "bodiless.wat", b"Status: %d\r\nX-Guest: yes\r\n\r\nstray body" % status)
    server = make_server(f"<Location /bodiless>\nSetHandler wasm-handler\nWasmModule {module}\n"
                         "WasmEnableCGI On\n</Location>\n" + HELLO, start_servers=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"GET /bodiless HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status) and b"x-guest: yes" in head.lower()
    assert b"content-length" not in head.lower()
    assert rest.startswith(b"HTTP/1.1 200 ") and rest.endswith(b"Hello from WebAssembly!\n")  # no stray body between
    wait_for(
        lambda: f'"GET /bodiless HTTP/1.1" {status} - ' in server.access_log.read_text(), what="the logged exchange"
    )


def test_a_closing_response_carries_the_end_of_the_connection(server: Server) -> None:
    """With `Connection: close`, the server's FIN leaves with the response's last bytes (MSG_MORE,
    then a half-close before logging): once the response can be read, so can its end. Sent apart,
    after the access log, the end would come later and the read below would find nothing yet."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert select.select([sock], [], [], 10)[0]
        response = sock.recv(65536)
        sock.setblocking(False)
        end = sock.recv(65536)  # BlockingIOError if the end had not come with the response
    assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(b"plain output, no CGI headers\n")
    assert end == b""


def test_access_log_is_combined_format(server: Server) -> None:
    server.get("/headers?status", headers={"User-Agent": "test-agent/1", "Referer": "http://ref/"})
    line = wait_for(
        lambda: [entry for entry in server.access_log.read_text().splitlines() if "test-agent/1" in entry]
    )[-1]
    assert line.startswith("127.0.0.1 - - [")
    assert '"GET /headers?status HTTP/1.1" 201 8 "http://ref/" "test-agent/1"' in line


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"Hello from WebAssembly!\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_kept_alive_connection_does_not_keep_its_worker_from_a_waiting_client(
    make_server: Callable[..., Server],
) -> None:
    """One worker: while a first client keeps its connection open between requests, a second is
    served at once, and the first is served again on the connection it kept (never told to
    close, never made to wait for KeepAliveTimeout)."""
    server = make_server(HELLO + "KeepAliveTimeout 30\n", start_servers=1)
    request = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as first:
        first.sendall(request)
        assert b"connection: close" not in _read_response(first).lower()
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as second:
                start = time.monotonic()
                second.sendall(request)
                answer = _read_response(second)
                assert answer.startswith(b"HTTP/1.1 200 ") and b"connection: close" not in answer.lower()
                assert time.monotonic() - start < 1
                first.sendall(request)
                answer = _read_response(first)
                assert answer.startswith(b"HTTP/1.1 200 ") and b"connection: close" not in answer.lower()
