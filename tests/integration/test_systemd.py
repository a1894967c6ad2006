"""systemd's part played by the test: a notify socket (Type=notify) and passed listening
sockets (socket activation), against the real server."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import struct
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from harness import HELLO, Server, free_port, wait_for

# Starts a command with the given fds as 3, 4, ... and LISTEN_FDS/LISTEN_PID set for its own
# pid, as systemd does: `python -c WRAPPER FD... -- COMMAND...`.
WRAPPER = """
import os, sys
split = sys.argv.index("--")
fds, command = [int(fd) for fd in sys.argv[1:split]], sys.argv[split + 1:]
for i, fd in enumerate(fds):
    os.dup2(fd, 3 + i)
for fd in fds:
    if fd >= 3 + len(fds):
        os.close(fd)
os.environ.update(LISTEN_FDS=str(len(fds)), LISTEN_PID=str(os.getpid()))
os.execv(command[0], command)
"""


class NotifySocket:
    """systemd's end of NOTIFY_SOCKET: datagrams with their sender's pid (SCM_CREDENTIALS)."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.messages: list[tuple[int, dict[str, str]]] = []

    def receive(self) -> list[tuple[int, dict[str, str]]]:
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except BlockingIOError:
                return self.messages
            pid = next(
                struct.unpack("iII", cdata)[0] for level, kind, cdata in ancillary
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
            )
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append((pid, fields))

    def wait(self, key: str, after: int = 0, what: str = "") -> dict[str, str]:
        """The first message from index `after` on that carries `key`."""
        def found() -> dict[str, str] | None:
            return next((m for _, m in self.receive()[after:] if key in m), None)
        message = wait_for(found, timeout=60, what=what or f"{key} from the server")
        assert isinstance(message, dict)
        return message

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify() -> Iterator[Callable[[str | bytes], NotifySocket]]:
    sockets: list[NotifySocket] = []

    def make(address: str | bytes) -> NotifySocket:
        sockets.append(NotifySocket(address))
        return sockets[-1]

    yield make
    for sock in sockets:
        sock.close()


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_notify_ready_reloading_stopping_from_the_master_only(
    make_server: Callable[..., Server], notify: Callable[[str | bytes], NotifySocket],
) -> None:
    name = f"prefork-wasm-test-{uuid.uuid4().hex}"
    systemd = notify(b"\0" + name.encode())  # an abstract address, as systemd's own is
    server = make_server(HELLO, start=False)
    server.start(env={**os.environ, "NOTIFY_SOCKET": f"@{name}"})
    ready = systemd.wait("READY", what="READY=1 once the first generation serves")
    assert ready == {"READY": "1", "STATUS": "generation 0 serving, 2 workers"}
    assert server.get("/hello")[0] == 200

    for signum, generation in ((signal.SIGUSR1, 1), (signal.SIGHUP, 2)):
        seen = len(systemd.receive())
        before = monotonic_usec()
        server.signal(signum)
        reloading = systemd.wait("RELOADING", after=seen)
        assert before <= int(reloading["MONOTONIC_USEC"]) <= monotonic_usec()
        assert f"preparing generation {generation}" in reloading["STATUS"]
        ready = systemd.wait("READY", after=seen)
        assert ready["STATUS"] == f"generation {generation} serving, 2 workers"
        assert server.get("/hello")[0] == 200

    # A restart that fails: READY=1 again (the old generation serves), STATUS says why.
    good = server.conf.read_text()
    server.conf.write_text(good + "NoSuchDirective 1\n")
    seen = len(systemd.receive())
    server.signal(signal.SIGUSR1)
    systemd.wait("RELOADING", after=seen)
    ready = systemd.wait("READY", after=seen)
    assert ready["STATUS"].startswith("restart failed, generation 2 still serving: ")
    assert "NoSuchDirective" in ready["STATUS"]
    server.conf.write_text(good)

    workers = server.worker_pids()
    seen = len(systemd.receive())
    assert server.stop() == 0
    stopping = systemd.wait("STOPPING", after=seen)
    assert stopping == {"STOPPING": "1", "STATUS": "stopping (SIGTERM)"}
    senders = {pid for pid, _ in systemd.receive()}
    assert senders == {server.pid}, f"only the master notifies (workers were {workers})"


def test_k_start_names_the_detached_master_and_graceful_stop_says_stopping(
    make_server: Callable[..., Server], notify: Callable[[str | bytes], NotifySocket], tmp_path: Path,
) -> None:
    systemd = notify(str(tmp_path / "notify"))  # a path this time
    server = make_server(HELLO, start=False)
    launcher = server.start(wait=False, command=server.command("-k", "start"),
                            env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")}).proc
    assert launcher is not None
    assert launcher.wait(timeout=180) == 0, server.stderr_text()
    master = int(server.pid_file.read_text())
    try:
        follow = systemd.wait("MAINPID", what="MAINPID= from the detached master")
        assert follow["MAINPID"] == str(master) != str(launcher.pid)
        systemd.wait("READY")
        assert {pid for pid, _ in systemd.receive()} == {master}
        os.kill(master, signal.SIGWINCH)
        stopping = systemd.wait("STOPPING")
        assert stopping["STATUS"].startswith("graceful stop: ")
        wait_for(lambda: not psutil.pid_exists(master), what="the master to finish its graceful stop")
    finally:
        if psutil.pid_exists(master):
            for child in psutil.Process(master).children():
                child.kill()
            os.kill(master, signal.SIGKILL)


def listening(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", port))
    sock.listen(16)
    return sock


def activated(server: Server, *socks: socket.socket) -> list[str]:
    """The command that hands `socks` to the server as fds 3, 4, ... with LISTEN_PID its own."""
    fds = [str(s.fileno()) for s in socks]
    return [sys.executable, "-c", WRAPPER, *fds, "--", *server.command()]


def socket_inode(sock: socket.socket) -> str:
    return f"socket:[{os.fstat(sock.fileno()).st_ino}]"


def holds(pid: int, link: str) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == link for fd in os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:
        return False


def test_serves_on_a_passed_socket_across_a_graceful_restart(
    make_server: Callable[..., Server], notify: Callable[[str | bytes], NotifySocket], tmp_path: Path,
) -> None:
    sock = listening()
    own = free_port()  # a Listen line with no passed socket: the server binds it
    server = make_server(HELLO, start=False)
    server.port = sock.getsockname()[1]  # the harness's Listen line names the test's socket
    server.write_config(HELLO + f"Listen 127.0.0.1:{own}\n")
    systemd = notify(str(tmp_path / "notify"))
    server.start(command=activated(server, sock), pass_fds=(sock.fileno(),),
                 env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")})
    # Had the server bound the port itself, that bind would have failed: the test holds it.
    link = socket_inode(sock)
    assert holds(server.pid, link)
    assert all(holds(pid, link) for pid in server.wait_for_workers(lambda p: len(p) == 2))
    assert f"listening on http://127.0.0.1:{server.port}/ (socket passed by systemd: fd 3, bound to" in server.log()
    assert f"listening on http://127.0.0.1:{own}/\n" in server.log()
    systemd.wait("READY")
    sock.close()  # from now on only the server holds it
    assert server.get("/hello")[0] == 200
    conn = http.client.HTTPConnection("127.0.0.1", own, timeout=30)
    conn.request("GET", "/hello")
    assert conn.getresponse().status == 200
    conn.close()

    old = server.worker_pids()
    server.signal(signal.SIGUSR1)
    wait_for(lambda: "generation 1 configured" in server.log(), what="the graceful restart")
    new = server.wait_for_workers(lambda p: len(p) == 2 and not p & old, what="generation 1's workers")
    assert all(holds(pid, link) for pid in new)
    assert server.get("/hello?after")[0] == 200

    # A config whose Listen lines no longer name the passed socket fails the restart.
    good = server.conf.read_text()
    server.conf.write_text(good.replace(f"Listen 127.0.0.1:{server.port}", f"Listen 127.0.0.1:{server.port + 1}"))
    server.signal(signal.SIGUSR1)
    wait_for(lambda: "matches no Listen line" in server.log(), what="the refused restart")
    assert "restart failed, still serving generation 1" in server.log()
    assert server.get("/hello?still")[0] == 200


def test_a_passed_socket_no_listen_line_names_stops_the_start(make_server: Callable[..., Server]) -> None:
    sock = listening()
    server = make_server(HELLO, start=False)
    other = sock.getsockname()[1]
    server.start(wait=False, command=activated(server, sock), pass_fds=(sock.fileno(),))
    assert server.proc is not None and server.proc.wait(timeout=60) == 1
    assert (
        f"prefork-wasm: passed socket fd 3, bound to 127.0.0.1:{other} matches no Listen line: "
        f"add `Listen 127.0.0.1:{other}`, or remove that ListenStream= from the socket unit"
    ) in server.stderr_text()
    sock.close()
