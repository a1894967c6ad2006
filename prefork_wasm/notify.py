"""systemd's readiness protocol (`Type=notify`): state changes sent as datagrams to NOTIFY_SOCKET.

Only the master notifies. `Notifier.from_environment` takes NOTIFY_SOCKET out of the
environment, so neither workers nor the compile subprocess (nor anything they start) can
find it, and each message goes out on a socket opened and closed for it, so no fd of it is
ever inherited. Building a message is pure; `Notifier.send` is the only I/O.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import MutableMapping


def message(*, ready: bool = False, reloading: bool = False, stopping: bool = False,
            status: str | None = None, mainpid: int | None = None, monotonic_usec: int | None = None) -> bytes:
    """One sd_notify datagram: NAME=value lines. STATUS= is one line, so line breaks in it become spaces."""
    lines = []
    if mainpid is not None:
        lines.append(f"MAINPID={mainpid}")
    if ready:
        lines.append("READY=1")
    if reloading:
        lines.append("RELOADING=1")
    if monotonic_usec is not None:
        lines.append(f"MONOTONIC_USEC={monotonic_usec}")
    if stopping:
        lines.append("STOPPING=1")
    if status is not None:
        lines.append("STATUS=" + " ".join(status.split()))
    return "".join(line + "\n" for line in lines).encode("utf-8", "backslashreplace")


def address(value: str) -> str | bytes:
    """NOTIFY_SOCKET as an AF_UNIX address: a path, or '@name' for the abstract namespace
    (ValueError for anything else, such as systemd's vsock: addresses)."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    raise ValueError(f"NOTIFY_SOCKET={value!r} is neither a path nor an abstract '@name'; not notifying")


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, which RELOADING=1 carries (systemd's Type=notify-reload wants it)."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends state changes to systemd; a no-op when the server was not started with NOTIFY_SOCKET."""

    def __init__(self, target: str | bytes | None, main_pid: int) -> None:
        self.target = target
        self.main_pid = main_pid  # the pid systemd started; a detached master differs from it
        self.problem: str | None = None  # why notifying is off, for the error log

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        value = env.pop("NOTIFY_SOCKET", None)
        notifier = cls(None, os.getpid())
        if value:
            try:
                notifier.target = address(value)
            except ValueError as e:
                notifier.problem = str(e)
        return notifier

    @property
    def enabled(self) -> bool:
        return self.target is not None

    def follow(self) -> None:
        """After `-k start`: the detached master names itself the main pid before the process
        systemd started exits, so systemd follows it (the unit then needs NotifyAccess=all)."""
        pid = os.getpid()
        if pid != self.main_pid:
            self.send(message(mainpid=pid, status="starting the first generation"))

    def ready(self, status: str) -> None:
        self.send(message(ready=True, status=status))

    def reloading(self, status: str) -> None:
        self.send(message(reloading=True, monotonic_usec=monotonic_usec(), status=status))

    def stopping(self, status: str) -> None:
        self.send(message(stopping=True, status=status))

    def status(self, status: str) -> None:
        self.send(message(status=status))

    def send(self, data: bytes) -> None:
        if self.target is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(data, self.target)
        except OSError as e:  # systemd gone or the socket not ours: serving matters more
            self.problem = f"cannot notify NOTIFY_SOCKET: {e.strerror or e}"
