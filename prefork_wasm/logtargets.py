"""Where log lines go: a file, the process's stdout or stderr, a piped log program, or syslog.

Every record is one `os.write` (one `syslog` call), so lines from the master and all workers
interleave whole without a lock: a file is opened with O_APPEND, and a pipe takes a write of up
to PIPE_BUF bytes at once. The master opens a generation's targets before the generation
replaces the one serving, so a target that cannot be opened fails the restart, not the server.

A piped log (`"|program args"`) is Apache's: the master starts the program with the read end of
a pipe as its stdin and keeps both ends, so that the workers' writes wait in the pipe while the
master starts the program again after it exited (as Apache does, at most once a second).
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import syslog
import time
from collections.abc import Mapping

# Log targets that are the process's own stdout or stderr. The /dev and /proc spellings
# (Docker's habit) are written to the fd too, not opened: opening them fails when the stream is
# a socket (systemd's journal), and a worker's fds 1 and 2 are its guests' (see LogFile.moved).
_STREAMS = {
    "stderr": 2, "stdout": 1,
    "/dev/stderr": 2, "/dev/stdout": 1,
    "/dev/fd/2": 2, "/dev/fd/1": 1,
    "/proc/self/fd/2": 2, "/proc/self/fd/1": 1,
}

# syslog's facilities by the names ErrorLog syslog:FACILITY takes (Apache's list), as <syslog.h>
# numbers them (Python's syslog module lacks some of the names).
FACILITIES = {
    **{
        name: code << 3
        for code, name in enumerate(
            ["kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp"]
        )
    },
    **{f"local{n}": (16 + n) << 3 for n in range(8)},
}
SYSLOG_TAG = "prefork-wasm"
# How soon a piped log program that exited is started again: one that fails at once must not
# have the master spawn it in a loop.
RESPAWN_INTERVAL = 1.0


def stream_of(target: str) -> int | None:
    """1 or 2 when a log target is this process's stdout or stderr, else None."""
    return _STREAMS.get(target)


def make_parent(path: str | os.PathLike[str]) -> None:
    """Create the folder a log or pid file goes into; a file in its way is 'Not a directory'."""
    folder = os.path.dirname(path) or "."
    try:
        os.makedirs(folder, exist_ok=True)
    except FileExistsError:  # say what is wrong, not "File exists"
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), folder) from None


def is_piped(target: str) -> bool:
    return target.startswith("|")


def piped_argv(target: str) -> list[str]:
    """The program a piped log target runs: '|$command' through /bin/sh -c, as Apache does;
    '|program args' and '||program args' without a shell, split as a shell would split them.
    ValueError when there is no program."""
    command = target[2:] if target.startswith("||") else target[1:]
    if command.startswith("$"):
        argv = ["/bin/sh", "-c", command[1:].strip()]
        if not argv[2]:
            raise ValueError(f"no command after '|$' in {target!r}")
        return argv
    argv = shlex.split(command)
    if not argv:
        raise ValueError(f"no program after '|' in {target!r}; write e.g. \"|/usr/bin/rotatelogs /var/log/x 86400\"")
    return argv


def check_piped(target: str) -> None:
    """What a config check can tell of a piped log target: its program exists and may be run.
    ValueError with the fix otherwise."""
    program = piped_argv(target)[0]
    if shutil.which(program) is None:
        raise ValueError(
            f"piped log program {program!r} is not found or not executable"
            + ("" if "/" in program else " on PATH")
            + "; give its full path (or '|$ command' to run it through the shell)"
        )


def syslog_facility(target: str) -> tuple[int, str] | None:
    """The facility and tag of an `ErrorLog syslog[:facility[:tag]]` target, None for another
    target; ValueError for an unknown facility. Apache's default facility is local7."""
    if target != "syslog" and not target.startswith("syslog:"):
        return None
    _, _, rest = target.partition(":")
    name, _, tag = rest.partition(":")
    name = name.lower() or "local7"
    if name not in FACILITIES:
        raise ValueError(f"unknown syslog facility {name!r}; expected one of {', '.join(FACILITIES)}")
    return FACILITIES[name], tag or SYSLOG_TAG


class LogFile:
    """An append-only log destination: a path, or 'stderr'/'stdout'."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.fd = self._open()

    def _open(self) -> int:
        if self.target in _STREAMS:
            return _STREAMS[self.target]
        make_parent(self.target)
        return os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def moved(self, fds: Mapping[int, int]) -> None:
        """Follow the process's stdout or stderr to the fd it was moved to (a worker gives fds 1
        and 2 to its guests)."""
        if self.target in _STREAMS:
            self.fd = fds.get(self.fd, self.fd)

    def write(self, data: bytes) -> None:
        try:
            os.write(self.fd, data)
        except OSError:
            pass  # a full disk must not take a request down with it

    def entry(self, priority: int, stamp: str, text: str) -> None:
        """One error log entry: `stamp` is its time in Apache's layout, `priority` its syslog
        level (which only syslog uses)."""
        self.write(f"[{stamp}] {text}\n".encode("utf-8", "backslashreplace"))

    def close(self) -> None:
        if self.target not in _STREAMS:
            os.close(self.fd)


class PipedLog(LogFile):
    """A log written into a pipe that a program reads (rotatelogs, logger, a shipper)."""

    def __init__(self, target: str) -> None:
        self.argv = piped_argv(target)
        self.pid: int | None = None
        self.started = 0.0
        super().__init__(target)

    def _open(self) -> int:
        self._read, write = os.pipe2(os.O_CLOEXEC)  # neither end may reach another program
        try:
            self.start()
        except OSError:
            os.close(self._read)
            os.close(write)
            raise
        return write

    def start(self) -> None:
        """Start the program on the pipe (again); OSError when it cannot be."""
        self.started = time.monotonic()
        self.pid = None
        self.pid = os.posix_spawnp(self.argv[0], self.argv, os.environ, file_actions=[
            (os.POSIX_SPAWN_DUP2, self._read, 0),
        ])

    def due(self) -> bool:
        """Its program has exited and may be started again (RESPAWN_INTERVAL after the last)."""
        return self.pid is None and time.monotonic() - self.started >= RESPAWN_INTERVAL

    def moved(self, fds: Mapping[int, int]) -> None:
        pass

    def close(self) -> None:
        """Close this process's ends: the program reads on until the last writer is gone (the
        workers of its generation), then sees the end of its input and exits."""
        os.close(self.fd)
        os.close(self._read)


class SyslogLog(LogFile):
    """`ErrorLog syslog[:facility[:tag]]`: entries go to the system logger, which stamps them."""

    def __init__(self, target: str) -> None:
        found = syslog_facility(target)
        assert found is not None
        self.facility, self.tag = found
        super().__init__(target)

    def _open(self) -> int:
        syslog.openlog(self.tag, syslog.LOG_PID | syslog.LOG_NDELAY | syslog.LOG_CONS, self.facility)
        return -1

    def moved(self, fds: Mapping[int, int]) -> None:
        pass

    def write(self, data: bytes) -> None:
        syslog.syslog(self.facility | syslog.LOG_INFO, data.decode("utf-8", "backslashreplace").rstrip("\n"))

    def entry(self, priority: int, stamp: str, text: str) -> None:
        syslog.syslog(self.facility | priority, text)

    def close(self) -> None:
        pass


def open_target(target: str) -> LogFile:
    """The destination a log target names; OSError when it cannot be opened (or started)."""
    if is_piped(target):
        return PipedLog(target)
    if syslog_facility(target) is not None:
        return SyslogLog(target)
    return LogFile(target)
