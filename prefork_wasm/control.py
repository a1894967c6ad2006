"""`-k start|stop|restart|graceful|graceful-stop`: Apache's control commands.

`start` detaches the master (double fork, new session) and waits until it is serving or has
failed; the others send the master named in the PidFile its signal. `restart` and `graceful`
then wait for the outcome, which the master writes beside its PidFile (`ReloadReport`): a new
generation refused (a module that does not compile, a port taken) is printed with its
FILE:LINE and the command fails, while the running generation serves on. With no master
running they start one, as Apache's do.

A detached master leaves the terminal: stdin becomes /dev/null, and so do stdout and stderr
unless a log writes there (`ErrorLog stderr`, `CustomLog /dev/stdout`) and they lead somewhere
that outlives the command: a pipe (a container runtime, a process supervisor), a socket (the
journal) or a file (as nginx keeps stderr for `error_log stderr`). A terminal or /dev/null is
left, and each log that would then go nowhere is warned about.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from .config import ServerConfig
from .logtargets import stream_of

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
# How long `-k graceful` and `-k restart` wait for the outcome (compiling a large module is slow).
RELOAD_WAIT = 300.0
RELOADS = ("restart", "graceful")


class PidFileError(Exception):
    pass


@dataclass(frozen=True)
class ReloadReport:
    """What the master says of its last restart, beside its PidFile, for `-k graceful|restart`."""

    pid: int
    reloads: int  # restarts ended (served or refused) since the master started
    generation: int  # the generation serving
    error: str = ""  # why the last restart was refused ('' when it serves)


def report_path(config: ServerConfig) -> Path:
    return config.pid_file.with_name(config.pid_file.name + ".reload")


def write_report(config: ServerConfig, report: ReloadReport) -> None:
    """Atomically, so that `-k` never reads half of it; a report that cannot be written costs
    only the wait of a `-k graceful`, never the server."""
    path = report_path(config)
    tmp = path.with_name(f".{path.name}.{report.pid}")
    try:
        tmp.write_text(json.dumps(asdict(report)))
        os.replace(tmp, path)
    except OSError:
        pass


def read_report(config: ServerConfig) -> ReloadReport | None:
    try:
        return ReloadReport(**json.loads(report_path(config).read_text()))
    except (OSError, ValueError, TypeError):
        return None


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
    """Signal the running master (PidFileError when none runs) and wait for what it did."""
    pid = running_master(config)
    before = read_report(config)
    seen = before.reloads if before is not None and before.pid == pid else 0
    os.kill(pid, SIGNALS[command])
    if command in RELOADS:
        return _reload_outcome(config, pid, seen)
    if command == "stop":
        deadline = time.monotonic() + STOP_WAIT
        while psutil.pid_exists(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if psutil.pid_exists(pid):
            print(f"prefork-wasm: pid {pid} is still stopping after {STOP_WAIT:g} s", file=sys.stderr)
            return 1
    return 0


def _reload_outcome(config: ServerConfig, pid: int, seen: int) -> int:
    """Wait for the master's report of the restart asked for (its `reloads` past `seen`): 0 when
    the new generation serves; 1, with the error's lines, when it was refused."""
    deadline = time.monotonic() + RELOAD_WAIT
    while time.monotonic() < deadline:
        report = read_report(config)
        if report is not None and report.pid == pid and report.reloads > seen:
            for line in report.error.splitlines():
                print(f"prefork-wasm: {line}", file=sys.stderr)
            return 1 if report.error else 0
        if not psutil.pid_exists(pid):
            print(f"prefork-wasm: the server (pid {pid}) exited during the restart; see its ErrorLog", file=sys.stderr)
            return 1
        time.sleep(0.05)
    print(
        f"prefork-wasm: no outcome of the restart after {RELOAD_WAIT:g} s (still compiling?); see the ErrorLog",
        file=sys.stderr,
    )
    return 1


def start_detached(run: Callable[[Callable[[], None]], int], config: ServerConfig) -> int:
    """Run the master in the background; return once it serves (0) or failed (1, with why)."""
    try:
        pid = running_master(config)
        print(f"prefork-wasm: already running (pid {pid})", file=sys.stderr)
        return 1
    except PidFileError:
        pass
    keep, warnings = detach_plan(stream_logs(config), {fd: destination(fd) for fd in (1, 2)})
    for warning in warnings:
        print(f"prefork-wasm: warning: {warning}", file=sys.stderr, flush=True)
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
    _detach_stdio(keep)

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


STREAM_NAMES = {1: "stdout", 2: "stderr"}


def stream_logs(config: ServerConfig) -> list[tuple[int, str]]:
    """(fd, 'FILE:LINE: Directive target') for each log that writes to stdout or stderr."""
    logs = [("ErrorLog", config.error_log, config.sources.get("error_log", ""))]
    logs += [("CustomLog", log.target, log.source) for log in config.custom_logs]
    found = []
    for directive, target, source in logs:
        fd = stream_of(target)
        if fd is not None:
            found.append((fd, f"{source + ': ' if source else ''}{directive} {target}"))
    return found


def destination(fd: int) -> str | None:
    """Why output to `fd` would be lost once this command has returned ('a terminal', '/dev/null',
    'closed'), or None when it leads somewhere that outlives it."""
    try:
        info = os.fstat(fd)
    except OSError:
        return "closed"
    if os.isatty(fd):
        return "a terminal"
    if stat.S_ISCHR(info.st_mode) and info.st_rdev == os.stat(os.devnull).st_rdev:
        return os.devnull
    return None


def detach_plan(logs: list[tuple[int, str]], destinations: dict[int, str | None]) -> tuple[set[int], list[str]]:
    """Which of fds 1 and 2 the detached master keeps (those a log writes to that lead somewhere),
    and a warning for each log that would go nowhere."""
    keep: set[int] = set()
    warnings = []
    for fd, log in logs:
        where = destinations.get(fd)
        if where is None:
            keep.add(fd)
            continue
        name = STREAM_NAMES[fd]
        warnings.append(
            f"{log}: the detached server leaves its {name}, which is {where}, so this log goes nowhere; "
            f"log to a file, start with {name} redirected to a file or pipe ({'2' if fd == 2 else ''}>>FILE), "
            f"or run in the foreground"
        )
    return keep, warnings


def _detach_stdio(keep: set[int]) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd not in keep:
            os.dup2(null, fd)
    os.close(null)
