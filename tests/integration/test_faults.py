"""Faults and privileges (issue 4): bad caches, workers that cannot start, root, guest limits."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from harness import EXAMPLES, HELLO, Server, wait_for


def run_check(server: Server) -> subprocess.CompletedProcess[str]:
    return subprocess.run(server.command("-t"), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
def test_damaged_artifacts_are_recompiled_with_a_log_line(make_server: Callable[..., Server], damage: str) -> None:
    first = make_server(HELLO)
    first.stop()
    artifact = next((first.root / "cache").glob("hello-*.cwasm"))
    data = artifact.read_bytes()
    if damage == "truncate":
        artifact.write_bytes(data[: len(data) // 2])
    else:
        artifact.write_bytes(data[:1000] + bytes(b ^ 0xFF for b in data[1000:1100]) + data[1100:])
    again = Server(first.root, HELLO)
    again.start()
    try:
        log = again.log()
        assert f"cached {artifact.name} for {EXAMPLES / 'hello.wasm'} not used: it is corrupt or truncated" in log
        assert f"compiled {EXAMPLES / 'hello.wasm'}" in log.split("not used")[-1]
        assert again.get("/hello")[2] == b"Hello from WebAssembly!\n"
        assert artifact.read_bytes() == data
    finally:
        again.stop()


def test_unusable_cache_dir_falls_back_with_a_warning(make_server: Callable[..., Server]) -> None:
    server = make_server(HELLO, start=False)
    (server.root / "blocker").write_text("a file where the cache's parent should be\n")
    server.conf.write_text(server.conf.read_text().replace("WasmCacheDir cache", "WasmCacheDir blocker/cache"))
    server.start()
    assert server.get("/hello")[0] == 200
    assert "WasmCacheDir" in server.log() and "compiling into" in server.log()


def test_a_worker_that_cannot_load_its_module_stops_the_server_cleanly(make_server: Callable[..., Server]) -> None:
    first = make_server(HELLO)
    first.stop()
    artifact = next((first.root / "cache").glob("hello-*.cwasm"))
    garbage = b"\x7fELF not really an artifact" * 100
    artifact.write_bytes(garbage)
    Path(str(artifact) + ".sha256").write_text(hashlib.sha256(garbage).hexdigest())  # passes the check
    again = Server(first.root, HELLO)
    again.start(wait=False)
    assert again.proc is not None
    assert again.proc.wait(timeout=30) == 1
    log = again.log()
    assert "worker could not start: cannot load the compiled form of" in log and "hello.wasm" in log
    assert "shutting down, fix the error" in log
    assert log.count("worker could not start") <= 2  # the two of StartServers: no fork loop
    assert not again.pid_file.exists()


@pytest.fixture
def public_data() -> Iterator[Path]:
    """A mapped directory an unprivileged worker can read (pytest's tmp dirs are 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="prefork-wasm-public-"))
    folder.chmod(0o755)
    (folder / "greeting.txt").write_text("readable by nobody\n")
    (folder / "greeting.txt").chmod(0o644)
    yield folder
    shutil.rmtree(folder)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_root_with_user_nobody_serves_from_unprivileged_workers(
    make_server: Callable[..., Server], public_data: Path
) -> None:
    body = f"""
User nobody
Group nogroup
<Location /cat>
    SetHandler wasm-handler
    WasmModule ${{EXAMPLES}}/cat.wasm
    WasmEnableCGI On
    WasmMapDir /data {public_data}
</Location>
"""
    server = make_server(body)
    assert psutil.Process(server.pid).username() == "root"
    nobody = pwd.getpwnam("nobody").pw_uid
    # A worker drops privileges once its modules are loaded, just before it first serves.
    wait_for(lambda: all(psutil.Process(p).uids() == (nobody, nobody, nobody) for p in server.worker_pids()),
             what="workers running as nobody")
    assert all(psutil.Process(p).username() == "nobody" for p in server.worker_pids())
    # Each worker's keeper (keeper.py) takes the same ids at its birth: none keeps root.
    keepers = [child for p in server.worker_pids() for child in psutil.Process(p).children()]
    assert len(keepers) == len(server.worker_pids())
    assert all(keeper.uids() == (nobody, nobody, nobody) for keeper in keepers)
    status, _, body_bytes, _ = server.get("/cat?/data/greeting.txt")
    assert (status, body_bytes) == (200, b"readable by nobody\n")
    assert "running as root without User" not in server.log()


@pytest.mark.skipif(os.geteuid() != 0, reason="the warning is about running as root")
def test_root_without_user_is_warned_at_start_and_in_check(make_server: Callable[..., Server]) -> None:
    server = make_server(HELLO)
    assert "running as root without User" in server.log() and "add 'User nobody'" in server.log()
    assert "running as root without User" in run_check(server).stderr


def test_unknown_user_is_a_config_error(make_server: Callable[..., Server]) -> None:
    server = make_server(HELLO + "User no-such-user-here\n", start=False)
    result = run_check(server)
    assert result.returncode == 1
    assert "User: no such user 'no-such-user-here'" in result.stderr


def test_mapping_the_host_root_is_warned(make_server: Callable[..., Server]) -> None:
    body = HELLO.replace("WasmEnableCGI On", "WasmEnableCGI On\n    WasmMapDir /host /")
    server = make_server(body)
    warning = "exposes the whole host file system"
    assert warning in server.log()
    assert warning in run_check(server).stderr


def test_mounts_are_read_only_unless_rw(make_server: Callable[..., Server]) -> None:
    server = make_server("", start=False)
    ro, rw = server.root / "ro", server.root / "rw"
    ro.mkdir()
    rw.mkdir()
    server.write_config(f"""
<Location /ro>
    SetHandler wasm-handler
    WasmModule ${{MODULES}}/write.wasm
    WasmEnableCGI On
    WasmMapDir /out {ro}
</Location>
<Location /rw>
    SetHandler wasm-handler
    WasmModule ${{MODULES}}/write.wasm
    WasmEnableCGI On
    WasmMapDir /out {rw} rw
</Location>
""")
    server.start()
    assert server.get("/ro?/out/x.txt")[2].startswith(b"cannot write /out/x.txt")
    assert not (ro / "x.txt").exists()
    assert server.get("/rw?/out/x.txt")[2] == b"wrote /out/x.txt\n"
    assert (rw / "x.txt").read_text() == "written by the guest\n"


def test_limit_response_body_gives_502_and_the_worker_lives(make_server: Callable[..., Server]) -> None:
    body = """
LimitResponseBody 1M
<Location /headers>
    SetHandler wasm-handler
    WasmModule ${MODULES}/headers.wasm
    WasmEnableCGI On
</Location>
"""
    server = make_server(body, start_servers=1)
    workers = server.worker_pids()
    assert server.get("/headers?big")[0] == 502
    line = wait_for(lambda: [entry for entry in server.log().splitlines() if "exceeds" in entry])[-1]
    assert "headers.wasm" in line and "request " in line
    assert server.get("/headers?status")[0] == 201
    assert server.worker_pids() == workers


def test_a_module_that_does_not_fit_the_instance_pool_stops_the_server_with_the_reason(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    """A worker's engine pools one instance with one memory (multi-memory modules do not fit):
    start-up finds it before any worker would refuse it, says why at the WasmModule line, and
    the server exits cleanly (issue 20: checked by the compile side, -t, start and restart)."""
    module = tmp_path / "two_memories.wat"
    module.write_text('(module (memory 1) (memory 1) (func (export "_start")))')
    server = make_server(
        f"<Location /m>\n    SetHandler wasm-handler\n    WasmModule {module}\n</Location>\n", start=False
    )
    server.start(wait=False)
    assert server.proc is not None
    assert server.proc.wait(timeout=30) == 1
    line = server.conf.read_text().splitlines().index(f"    WasmModule {module}") + 1
    assert (
        f"prefork-wasm: {server.conf}:{line}: WasmModule: {module} does not fit the workers' instance pool "
        "(one instance with one memory of up to 4096 MiB"
    ) in server.stderr_text()
    assert "it defines 2 memories and 0 tables, the pool holds one of each" in server.stderr_text()
    assert "worker could not start" not in server.log()  # no worker was forked to find out
