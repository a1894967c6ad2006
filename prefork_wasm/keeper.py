"""A worker's keeper: a twin process that shares the worker's descriptor table, so that a worker
killed by a signal (SIGKILL by hand or by the OOM killer, the master's hard memory limit or
hung-worker check, a crash) does not take with it the connections it holds but is not serving.

A descriptor table lives as long as a process uses it. The keeper is made with
clone(CLONE_FILES) and sleeps in sigwait; when the worker dies the kernel wakes it
(PR_SET_PDEATHSIG) and the connections are still open. It passes each one the worker marked in
the `Board` to the hand-over socket (handover.py), as a leaving worker passes its own: the
workers that stay, or the one that replaces the dead worker, adopt them. A connection is marked
while nothing of its next request has been read: the event loop reads a request only when it
serves it (eventloop.py), so requests sent meanwhile are still in the kernel's socket buffer and
the adopter reads them. The request the worker was serving, and a head read in part, die with
the keeper's exit.

A worker that leaves as asked ends its keeper first (`Keeper.stop`); one ended by an exception
out of its loop (a bug) does not, and its keeper passes its connections on as after a kill. A
dead worker's keeper passes nothing on once the server stops or drains (no worker would adopt).

Between its birth and the worker's death the keeper runs nothing but sigwait: a descriptor it
closed would be closed for the worker too. It is born before the worker starts a thread, a
copy-on-write twin of a young process.
"""

from __future__ import annotations

import mmap
import os
import platform
import resource
import signal
import socket
import time
from collections.abc import Callable

import setproctitle

from . import handover, prctl, privileges
from .handover import Parcel
from .held import KEEPALIVE
from .libc import LIBC

# clone(2)'s number and flag; the other arguments are 0 (a fork-like child: its own stack copy).
_SYS_CLONE = {"x86_64": 56, "aarch64": 220}.get(platform.machine())
_CLONE_FILES = 0x400
# The keeper is woken by this (its parent's death) and ended by SIGKILL.
WAKE = signal.SIGUSR2
# Descriptors above this are never passed on (a board byte each).
MAX_DESCRIPTORS = 1 << 20
# How long a keeper waits for room in the hand-over socket.
SEND_SECONDS = 2.0


# The User's uid, gid and groups (privileges.credentials).
Credentials = tuple[int, int, list[int]]


class Board:
    """What the keeper needs of each descriptor, in memory it shares (MAP_SHARED): a byte, 1 for
    a connection it may pass on, and the requests served on it (MaxKeepAliveRequests holds
    across the pass). Only the worker's event loop writes it."""

    def __init__(self) -> None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        size = MAX_DESCRIPTORS if soft == resource.RLIM_INFINITY else min(soft, MAX_DESCRIPTORS)
        self._map = mmap.mmap(-1, max(size, 1))  # anonymous, shared: untouched pages cost nothing
        self._served = memoryview(mmap.mmap(-1, max(size, 1) * 4)).cast("I")

    def mark(self, fd: int, served: int | None) -> None:
        """`served`: the requests answered on a connection the keeper may pass on; None for
        one it may not."""
        if fd < len(self._map):
            self._map[fd] = served is not None
            if served is not None:
                self._served[fd] = min(served, 0xFFFFFFFF)

    def movable(self) -> list[tuple[int, int]]:
        """(descriptor, requests served) of each connection the keeper may pass on."""
        found, start, data = [], 0, self._map
        while (fd := data.find(b"\x01", start)) >= 0:
            found.append((fd, self._served[fd]))
            start = fd + 1
        return found


class Keeper:
    """The worker's side: its keeper's pid, and how to end it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    @classmethod
    def start(
        cls,
        board: Board,
        send_end: socket.socket,
        keep_alive_timeout: float,
        may_pass: Callable[[], bool],
        credentials: Credentials | None,
    ) -> Keeper | None:
        """Fork the keeper (None where clone's number is not known here). Call it before the
        process starts a thread. `may_pass` says, once the worker is dead, whether anyone will
        adopt its connections; `credentials` are the User's, which the keeper takes at once."""
        if _SYS_CLONE is None:
            return None
        parent = os.getpid()
        title = f"prefork-wasm: keeper of worker {parent}"
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {WAKE})  # the keeper's from birth
        pid = LIBC.syscall(_SYS_CLONE, _CLONE_FILES | signal.SIGCHLD, 0, 0, 0, 0)
        if pid == 0:
            _keep(parent, title, credentials, board, send_end, keep_alive_timeout, may_pass)  # never returns
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        if pid < 0:
            return None
        return cls(pid)

    def exited(self) -> int | None:
        """Its exit code (negative: the signal that ended it), reaped here; None while it lives."""
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return 0  # reaped already
        return os.waitstatus_to_exitcode(status) if pid else None

    def stop(self) -> None:
        """The worker leaves as asked: its keeper goes first, passing nothing on."""
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _keep(
    parent: int,
    title: str,
    credentials: Credentials | None,
    board: Board,
    send_end: socket.socket,
    keep_alive_timeout: float,
    may_pass: Callable[[], bool],
) -> None:
    """The keeper's life: wait for the worker's death, pass its connections on, exit. Only
    system calls that open no descriptor run before the worker is dead."""
    try:
        if credentials is not None:  # the User's, found before the fork
            privileges.become(*credentials)
        setproctitle.setproctitle(title)
        prctl.die_with_parent(WAKE)
        if os.getppid() == parent:  # else it died before PDEATHSIG was set
            signal.sigwait({WAKE})
        if may_pass():
            pass_on(board, send_end, keep_alive_timeout)
    finally:
        os._exit(0)  # no finalizer: they would close what the worker's objects held


def pass_on(board: Board, send_end: socket.socket, keep_alive_timeout: float) -> int:
    """Send the marked connections to the hand-over socket; returns how many went."""
    now = time.monotonic()
    parcels, fds = [], []
    for fd, served in board.movable():
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            continue
        try:
            local, peer = sock.getsockname(), sock.getpeername()
        except OSError:
            continue  # reset by the client meanwhile: nothing to pass on
        finally:
            sock.detach()
        parcels.append(Parcel(peer[:2], local[1], local[0], served, KEEPALIVE, b"", (now + keep_alive_timeout,)))
        fds.append(fd)
    return handover.send(send_end, parcels, fds, now + SEND_SECONDS, handover.PER_MESSAGE)
