"""A restart can never stop the server, and the master keeps supervising while it compiles (issue 8).

A config that parses but fails later (a LogFormat the access log cannot write, a log file that
cannot be opened, a port taken by someone else) is refused by a restart, which keeps the old
generation serving, and by start-up and -t with file:line and no traceback.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from harness import EXAMPLES, HELLO, MODULES, Server, free_port, wait_for

HELLO_BODY = b"Hello from WebAssembly!\n"


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another server is listening on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", free_port()))
        other.listen()
        yield other.getsockname()[1]


def bad_lines(kind: str, server: Server, busy_port: int) -> tuple[list[str], int]:
    """Config lines that parse but cannot be served, and which of them the error must name (0-based)."""
    if kind == "logformat":
        return ['LogFormat "%h %Z" broken', "CustomLog logs/broken_log broken"], 0
    if kind in ("logfile", "pidfile"):
        (server.root / "afile").write_text("a file where a folder should be\n")
        directive = "CustomLog" if kind == "logfile" else "PidFile"
        return [f"{directive} {server.root}/afile/{kind}" + " common" * (kind == "logfile")], 0
    return [f"Listen 127.0.0.1:{busy_port}"], 0


def append(server: Server, lines: list[str]) -> int:
    """Append lines to the config; returns the line number of the first."""
    text = server.conf.read_text()
    server.conf.write_text(text + "\n".join(lines) + "\n")
    return len(text.splitlines()) + 1


def no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text, text


EXPECTED = {
    "logformat": "LogFormat: unknown %Z in '%h %Z'",
    "logfile": "CustomLog {root}/afile/logfile: cannot open: Not a directory: {root}/afile",
    "pidfile": "PidFile {root}/afile/pidfile: cannot write: Not a directory: {root}/afile",
    "listen": "Listen 127.0.0.1:{port}: address already in use (another server on that port?",
}


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGHUP], ids=["graceful", "restart"])
@pytest.mark.parametrize("kind", ["logformat", "logfile", "listen"])
def test_a_restart_with_a_config_that_cannot_be_served_keeps_the_old_generation(
    make_server: Callable[..., Server], busy_port: int, kind: str, signum: int
) -> None:
    server = make_server(HELLO)
    workers = server.wait_for_workers(lambda pids: len(pids) == 2, what="2 workers")
    good = server.conf.read_text()
    lines, named = bad_lines(kind, server, busy_port)
    line = append(server, lines) + named
    server.signal(signum)
    failure = wait_for(
        lambda: [line for line in server.log().splitlines() if "restart failed, still serving generation 0" in line],
        what="the restart's failure in the error log",
    )
    expected = EXPECTED[kind].format(root=server.root, port=busy_port)
    assert f"{server.conf}:{line}: {expected}" in failure[0]
    # The old generation serves on, with the same workers and the same answers.
    assert server.proc is not None and server.proc.poll() is None
    for _ in range(5):
        assert server.get("/hello")[2] == HELLO_BODY
    assert server.worker_pids() == workers
    assert "generation 1 configured" not in server.log()
    # Fixed, the next restart goes through.
    server.conf.write_text(good)
    server.signal(signum)
    wait_for(lambda: "generation 1 configured" in server.log(), what="the fixed restart")
    assert server.get("/hello")[2] == HELLO_BODY
    no_traceback(server.log(), server.stderr_text(), (server.root / "stdout").read_text())


def run(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        server.command(*args), capture_output=True, text=True, timeout=120, cwd=server.root, check=False
    )


@pytest.mark.parametrize("kind", ["logformat", "logfile", "listen", "pidfile"])
def test_start_up_with_a_config_that_cannot_be_served_says_where_and_exits(
    make_server: Callable[..., Server], busy_port: int, kind: str
) -> None:
    server = make_server(HELLO, start=False)
    lines, named = bad_lines(kind, server, busy_port)
    line = append(server, lines) + named
    result = run(server)
    assert result.returncode == 1
    expected = EXPECTED[kind].format(root=server.root, port=busy_port)
    assert f"prefork-wasm: {server.conf}:{line}: {expected}" in result.stderr
    no_traceback(result.stdout, result.stderr)
    assert not server.pid_file.exists()


UNKNOWN_ENTRY = HELLO.replace("WasmEnableCGI On", "WasmEnableCGI On\n    WasmEntryPoint no_such_function")


@pytest.mark.parametrize(
    ("body", "extra", "expected"),
    [
        (HELLO, 'LogFormat "%h %{X}z" odd', "LogFormat: unknown %{X}z"),
        (
            HELLO,
            "Listen nosuchhost.invalid:8080",
            "Listen nosuchhost.invalid:8080: cannot resolve host 'nosuchhost.invalid'",
        ),
        (
            UNKNOWN_ENTRY,
            "",
            "WasmEntryPoint: {examples}/hello.wasm exports no function 'no_such_function' (its functions: _start)",
        ),
    ],
    ids=["logformat", "listen-host", "entry-point"],
)
def test_check_and_start_up_catch_what_only_serving_would_find(
    make_server: Callable[..., Server], body: str, extra: str, expected: str
) -> None:
    server = make_server(body, start=False)
    if extra:
        line = append(server, [extra])
    else:
        line = server.conf.read_text().splitlines().index("    WasmEntryPoint no_such_function") + 1
    where = f"prefork-wasm: {server.conf}:{line}: {expected.replace('{examples}', str(EXAMPLES))}"
    for args in (["-t"], []):
        result = run(server, *args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert where in result.stderr, (args, result.stderr)
        assert "Syntax OK" not in result.stdout
        no_traceback(result.stdout, result.stderr)


def test_a_module_without_the_default_entry_point_names_the_module_line(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    reactor = tmp_path / "reactor.wat"
    reactor.write_text('(module (func (export "run")) (func (export "init")))')
    server = make_server(HELLO.replace("${EXAMPLES}/hello.wasm", str(reactor)), start=False)
    line = server.conf.read_text().splitlines().index(f"    WasmModule {reactor}") + 1
    result = run(server, "-t")
    assert result.returncode == 1
    assert (
        f"{server.conf}:{line}: WasmModule: {reactor} exports no function '_start' (its functions: init, run); "
        "name the one to call with WasmEntryPoint" in result.stderr
    )
    server.conf.write_text(
        server.conf.read_text().replace(f"WasmModule {reactor}", f"WasmModule {reactor}\nWasmEntryPoint run")
    )
    assert run(server, "-t").stdout.strip() == "Syntax OK"


# --- the master stays responsive while a restart compiles ---------------------------------------


def compiler_of(server: Server) -> psutil.Process | None:
    for child in psutil.Process(server.pid).children():
        try:
            if "prefork_wasm.compiler" in child.cmdline():
                return child
        except psutil.NoSuchProcess:
            pass
    return None


def ports(pid: int) -> set[int]:
    """The ports a process listens on; none once it has exited (an old worker leaving while
    the caller polls)."""
    try:
        connections = psutil.Process(pid).net_connections("inet")
    except psutil.NoSuchProcess:
        return set()
    return {c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN}


def restart_with_a_slow_compile(
    server: Server, tmp_path: Path, extra: str = "", functions: int = 1500
) -> psutil.Process:
    """Add /big, a real module that takes a second or more to compile (many functions of 200
    multiply-adds) and `extra` config lines, send SIGUSR1 and return the compiler process once it runs."""
    ops = "".join(f"(local.set 0 (i32.add (local.get 0) (i32.mul (local.get 0) (i32.const {j}))))" for j in range(200))
    body = "".join(f"(func (param i32) (result i32) {ops} (local.get 0))" for _ in range(functions))
    big = tmp_path / "big.wat"
    big.write_text(f'(module (func (export "_start")) {body})')
    server.conf.write_text(
        server.conf.read_text() + f"<Location /big>\nSetHandler wasm-handler\nWasmModule {big}\n</Location>\n{extra}"
    )
    server.signal(signal.SIGUSR1)
    compiler = wait_for(lambda: compiler_of(server), interval=0.005, what="the compiler process")
    assert isinstance(compiler, psutil.Process)
    return compiler


def test_while_a_restart_compiles_the_master_reaps_replaces_serves_and_answers_signals(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = make_server(HELLO)
    new_port = free_port()
    compiler = restart_with_a_slow_compile(server, tmp_path, extra=f"Listen 127.0.0.1:{new_port}\n")
    compiler.suspend()  # a real compile, frozen so that "meanwhile" lasts as long as this test needs
    wait_for(lambda: "compiling modules for generation 1" in server.log(), what="the compile's log line")
    assert compiler.net_connections("all") == []  # it holds no listener of the master's

    def workers() -> set[int]:
        return server.worker_pids() - {compiler.pid}

    before = wait_for(lambda: pids if len(pids := workers()) == 2 else None, what="both workers")
    assert isinstance(before, set)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    after = server.wait_for_workers(
        lambda pids: len(pids - {compiler.pid}) == 2 and victim not in pids, what="a replacement"
    )
    new = after - {compiler.pid} - before
    assert len(new) == 1, (before, after, victim)
    (replacement,) = new
    # The next generation's new port is bound (by the master), but not held by an old worker.
    assert new_port in ports(server.pid) and new_port not in ports(replacement)
    for _ in range(5):
        assert server.get("/hello")[2] == HELLO_BODY
    assert server.get("/big")[0] == 404  # still the old generation
    assert "generation 1 configured" not in server.log()

    # A second restart while the first compiles: the first is stopped, the newest config wins.
    server.conf.write_text(server.conf.read_text().replace("<Location /big>", "<Location /bigger>"))
    server.signal(signal.SIGUSR1)
    wait_for(lambda: "was still compiling: stopped, starting over" in server.log(), what="the superseded compile")
    assert not psutil.pid_exists(compiler.pid)  # killed and reaped, not a zombie
    wait_for(lambda: "generation 1 configured" in server.log(), timeout=60, what="the newest restart")
    assert server.get("/bigger")[0] == 200 and server.get("/big")[0] == 404
    wait_for(lambda: all(new_port in ports(pid) for pid in workers()), what="the old workers to leave")
    assert "generation 2" not in server.log()  # one swap for the two signals
    assert not list((server.root / "cache").glob(".tmp-*"))


def test_stopping_while_a_restart_compiles_stops_the_compiler_too(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = make_server(HELLO)
    compiler = restart_with_a_slow_compile(server, tmp_path)
    server.signal(signal.SIGTERM)
    assert server.proc is not None and server.proc.wait(timeout=15) == 0
    assert not psutil.pid_exists(compiler.pid)


def test_an_unchanged_module_is_not_hashed_again_on_restart(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    module = tmp_path / "app.wasm"
    shutil.copy(EXAMPLES / "hello.wasm", module)
    server = make_server(HELLO.replace("${EXAMPLES}/hello.wasm", str(module)), log_level="debug")

    def hashed() -> list[str]:
        return [
            line.split("cache: ")[1].split(" bytes")[0] for line in server.log().splitlines() if "bytes hashed" in line
        ]

    assert hashed() == [str(module.stat().st_size)]  # start-up: the source; the artifact is the compiler's
    server.signal(signal.SIGUSR1)
    wait_for(lambda: "generation 1 configured" in server.log())
    assert hashed()[1] == "0"
    shutil.copy(MODULES / "headers.wasm", module)
    server.signal(signal.SIGUSR1)
    wait_for(lambda: "generation 2 configured" in server.log())
    assert hashed()[2] == str(module.stat().st_size)  # only the changed source
    server.signal(signal.SIGUSR1)
    wait_for(lambda: "generation 3 configured" in server.log())
    assert hashed()[3] == "0"
    assert server.get("/hello?status")[2] == b"created\n"


def test_a_retired_worker_that_wakes_late_leaves_a_waiting_connection_to_the_new_generation(
    make_server: Callable[..., Server],
) -> None:
    """A worker retired by a graceful restart while it could not run (frozen here; a loaded
    machine does it too) wakes with the signal and a new connection ready at once: it must leave
    that connection to the next generation, whatever the order of its ready list. One scoreboard
    slot, so the next generation's worker starts only once the old one has gone."""
    server = make_server(HELLO + "ServerLimit 1\n", start_servers=1)
    (old,) = server.wait_for_workers(lambda pids: len(pids) == 1, what="the worker")
    worker = psutil.Process(old)
    worker.suspend()
    try:
        server.conf.write_text(server.conf.read_text() + "<Location /new>\nSetHandler wasm-handler\n"
                               f"WasmModule {EXAMPLES}/hello.wasm\nWasmEnableCGI On\n</Location>\n")
        server.signal(signal.SIGUSR1)
        wait_for(lambda: "generation 1 configured" in server.log(), what="the restart")
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)  # waits in the backlog
    finally:
        worker.resume()
    with sock:
        sock.sendall(b"GET /new HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 200 "), response[:200]
    assert not psutil.pid_exists(old) or worker.status() == psutil.STATUS_ZOMBIE


# --- -k graceful and -k restart report the outcome (issue 20) ---------------------------------


@pytest.mark.parametrize("command", ["graceful", "restart"])
@pytest.mark.parametrize("broken", ["garbage", "pool"])
def test_k_graceful_with_a_broken_module_fails_with_file_and_line_and_the_old_generation_serves_on(
    make_server: Callable[..., Server], tmp_path: Path, command: str, broken: str
) -> None:
    """Acceptance 3: a module that does not compile (random bytes in a .wasm file), or that does
    not fit the workers' instance pool (its memory starts above WasmMemoryLimit), is refused
    by the restart; the command prints FILE:LINE and fails; the old generation serves on."""
    server = make_server(HELLO)
    workers = server.wait_for_workers(lambda pids: len(pids) == 2, what="2 workers")
    module = tmp_path / "broken.wasm"
    if broken == "garbage":
        module.write_bytes(os.urandom(64))
        text = server.conf.read_text().replace("${EXAMPLES}/hello.wasm", str(module))
        expected = f"WasmModule: {module}: cannot compile: not a WebAssembly binary"
    else:
        text = server.conf.read_text().replace("WasmEnableCGI On", "WasmEnableCGI On\n    WasmMemoryLimit 1M")
        expected = f"WasmModule: {EXAMPLES}/hello.wasm does not fit the workers' instance pool"
    server.conf.write_text(text)
    line = next(n for n, t in enumerate(text.splitlines(), 1) if t.strip().startswith("WasmModule"))
    result = run(server, "-k", command)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert f"prefork-wasm: {'graceful ' * (command == 'graceful')}restart failed, generation 0 still serving:" in (
        result.stderr
    )
    assert f"prefork-wasm: {server.conf}:{line}: {expected}" in result.stderr
    no_traceback(result.stdout, result.stderr)
    assert server.proc is not None and server.proc.poll() is None
    for _ in range(5):
        assert server.get("/hello")[2] == HELLO_BODY
    assert server.worker_pids() == workers
    # -t says the same before any restart
    check = run(server, "-t")
    assert check.returncode == 1 and f"{server.conf}:{line}: {expected}" in check.stderr


def test_k_graceful_waits_for_the_new_generation_and_succeeds(make_server: Callable[..., Server]) -> None:
    server = make_server(HELLO)
    result = run(server, "-k", "graceful")
    assert (result.returncode, result.stderr) == (0, "")
    assert "generation 1 configured" in server.log()  # logged before the command returned


def test_k_graceful_when_nothing_runs_starts_the_server_as_apache_does(make_server: Callable[..., Server]) -> None:
    """Apache's httpd -k graceful (and restart): 'httpd not running, trying to start'."""
    server = make_server(HELLO, start=False)
    result = run(server, "-k", "graceful")
    try:
        assert result.returncode == 0, result.stderr
        assert "not running" in result.stdout and "trying to start" in result.stdout
        pid = int(server.pid_file.read_text())
        assert server.get("/hello")[2] == HELLO_BODY
    finally:
        stop = run(server, "-k", "stop")
        assert stop.returncode == 0, stop.stderr
    assert not psutil.pid_exists(pid)


def test_the_error_log_at_log_level_warn_shows_start_graceful_restart_and_stop(
    make_server: Callable[..., Server]
) -> None:
    """Acceptance 6: Apache writes its notices whatever LogLevel says."""
    server = make_server(HELLO, log_level="warn")
    assert run(server, "-k", "graceful").returncode == 0
    server.stop()
    log = server.log()
    for notice in (
        "[mpm_prefork:notice]",
        "AH00163: prefork-wasm/",
        "generation 0 configured -- resuming normal operations",
        "AH00171: Graceful restart requested, doing restart",
        "generation 1 configured -- resuming normal operations",
        "AH00169: caught SIGTERM, shutting down",
    ):
        assert notice in log, notice
    assert "[info]" not in log and ":info]" not in log
