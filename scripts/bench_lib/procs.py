"""The benchmark's processes. Starting, probing and stopping are the harness's (tests/harness.py,
shared with the test suite and the soak); here every server the benchmark starts is registered,
so that run_folder's way out stops each one by pid, also on Ctrl-C or an error."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

from harness import REPO, Process, http_status, serve_command

# The server runs from prefork-wasm's own virtualenv; the driver runs from the benchmark's.
SERVER_PYTHON = REPO / ".venv" / "bin" / "python"

# Every Process started; stop_all() (from run_folder's way out) ends those still running.
_STARTED: list[Process] = []


def start(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> Process:
    """Start a server (stdout and stderr to `log`) in a session of its own: Ctrl-C in the
    terminal reaches only the driver, which stops the server itself."""
    proc = Process(argv, log, name=name, env={**os.environ, **(env or {})}, start_new_session=True)
    _STARTED.append(proc)
    return proc


def start_prefork_wasm(name: str, conf: Path, log: Path) -> Process:
    return start(name, serve_command(conf, python=SERVER_PYTHON), log)


def stop_all() -> None:
    while _STARTED:
        proc = _STARTED.pop()
        try:
            proc.stop(grace=5.0)  # a no-op for one already stopped
        except Exception as e:  # keep stopping the others
            print(f"bench: could not stop {proc.name} (pid {proc.pid}): {e}")


def wait_http(proc: Process, port: int, path: str, timeout: float) -> float:
    """Until GET `path` answers 200; the seconds since the process was started."""
    return proc.wait_until(lambda: http_status(port, path) == 200, timeout, f"{proc.name} to answer {path} with 200")


def is_idle_worker(p: psutil.Process) -> bool:
    """A prefork-wasm worker waiting for a connection (its process title says so)."""
    try:
        return "worker [idle]" in " ".join(p.cmdline())
    except psutil.NoSuchProcess:
        return False


def idle_workers(proc: Process, n: int, timeout: float = 120) -> list[psutil.Process]:
    """The master's children, once there are `n` of them and every one is an idle worker."""
    found: list[psutil.Process] = []

    def all_idle() -> bool:
        nonlocal found
        found = proc.children()
        return len(found) == n and all(is_idle_worker(k) for k in found)

    proc.wait_until(all_idle, timeout, f"{proc.name}: {n} idle workers", interval=0.1)
    return found


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
