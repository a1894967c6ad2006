"""Test harness: start the real server as a separate process on a free loopback port.

Every server a test starts is stopped at the end of that test, and every process it forked is
killed by pid if it outlived the master (never by name).
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "wasm"
MODULES = REPO / "tests" / "modules"

# The smallest useful server: the hello example at /hello.
HELLO = """
<Location /hello>
    SetHandler wasm-handler
    WasmModule ${EXAMPLES}/hello.wasm
    WasmEnableCGI On
</Location>
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> object:
    """Poll `predicate` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def env_of(body: bytes) -> dict[str, str]:
    """The NAME=value lines the env example prints (its CGI environment and argv)."""
    pairs = (line.split("=", 1) for line in body.decode().splitlines() if "=" in line)
    return {k: v for k, v in pairs}


class Server:
    """A prefork-wasm master started from a config written into a temporary folder."""

    def __init__(self, root: Path, body: str, start_servers: int = 2, log_level: str = "info") -> None:
        self.root = root
        self.port = free_port()
        self.conf = root / "server.conf"
        self.error_log = root / "logs" / "error_log"
        self.access_log = root / "logs" / "access_log"
        self.pid_file = root / "logs" / "prefork-wasm.pid"
        self.write_config(body, start_servers, log_level)
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen_pids: set[int] = set()

    def write_config(self, body: str, start_servers: int = 2, log_level: str = "info") -> None:
        self.conf.write_text(
            f"""Define EXAMPLES {EXAMPLES}
Define MODULES {MODULES}
Listen 127.0.0.1:{self.port}
ServerName localhost
PidFile logs/prefork-wasm.pid
ErrorLog logs/error_log
LogLevel {log_level}
CustomLog logs/access_log combined
WasmCacheDir cache
# A fixed pool unless the body says otherwise (later directives win).
StartServers {start_servers}
MinSpareServers 1
MaxSpareServers {max(start_servers, 2)}
MaxRequestWorkers {start_servers}
{body}
"""
        )

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "prefork_wasm.cli", "-f", str(self.conf), *args]

    def start(self, wait: bool = True, command: list[str] | None = None, **popen: Any) -> Server:
        """`command` (default: serve the config) and `popen` (env, pass_fds) let a test play the
        part of what starts the server, as systemd does."""
        self.stdout = open(self.root / "stdout", "wb")
        self.stderr = open(self.root / "stderr", "wb")
        self.proc = subprocess.Popen(
            command or self.command(), stdout=self.stdout, stderr=self.stderr, cwd=self.root, **popen
        )
        if wait:
            # Generous: a cold cache compiles the 13-19 MB example components first (5-10 s
            # each on 2 busy cores); a server that exits instead fails at once (see _ready).
            wait_for(self._ready, timeout=180, what="the server to answer")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}\n{self.stderr_text()}")
        try:
            if self.pid_file.read_text().strip() != str(self.pid):
                return False  # still compiling: the pid file is written just before the first fork
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                sock.sendall(b"OPTIONS * HTTP/1.1\r\nHost: ready\r\nConnection: close\r\n\r\n")
                return sock.recv(16).startswith(b"HTTP/1.1 ")
        except OSError:
            return False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def worker_pids(self) -> set[int]:
        try:
            pids = {p.pid for p in psutil.Process(self.pid).children()}
        except psutil.NoSuchProcess:
            return set()
        self.seen_pids |= pids
        return pids

    def wait_for_workers(self, ok: Callable[[set[int]], bool], timeout: float = 10.0, what: str = "") -> set[int]:
        """Poll until one snapshot of the worker pids satisfies `ok`, and return that snapshot.

        Every condition is checked on the same listing: two listings could straddle a reap
        and a fork and describe a pool that never existed.
        """
        pids = wait_for(lambda: pids if ok(pids := self.worker_pids()) else None, timeout=timeout, what=what)
        assert isinstance(pids, set)
        return pids

    def log(self) -> str:
        return self.error_log.read_text() if self.error_log.exists() else ""

    def stderr_text(self) -> str:
        path = self.root / "stderr"
        return path.read_text() if path.exists() else ""

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> tuple[int, dict[str, str], bytes, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            chunked = body is not None and not isinstance(body, bytes)
            conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, resp
        finally:
            conn.close()

    def get(self, path: str, **kw: object) -> tuple[int, dict[str, str], bytes, http.client.HTTPResponse]:
        return self.request("GET", path, **kw)  # type: ignore[arg-type]

    def raw(self, target: str | bytes, method: str = "GET", host: str = "x") -> tuple[int, bytes]:
        """The status and body for a request-target sent exactly as written: no client library
        in between to normalise or refuse a hostile one."""
        if isinstance(target, str):
            target = target.encode()
        head = f"{method} ".encode() + target + f" HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(head)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        status_line, _, body = data.partition(b"\r\n\r\n")
        return int(status_line.split()[1]), body

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.worker_pids()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in self.seen_pids:
            try:
                proc = psutil.Process(pid)
                if proc.ppid() in (self.pid, 1):
                    proc.kill()
            except psutil.NoSuchProcess:
                pass
        self.stdout.close()
        self.stderr.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def component_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One WasmCacheDir for every server that serves the big test component (an 18 MB
    componentize-py build): the suite compiles it once, not per test."""
    return tmp_path_factory.mktemp("component-cache")


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(body: str, start: bool = True, **kw: object) -> Server:
        root = tmp_path / f"server{len(servers)}"
        root.mkdir()
        server = Server(root, body, **kw)  # type: ignore[arg-type]
        servers.append(server)
        return server.start() if start else server

    yield make
    for server in servers:
        server.stop()
