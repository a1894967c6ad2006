"""WASI 0.2 components served as core modules are: CGI and non-CGI, arguments, environment,
a read-only mapped directory, stdin, the limits and the outcomes; compiled once and mapped;
refused at -t when they import what the server does not provide. And WASI reactors."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness import MODULES, Server, env_of, wait_for

HOSTILE = MODULES / "hostile_component.wasm"


def served(cache: Path, body: str) -> str:
    """A config body serving the hostile component at /c, with the shared cache."""
    return f"""
WasmCacheDir {cache}
<Location /c>
    SetHandler wasm-handler
    WasmModule {HOSTILE}
    WasmEnableCGI On
    WasmTimeout 1
{body}
</Location>
"""


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    """The command line on the server's config: -t, or a start in the foreground."""
    return subprocess.run(server.command(*args), capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "hello.txt").write_text("hello from the host\n")
    return folder


def test_a_component_serves_cgi_with_arguments_environment_stdin_and_a_read_only_dir(
    make_server: Callable[..., Server], component_cache: Path, data_dir: Path
) -> None:
    server = make_server(
        served(component_cache, f"    WasmArg --flag\n    WasmEnv GREETING hi\n    WasmMapDir /data {data_dir}")
        + f"""
<Location /raw>
    SetHandler wasm-handler
    WasmModule {HOSTILE}
    WasmEnv MODE raw
    ForceType text/plain
</Location>
"""
    )
    status, headers, body, _ = server.get("/c/some/path?env")
    assert status == 200 and headers["content-type"] == "text/plain"
    env = env_of(body)
    assert env["REQUEST_METHOD"] == "GET" and env["PATH_INFO"] == "/some/path" and env["SCRIPT_NAME"] == "/c"
    assert env["QUERY_STRING"] == "env" and env["GREETING"] == "hi" and env["UNIQUE_ID"]
    assert env["argv"] == "['hostile_component.wasm', '--flag']"

    status, _, body, _ = server.request("POST", "/c?echo", body=b"posted body \xc3\xa9")
    assert (status, body) == (200, b"posted body \xc3\xa9")

    status, _, body, _ = server.get("/c?read")
    assert status == 200 and body.decode().splitlines() == ["hello from the host", "write refused: PermissionError"]
    assert not (data_dir / "written.txt").exists()

    assert server.get("/c?missing")[:3:2] == (404, b"no such page\n")
    status, headers, body, _ = server.get("/raw")
    assert (status, headers["content-type"], body) == (200, "text/plain", b"raw body from a component\n")


def test_run_returning_err_is_a_500_with_the_guest_stderr_logged_under_the_request_id(
    make_server: Callable[..., Server], component_cache: Path
) -> None:
    server = make_server(served(component_cache, ""), start_servers=1)
    prefix = env_of(server.get("/c?env")[2])["UNIQUE_ID"].rsplit("-", 1)[0]
    assert server.get("/c?err")[0] == 500
    line = wait_for(lambda: [x for x in server.log().splitlines() if "hostile: failing on purpose" in x])[-1]
    assert f"request {prefix}-" in line
    cause = wait_for(lambda: [x for x in server.log().splitlines() if "returned err" in x])[-1]
    assert "hostile_component.wasm: wasi:cli/run@0.2.0#run returned err (GET /c)" in cause
    assert server.get("/c?exit")[0] == 500  # sys.exit(3): wasi:cli/exit with an error


def test_a_looping_component_gets_504_and_a_hungry_one_500_and_the_worker_goes_on(
    make_server: Callable[..., Server], component_cache: Path
) -> None:
    server = make_server(served(component_cache, "    WasmMemoryLimit 64M") + "LimitResponseBody 1M\n", start_servers=1)
    workers = server.worker_pids()
    with ThreadPoolExecutor(1) as client:
        looping = client.submit(server.get, "/c?loop")
        # WasmTimeout 1, and a second's grace: the guest is stopped on time. The deadline is the assertion.
        wait_for(looping.done, timeout=1 + 1, what="the looping component's answer within 2 s")
    assert looping.result()[0] == 504
    assert server.get("/c?alloc")[0] == 500
    assert server.get("/c?flood")[0] == 502
    assert server.get("/c?env")[0] == 200
    assert server.worker_pids() == workers
    log = server.log()
    assert "WasmTimeout reached" in log and "trap: wasm `unreachable` instruction executed" in log


def test_the_second_start_compiles_nothing_and_workers_map_the_component(
    make_server: Callable[..., Server], component_cache: Path
) -> None:
    make_server(served(component_cache, "")).stop()  # compiles it if no test did yet
    server = make_server(served(component_cache, ""), log_level="debug")
    assert server.get("/c?env")[0] == 200
    assert f"cache hit for {HOSTILE}" in server.log() and "compiled " not in server.log()
    [artifact] = component_cache.glob("hostile_component-*.cwasm")
    for pid in server.worker_pids():
        assert str(artifact) in Path(f"/proc/{pid}/maps").read_text()


def test_a_component_importing_what_the_server_lacks_fails_check_and_start(
    make_server: Callable[..., Server]
) -> None:
    wat = MODULES / "http_client_component.wat"
    server = make_server(
        f"<Location /app>\n    SetHandler wasm-handler\n    WasmModule {wat}\n</Location>\n", start=False
    )
    line = server.conf.read_text().splitlines().index(f"    WasmModule {wat}") + 1
    expected = (
        f"{server.conf}:{line}: WasmModule: {wat} imports wasi:http/outgoing-handler@0.2.0, "
        "which prefork-wasm does not provide"
    )
    check = cli(server, "-t")
    assert check.returncode == 1 and expected in check.stderr and "Syntax OK" not in check.stdout
    start = cli(server)
    assert start.returncode == 1 and expected in start.stderr


def test_a_reactor_is_initialised_before_its_entry_point(make_server: Callable[..., Server]) -> None:
    server = make_server(
        f"<Location /r>\n    SetHandler wasm-handler\n    WasmModule {MODULES / 'reactor.wat'}\n"
        "    WasmEntryPoint handle\n    WasmEnableCGI On\n</Location>\n"
    )
    assert server.get("/r")[:3:2] == (200, b"ok\n")


def test_check_lists_a_components_functions_for_an_entry_point_it_lacks(
    make_server: Callable[..., Server], component_cache: Path
) -> None:
    server = make_server(served(component_cache, "    WasmEntryPoint _start"), start=False)
    check = cli(server, "-t")
    assert check.returncode == 1
    assert (
        f"WasmEntryPoint: {HOSTILE} exports no function '_start' (its functions: wasi:cli/run@0.2.0#run)"
        in check.stderr
    )


def test_a_core_module_importing_what_wasi_lacks_fails_check(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    module = tmp_path / "needs_env.wat"
    module.write_text('(module (import "env" "missing" (func)) (func (export "_start")))')
    server = make_server(
        f"<Location /m>\n    SetHandler wasm-handler\n    WasmModule {module}\n</Location>\n", start=False
    )
    check = cli(server, "-t")
    assert check.returncode == 1
    assert f"WasmModule: {module} imports env::missing, which prefork-wasm does not provide" in check.stderr
