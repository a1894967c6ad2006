"""The master's life: -t, the module cache, stopping, replacing workers, fork safety (issue 2)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil

from harness import EXAMPLES, HELLO, MODULES, REPO, Server, free_port, wait_for


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefork_wasm.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_check_good_config_says_syntax_ok(make_server: Callable[..., Server]) -> None:
    server = make_server(HELLO, start=False)
    result = run_cli("-f", str(server.conf), "-t")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Syntax OK"


def test_check_bad_config_names_file_and_line(make_server: Callable[..., Server]) -> None:
    server = make_server(HELLO + "WasmEnableCGI maybe\n", start=False)
    result = run_cli("-f", str(server.conf), "-t")
    assert result.returncode != 0
    lines = server.conf.read_text().splitlines()
    line_no = lines.index("WasmEnableCGI maybe") + 1
    assert f"{server.conf}:{line_no}: WasmEnableCGI" in result.stderr
    assert "Syntax OK" not in result.stdout


def test_check_reports_a_module_that_does_not_compile(make_server: Callable[..., Server], tmp_path: Path) -> None:
    broken = tmp_path / "broken.wasm"
    broken.write_bytes(b"\0asm\x01\0\0\0garbage")
    server = make_server(HELLO.replace("${EXAMPLES}/hello.wasm", str(broken)), start=False)
    result = run_cli("-f", str(server.conf), "-t")
    assert result.returncode != 0
    assert "broken.wasm: cannot compile" in result.stderr


def test_version_and_help() -> None:
    version = run_cli("-v")
    assert version.returncode == 0
    assert "prefork-wasm/" in version.stdout and "wasmtime: 50." in version.stdout and "Python" in version.stdout
    help_text = run_cli("--help").stdout
    for flag in ("-f FILE", "-t", "-D NAME", "-v"):
        assert flag in help_text


def test_ifdefine_from_command_line(make_server: Callable[..., Server]) -> None:
    body = HELLO.replace("<Location /hello>", "<IfDefine HELLO>\n<Location /hello>").replace(
        "</Location>", "</Location>\n</IfDefine>"
    )
    server = make_server(body, start=False)
    server.start(command=server.command("-D", "HELLO"))
    assert server.get("/hello")[0] == 200


def test_second_start_compiles_nothing_and_a_changed_module_is_recompiled(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    module = tmp_path / "app.wasm"
    shutil.copy(EXAMPLES / "hello.wasm", module)
    body = HELLO.replace("${EXAMPLES}/hello.wasm", str(module))
    first = make_server(body)
    assert "compiled " in first.log()
    first.stop()

    second = Server(first.root, body, start_servers=1)
    second.error_log.unlink()
    second.start()
    log = second.log()
    assert "cache hit for" in log and "compiled " not in log
    assert second.get("/hello")[2] == b"Hello from WebAssembly!\n"
    second.stop()

    shutil.copy(MODULES / "headers.wasm", module)
    third = Server(first.root, body, start_servers=1)
    third.error_log.unlink()
    third.start()
    assert f"compiled {module}" in third.log()
    assert third.get("/hello")[2] == b"headers default\n"
    third.stop()


def test_sigterm_stops_everything_and_removes_pid_file(make_server: Callable[..., Server]) -> None:
    server = make_server(HELLO)
    assert server.pid_file.read_text().strip() == str(server.pid)
    # The server answers as soon as one worker serves; the second may still be starting.
    workers = server.wait_for_workers(lambda pids: len(pids) == 2, what="both workers")
    server.signal(signal.SIGTERM)
    assert server.proc is not None
    assert server.proc.wait(timeout=15) == 0
    assert not server.pid_file.exists()
    for pid in workers:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_killed_worker_is_replaced(make_server: Callable[..., Server]) -> None:
    server = make_server(HELLO)
    before = server.worker_pids()
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    server.wait_for_workers(lambda pids: len(pids) == 2 and victim not in pids, timeout=3, what="a replacement")
    assert server.get("/hello")[0] == 200
    assert "exited on signal SIGKILL" in server.log()


def test_master_is_single_threaded_at_every_fork_and_workers_map_artifacts(
    make_server: Callable[..., Server]
) -> None:
    server = make_server(HELLO, log_level="debug")
    os.kill(min(server.worker_pids()), signal.SIGKILL)  # one more fork, after start-up
    wait_for(lambda: len(server.worker_pids()) == 2 and server.log().count("forked worker") >= 3)
    forks = [line for line in server.log().splitlines() if "forked worker" in line]
    assert len(forks) >= 3
    assert all(line.endswith("(master threads: 1)") for line in forks)
    # deserialize_file maps the artifact: it shows in every worker's memory map (the newest
    # worker's once it has loaded its modules, a moment after the fork).
    artifacts = list((server.root / "cache").glob("hello-*.cwasm"))
    assert len(artifacts) == 1

    def all_mapped() -> bool:
        pids = server.worker_pids()
        return len(pids) == 2 and all(str(artifacts[0]) in Path(f"/proc/{pid}/maps").read_text() for pid in pids)

    wait_for(all_mapped, what="every worker to map the artifact")
    assert psutil.Process(server.pid).num_threads() == 1


def test_quick_start_command_serves_the_examples(tmp_path: Path, component_cache: Path) -> None:
    """The README's first command, on a copy of conf/server.conf moved to a free port (and to
    the suite's shared cache: the component examples compile once)."""
    port = free_port()
    conf = tmp_path / "server.conf"
    text = (REPO / "conf" / "server.conf").read_text()
    text = text.replace("ServerRoot ..", f"ServerRoot {REPO}").replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    text = text.replace("PidFile logs/prefork-wasm.pid", f"PidFile {tmp_path}/pid")
    text = text.replace("CustomLog logs/access_log", f"CustomLog {tmp_path}/access_log")
    text = text.replace("WasmCacheDir cache", f"WasmCacheDir {component_cache}")
    conf.write_text(text)
    out = open(tmp_path / "out", "wb")
    proc = subprocess.Popen([str(REPO / "scripts" / "serve"), "-f", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: f"127.0.0.1:{port}" in (tmp_path / "out").read_text(), timeout=120, what="the URL")
        server = Server.__new__(Server)
        server.port = port
        assert server.get("/hello")[2] == b"Hello from WebAssembly!\n"
        assert b"GREETING=hello from WasmEnv" in server.get("/env")[2]
        assert server.request("POST", "/echo", body=b"ping")[2] == b"ping"
        assert server.get("/cat?/data/greeting.txt")[2] == b"Hello from a mapped directory!\n"
        assert server.get("/plain")[2] == b"plain output, no CGI headers\n"
        assert b'"greeting": "hello from WasmEnv"' in server.get("/app?x=1")[2]
        assert server.get("/app/files/greeting.txt")[2] == b"Hello from a mapped directory!\n"
        assert server.get("/app/nowhere")[0] == 404
        assert b'"greeting": "hello from WasmEnv"' in server.get("/jsapp")[2]
        status, headers, body, _ = server.get("/")  # examples/htdocs/index.html, a static file
        assert status == 200 and headers["content-type"].startswith("text/html") and b'href="/hello"' in body
        assert server.get("/health")[:3:2] == (200, b"ready (generation 0)\n")
        assert b'location="/hello"' in server.get("/metrics")[2]
        assert server.get("/server-status?auto")[0] == 200
    finally:
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        for child in children:
            if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                child.kill()
        out.close()
