"""The one server harness: the test suite, scripts/soak and the benchmark start, probe and stop
their servers through it.

A server runs as a separate process on a free 127.0.0.1 port. Readiness is polled with a
deadline, and a process that exits while it is awaited fails the wait at once. A server is
stopped by pid: SIGTERM, a bounded wait, SIGKILL; then every process it was seen to fork that
outlived it is killed (psutil refuses to signal a pid since reused by another process). Nothing
is ever stopped by name.

Server is the prefork-wasm server the tests and the soak run; Process is any server process
(the benchmark's peers keep their own command lines); HELLO and env_of are small things the
tests share.

Test and benchmark infrastructure, not part of the prefork_wasm package: the standard library
and psutil only, because the benchmark imports it from a virtualenv of its own. pytest finds it
on its pythonpath (tests/); scripts/soak, scripts/bench and scripts/rolling-restart put tests/ on
PYTHONPATH.
"""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import psutil

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "wasm"
MODULES = REPO / "tests" / "modules"
STOP_GRACE = 15.0  # seconds a server gets to exit after SIGTERM before it is killed
# Generous: a cold cache compiles the big example components first (seconds each on 2 busy
# cores); a server that exits instead fails the wait at once.
START_TIMEOUT = 180.0

# The smallest useful server: the hello example at /hello.
HELLO = """
<Location /hello>
    SetHandler wasm-handler
    WasmModule ${EXAMPLES}/hello.wasm
    WasmEnableCGI On
</Location>
"""

T = TypeVar("T")


class WaitFailed(AssertionError):
    """A polled condition did not hold within its deadline, or the process it needed exited
    first. An AssertionError, so that a test reports it as a failed expectation."""


def free_port() -> int:
    """A free loopback port (the kernel picks it; a tiny race until the server binds it)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = "",
             explain: Callable[[], str] | None = None) -> T:
    """Poll `predicate` until it returns something truthy, and return that; fail after `timeout`
    seconds (with what `explain` says, if given)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f":\n{explain()}" if explain else ""
            raise WaitFailed(f"timed out after {timeout:g} s waiting for {what or predicate}{detail}")
        time.sleep(interval)


def serve_command(conf: Path, *args: str, python: str | Path = sys.executable) -> list[str]:
    """How prefork-wasm is started: its command line under a Python that has it installed."""
    return [str(python), "-m", "prefork_wasm.cli", "-f", str(conf), *args]


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET `path` on a connection of its own (closed after the answer): status and body."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def http_status(port: int, path: str, timeout: float = 2.0) -> int | None:
    """The status GET `path` answers, or None while nothing answers (a readiness probe)."""
    try:
        return http_get(port, path, timeout)[0]
    except (OSError, http.client.HTTPException):
        return None


def env_of(body: bytes) -> dict[str, str]:
    """The NAME=value lines the env example prints (its CGI environment and argv)."""
    pairs = (line.split("=", 1) for line in body.decode().splitlines() if "=" in line)
    return {k: v for k, v in pairs}


@dataclass(frozen=True)
class Stopped:
    """How a stop went."""

    exit_status: int
    seconds: float  # from SIGTERM until the master exited
    killed_master: bool  # it did not exit within the grace period and was killed
    leftover_workers: list[int]  # processes it forked still running after it exited (killed)


class Process:
    """A process this program started (a server's master, as a rule), and every process it was
    seen to fork, kept as psutil.Process objects: those refuse to signal a reused pid.

    `output` takes its stdout, and its stderr too unless `errors` names a file for that; `logs`
    are further files whose ends explain a failure. `popen` goes to subprocess.Popen (env,
    cwd, pass_fds, start_new_session...).
    """

    def __init__(self, argv: list[str], output: Path, *, errors: Path | None = None, logs: tuple[Path, ...] = (),
                 name: str = "", **popen: Any) -> None:
        self.name = name or Path(argv[0]).name
        self.logs = (*logs, output, *([errors] if errors else []))
        self._files: list[IO[bytes]] = [open(output, "wb")]
        if errors:
            self._files.append(open(errors, "wb"))
        streams: dict[str, Any] = {"stdin": subprocess.DEVNULL, "stdout": self._files[0],
                                   "stderr": self._files[-1] if errors else subprocess.STDOUT}
        try:
            self.popen: subprocess.Popen[bytes] = subprocess.Popen(argv, **(streams | popen))
        except BaseException:
            self._close()
            raise
        self.pid = self.popen.pid
        self.started = time.monotonic()
        self.ps = psutil.Process(self.pid)
        self.seen: dict[int, psutil.Process] = {}
        self.stopped: Stopped | None = None

    def alive(self) -> bool:
        return self.popen.poll() is None

    def children(self, recursive: bool = False) -> list[psutil.Process]:
        """Its children now (none once it has exited), each remembered for stop()."""
        if not self.alive():
            return []
        try:
            kids = self.ps.children(recursive=recursive)
        except psutil.NoSuchProcess:
            return []
        for kid in kids:
            self.seen[kid.pid] = kid
        return kids

    def wait_until(self, predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.02) -> float:
        """Poll `predicate` until it holds; the seconds since the start. Fails at once if the
        process exits first."""

        def holds() -> object:
            if not self.alive():
                raise WaitFailed(f"{self.name} exited with status {self.popen.returncode} while waiting for "
                                 f"{what}:\n{self.tail()}")
            return predicate()

        wait_for(holds, timeout, interval, what, explain=self.tail)
        return time.monotonic() - self.started

    def tail(self, lines: int = 40) -> str:
        """The last lines of each log file that has any: what a failure message shows."""
        parts = []
        for path in self.logs:
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            if text:
                parts.append(f"--- {path}\n" + "\n".join(text))
        return "\n".join(parts) or f"(nothing in {', '.join(str(p) for p in self.logs)})"

    def stop(self, grace: float = STOP_GRACE) -> Stopped:
        """SIGTERM, up to `grace` seconds for it to exit, else SIGKILL; then SIGKILL whatever it
        forked that outlived it. A second stop returns the first one's result."""
        if self.stopped:
            return self.stopped
        self.children(recursive=True)  # remembered now: once it is gone they are re-parented
        start = time.monotonic()
        killed = False
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                killed = True
                self.popen.kill()
                self.popen.wait(grace)
        seconds = time.monotonic() - start
        leftovers = [pid for pid, proc in list(self.seen.items()) if _kill_if_running(proc)]
        self._close()
        self.stopped = Stopped(self.popen.returncode, seconds, killed, leftovers)
        return self.stopped

    def _close(self) -> None:
        for f in self._files:
            f.close()


def _kill_if_running(proc: psutil.Process) -> bool:
    try:
        if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
            proc.kill()
            return True
    except psutil.NoSuchProcess:
        pass
    return False


class Server:
    """A prefork-wasm master serving a config written into its own folder `root`, on a free port.

    The config is a fixed head (the port, logs under root/logs, a cache, a small fixed pool)
    followed by `body`; later directives win, so a body can change any of the head's.
    """

    def __init__(self, root: Path, body: str, start_servers: int = 2, log_level: str = "info") -> None:
        self.root = root
        self.port = free_port()
        self.conf = root / "server.conf"
        self.error_log = root / "logs" / "error_log"
        self.access_log = root / "logs" / "access_log"
        self.pid_file = root / "logs" / "prefork-wasm.pid"
        self.stdout_log = root / "stdout"
        self.stderr_log = root / "stderr"
        self.write_config(body, start_servers, log_level)
        self.process: Process | None = None

    def write_config(self, body: str, start_servers: int = 2, log_level: str = "info") -> None:
        self.conf.write_text(
            f"""Define EXAMPLES {EXAMPLES}
Define MODULES {MODULES}
Listen {HOST}:{self.port}
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
        return serve_command(self.conf, *args)

    def start(self, wait: bool = True, command: list[str] | None = None, **popen: Any) -> Server:
        """`command` (default: serve the config) and `popen` (env, pass_fds, start_new_session)
        let a caller play the part of what starts the server, as systemd does."""
        self.process = Process(command or self.command(), self.stdout_log, errors=self.stderr_log,
                               logs=(self.error_log,), name="prefork-wasm", cwd=self.root, **popen)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> float:
        """Until it answers (see ready); the seconds since the start."""
        return self.running.wait_until(self.ready, timeout, "the server to answer")

    def ready(self) -> bool:
        """The pid file names our master (written just before the first fork: the modules are
        compiled) and a request is answered."""
        try:
            if self.pid_file.read_text().strip() != str(self.pid):
                return False
            with socket.create_connection((HOST, self.port), timeout=5) as sock:
                sock.sendall(b"OPTIONS * HTTP/1.1\r\nHost: ready\r\nConnection: close\r\n\r\n")
                return sock.recv(16).startswith(b"HTTP/1.1 ")
        except OSError:
            return False

    @property
    def running(self) -> Process:
        assert self.process is not None, "the server was not started: call start() first"
        return self.process

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.process.popen if self.process else None

    @property
    def pid(self) -> int:
        return self.running.pid

    @property
    def seen_pids(self) -> set[int]:
        """Every child of the master seen so far (by worker_pids or stop)."""
        return set(self.process.seen) if self.process else set()

    def worker_pids(self) -> set[int]:
        return {p.pid for p in self.running.children()}

    def wait_for_workers(self, ok: Callable[[set[int]], bool], timeout: float = 10.0, what: str = "") -> set[int]:
        """Poll until one snapshot of the worker pids satisfies `ok`, and return that snapshot.

        Every condition is checked on the same listing: two listings could straddle a reap
        and a fork and describe a pool that never existed.
        """
        snapshot: set[int] = set()

        def holds() -> bool:
            nonlocal snapshot
            snapshot = self.worker_pids()
            return ok(snapshot)

        wait_for(holds, timeout=timeout, what=what)
        return snapshot

    def log(self) -> str:
        return self.error_log.read_text() if self.error_log.exists() else ""

    def stderr_text(self) -> str:
        return self.stderr_log.read_text() if self.stderr_log.exists() else ""

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> tuple[int, dict[str, str], bytes, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
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
        with socket.create_connection((HOST, self.port), timeout=10) as sock:
            sock.sendall(head)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        status_line, _, body = data.partition(b"\r\n\r\n")
        return int(status_line.split()[1]), body

    def signal(self, signum: int) -> None:
        self.running.popen.send_signal(signum)

    def stop(self, grace: float = STOP_GRACE) -> int | None:
        """Stop it (see Process.stop); its exit status, or None if it was never started."""
        return self.process.stop(grace).exit_status if self.process else None
