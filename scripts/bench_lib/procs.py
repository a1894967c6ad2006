"""Processes the benchmark starts: each is tracked by pid and stopped by pid, never by name."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

# Every Proc still running; stop_all() (from a finally/atexit/signal path) ends them.
_RUNNING: list[Proc] = []


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the kernel picks it; a tiny race until the server binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A server we started: a master process plus the children it forks."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log
        self._log = open(log, "ab")
        # Own session: Ctrl-C in the terminal reaches only us, and we stop the server ourselves.
        self.popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
        )
        self.pid = self.popen.pid
        self.started = time.monotonic()
        _RUNNING.append(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the master (it stops its workers), then SIGKILL whatever of ours is left."""
        if self in _RUNNING:
            _RUNNING.remove(self)
        kids = self.children()  # remembered now: after the master dies they are re-parented
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGTERM)
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(5)
            except ProcessLookupError:
                pass
        _, still = psutil.wait_procs(kids, timeout=grace)
        for p in still:
            try:
                p.kill()  # psutil checks the pid still names the same process (create time)
            except psutil.NoSuchProcess:
                pass
        self._log.close()

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def stop_all() -> None:
    for proc in list(reversed(_RUNNING)):
        try:
            proc.stop(grace=5.0)
        except Exception as e:  # keep stopping the others
            print(f"bench: could not stop {proc.name} (pid {proc.pid}): {e}")


def http_get(port: int, path: str, timeout: float = 5.0, close: bool = True) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"} if close else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_http(proc: Proc, port: int, path: str, timeout: float) -> float:
    """Poll until GET path answers 200; returns seconds since the process was started."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            status, _ = http_get(port, path, timeout=2.0)
            if status == 200:
                return time.monotonic() - proc.started
            last = f"HTTP {status}"
        except OSError as e:
            last = str(e)
        time.sleep(0.02)
    raise RuntimeError(f"{proc.name} did not answer {path} within {timeout:.0f}s ({last}):\n{proc.tail()}")


@contextlib.contextmanager
def run_folder(keep: bool, log: Callable[[str], None]) -> Iterator[Path]:
    """A temporary folder for configs and logs. On the way out every server started is
    stopped, and the folder is kept when something failed (or with `keep`)."""
    run_dir = Path(tempfile.mkdtemp(prefix="prefork-wasm-bench-"))
    run_dir.chmod(0o755)
    log(f"temp folder {run_dir}")
    ok = False
    try:
        yield run_dir
        ok = True
    finally:
        stop_all()
        if not ok or keep:
            log(f"configs and logs kept in {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
