"""`-k start|stop|restart|graceful|graceful-stop`: Apache's control commands.

`start` detaches the master (double fork, new session) and waits until it is serving or has
failed; the others send the master named in the PidFile its signal.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from collections.abc import Callable

import psutil

from .config import ServerConfig

# The commands that signal a running master; `start` is the one that does not.
SIGNALS = {
    "stop": signal.SIGTERM,
    "restart": signal.SIGHUP,
    "graceful": signal.SIGUSR1,
    "graceful-stop": signal.SIGWINCH,
}

COMMANDS = ["start", *SIGNALS]

# How long `-k stop` waits for the master to be gone before it reports.
STOP_WAIT = 30.0


class PidFileError(Exception):
    pass


def running_master(config: ServerConfig) -> int:
    """The pid in PidFile, if that process is alive and is ours; PidFileError otherwise."""
    path = config.pid_file
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise PidFileError(f"PidFile {path} does not exist: is the server running?") from None
    if not text.isdigit():
        raise PidFileError(f"PidFile {path} does not hold a pid ({text[:20]!r}): remove it")
    pid = int(text)
    try:
        cmdline = " ".join(psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        raise PidFileError(f"stale PidFile {path}: pid {pid} is not running (remove the file)") from None
    if "prefork-wasm" not in cmdline and "prefork_wasm" not in cmdline:
        raise PidFileError(f"stale PidFile {path}: pid {pid} is not prefork-wasm ({cmdline[:60]!r})")
    return pid


def signal_master(config: ServerConfig, command: str) -> int:
    try:
        pid = running_master(config)
    except PidFileError as e:
        print(f"prefork-wasm: {e}", file=sys.stderr)
        return 1
    os.kill(pid, SIGNALS[command])
    if command == "stop":
        deadline = time.monotonic() + STOP_WAIT
        while psutil.pid_exists(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if psutil.pid_exists(pid):
            print(f"prefork-wasm: pid {pid} is still stopping after {STOP_WAIT:g} s", file=sys.stderr)
            return 1
    return 0


def start_detached(run: Callable[[Callable[[], None]], int], config: ServerConfig) -> int:
    """Run the master in the background; return once it serves (0) or failed (1, with why)."""
    try:
        pid = running_master(config)
        print(f"prefork-wasm: already running (pid {pid})", file=sys.stderr)
        return 1
    except PidFileError:
        pass
    read_fd, write_fd = os.pipe()
    if os.fork() > 0:
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            report = pipe.read().decode(errors="replace")
        if report == "ok":
            return 0
        print(f"prefork-wasm: {report or 'the server exited during start-up'}", file=sys.stderr)
        return 1
    # First child: a new session, then fork again so the master is no session leader.
    os.close(read_fd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    _detach_stdio()

    def ready() -> None:
        os.write(write_fd, b"ok")
        os.close(write_fd)

    try:
        status = run(ready)
    except Exception as e:  # reported to the waiting parent, which prints it
        try:
            os.write(write_fd, str(e).encode() or traceback.format_exc().encode())
        except OSError:
            pass
        status = 1
    os._exit(status)


def _detach_stdio() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
