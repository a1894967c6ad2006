"""Logs to stdout and stderr under a detached start (`-k start`), as containers and process
supervisors collect them: nothing lost, and a warning when a log would go nowhere."""

from __future__ import annotations

import os
import pty
import select
import signal
import socket
import subprocess
from collections.abc import Callable

import psutil

from harness import HELLO, Server, wait_for

TRAP = """
<Location /trap>
    SetHandler wasm-handler
    WasmModule ${MODULES}/trap.wasm
</Location>
"""

# Later lines win over the harness's ErrorLog; CustomLog adds a second access log.
TO_STREAMS = HELLO + TRAP + "ErrorLog stderr\nCustomLog /dev/stdout \"%r %>s\"\n"


def k(server: Server, command: str, **popen: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(server.command("-k", command), cwd=server.root, timeout=180, **popen)  # type: ignore[call-overload, no-any-return]


def kill_master(pid: int) -> None:
    if psutil.pid_exists(pid):
        for child in psutil.Process(pid).children():
            child.kill()
        os.kill(pid, signal.SIGKILL)


def test_detached_server_logs_to_the_stdout_and_stderr_it_was_given(make_server: Callable[..., Server]) -> None:
    """stdout a stream socket (as systemd's journal gives), stderr a file (`2>>FILE`): the
    master's and the workers' lines all arrive there, after the command has returned."""
    server = make_server(TO_STREAMS, start=False)
    journal, stdout = socket.socketpair()
    stderr_path = server.root / "stderr.log"
    with open(stderr_path, "ab") as stderr:
        started = k(server, "start", stdout=stdout.fileno(), stderr=stderr)
    stdout.close()
    assert started.returncode == 0, stderr_path.read_text()
    master = int(server.pid_file.read_text())
    try:
        assert "warning" not in stderr_path.read_text()
        wait_for(lambda: "resuming normal operations" in stderr_path.read_text(), what="the start-up notice")
        for n in range(20):
            assert server.get(f"/hello?{n}")[0] == 200
        assert server.get("/trap")[0] == 500
        received = b""

        def access_lines() -> bool:
            nonlocal received
            while select.select([journal], [], [], 0)[0]:
                received += journal.recv(65536)
            return received.count(b"\n") >= 21

        wait_for(access_lines, what="21 access lines on stdout")
        # Each line once (two workers log in the order they finish, not the order asked).
        assert sorted(received.decode().splitlines()) == sorted(
            [f"GET /hello?{n} HTTP/1.1 200" for n in range(20)] + ["GET /trap HTTP/1.1 500"]
        )
        # A worker's error line (the trap) reaches stderr as well as the master's.
        wait_for(lambda: "/trap" in stderr_path.read_text(), what="the worker's error line on stderr")
        assert k(server, "stop").returncode == 0
        log = stderr_path.read_text()
        assert "caught SIGTERM, shutting down" in log and "shut down" in log.splitlines()[-1]
    finally:
        journal.close()
        kill_master(master)


def test_k_start_warns_when_the_error_log_would_go_to_a_terminal_it_leaves(make_server: Callable[..., Server]) -> None:
    server = make_server(TO_STREAMS, start=False)
    terminal, tty = pty.openpty()
    with open(server.root / "stdout.log", "ab") as stdout:
        started = k(server, "start", stdout=stdout, stderr=tty)
    master = int(server.pid_file.read_text())
    try:
        assert started.returncode == 0
        said = b""

        def first_line() -> bool:
            nonlocal said
            while select.select([terminal], [], [], 0)[0]:
                said += os.read(terminal, 4096)
            return b"\n" in said

        wait_for(first_line, what="a warning on the terminal")  # the slave stays open: no EIO
        line = server.conf.read_text().splitlines().index("ErrorLog stderr") + 1
        assert said.decode().replace("\r\n", "\n").splitlines()[0] == (
            f"prefork-wasm: warning: {server.conf}:{line}: ErrorLog stderr: "
            "the detached server leaves its stderr, which is "
            "a terminal, so this log goes nowhere; log to a file, start with stderr redirected to a file or pipe "
            "(2>>FILE), or run in the foreground"
        )
        assert os.readlink(f"/proc/{master}/fd/2") == "/dev/null"
        assert os.readlink(f"/proc/{master}/fd/1") == str(server.root / "stdout.log")  # a file: kept
        assert server.get("/hello")[0] == 200
        wait_for(lambda: "GET /hello HTTP/1.1 200" in (server.root / "stdout.log").read_text(), what="the access line")
    finally:
        os.close(tty)
        os.close(terminal)
        kill_master(master)
