"""A real interpreter, not a toy: CPython 3.12 built for WASI (26 MB), as mod_wasm's demos run it.

The module comes from PyPI through scripts/fetch-python-wasm (never committed); the script it
runs is tests/apps/hello.py, given by WasmArg from a WasmMapDir directory.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import psutil
import pytest

from harness import REPO, Server, wait_for

PYTHON_WASM = REPO / "build" / "python-wasm" / "python.wasm"


@pytest.fixture(scope="module")
def python_server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    fetched = subprocess.run([str(REPO / "scripts" / "fetch-python-wasm")], capture_output=True, text=True, timeout=600)
    assert fetched.returncode == 0, fetched.stderr
    body = f"""
<Location /py>
    SetHandler wasm-handler
    WasmModule {PYTHON_WASM}
    WasmEnableCGI On
    WasmMapDir /app {REPO / "tests" / "apps"}
    WasmArg /app/hello.py
    WasmTimeout 20
</Location>
"""
    server = Server(tmp_path_factory.mktemp("python"), body, start_servers=2).start()
    yield server
    server.stop()


def test_cpython_runs_a_cgi_script_from_a_mapped_dir(python_server: Server) -> None:
    status, headers, body, _ = python_server.request("POST", "/py/some/where?x=1", body=b"ping")
    assert status == 200
    assert headers["x-interpreter"] == "CPython"
    assert body.decode().splitlines() == [
        "Hello from Python 3.12 on wasi",
        "PATH_INFO=/some/where",
        "QUERY_STRING=x=1",
        "body=ping",
    ]


def test_a_large_module_keeps_the_master_lean(python_server: Server) -> None:
    """Compiling happened in a short-lived process: the master holds no compile heap."""
    assert "compiled " in python_server.log() or "cache hit" in python_server.log()
    master = psutil.Process(python_server.pid)
    assert master.memory_info().rss < 64 * 1024 * 1024
    artifact = next((python_server.root / "cache").glob("python-*.cwasm"))
    for pid in python_server.worker_pids():
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert str(artifact) in maps  # mapped from the page cache, not copied into the heap
        assert psutil.Process(pid).memory_full_info().uss < 64 * 1024 * 1024


def test_each_request_gets_a_fresh_interpreter(python_server: Server) -> None:
    replies = {python_server.get(f"/py?n={n}")[2] for n in range(4)}
    assert {line for reply in replies for line in reply.decode().splitlines() if line.startswith("QUERY")} == {
        f"QUERY_STRING=n={n}" for n in range(4)
    }
    wait_for(lambda: python_server.access_log.exists() and python_server.access_log.read_text().count("/py?n=") == 4)
