"""What one request may hold is bounded (issue 20, acceptance 5): the stock config's limits, -t's
account of them, and a large body held once, in a memory file, never as bytes in the worker."""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import psutil

from harness import EXAMPLES, HOST, REPO, Server, free_port

MIB = 1 << 20


def stock_config(tmp_path: Path, component_cache: Path) -> Path:
    """conf/server.conf as shipped, moved to a free port and the suite's shared cache."""
    text = (REPO / "conf" / "server.conf").read_text()
    text = text.replace("ServerRoot ..", f"ServerRoot {REPO}").replace("127.0.0.1:8080", f"127.0.0.1:{free_port()}")
    text = text.replace("PidFile logs/prefork-wasm.pid", f"PidFile {tmp_path}/pid")
    text = text.replace("CustomLog logs/access_log", f"CustomLog {tmp_path}/access_log")
    text = text.replace("WasmCacheDir cache", f"WasmCacheDir {component_cache}")
    conf = tmp_path / "server.conf"
    conf.write_text(text)
    return conf


def test_check_prints_the_per_request_and_worst_case_memory_of_the_stock_config(
    tmp_path: Path, component_cache: Path
) -> None:
    conf = stock_config(tmp_path, component_cache)
    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), "-m", "prefork_wasm.cli", "-f", str(conf), "-t"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert (result.returncode, result.stdout) == (0, "Syntax OK\n"), result.stderr
    assert (
        "prefork-wasm: memory: one request holds at most 128 MiB: its body 16 MiB (LimitRequestBody, held once), "
        "its guest's memory 64 MiB (WasmMemoryLimit), its output 2 x 16 MiB (LimitResponseBody) and stderr 16 MiB"
    ) in result.stderr
    assert "prefork-wasm: memory: MaxRequestWorkers 16 x 128 MiB = 2,048 MiB at worst" in result.stderr


class PeakMemory:
    """The largest RSS any worker of `server` reaches while the block runs."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.peak = 0
        self.before = max(psutil.Process(pid).memory_info().rss for pid in server.worker_pids())
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.01):
            for pid in self.server.worker_pids():
                try:
                    self.peak = max(self.peak, psutil.Process(pid).memory_info().rss)
                except psutil.NoSuchProcess:
                    pass

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def post_chunked(port: int, path: str, total: int) -> int:
    """POST `total` bytes in 1 MiB chunks; the response's status (the server may answer and
    close before the whole body is sent)."""
    chunk = b"x" * MIB
    with socket.create_connection((HOST, port), timeout=60) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        try:
            for _ in range(total // MIB):
                sock.sendall(b"%x\r\n" % MIB + chunk + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        head = sock.recv(65536)
    return int(head.split()[1])


def test_a_1_gib_post_to_the_stock_config_keeps_the_worker_under_body_plus_64_mb(
    tmp_path: Path, component_cache: Path
) -> None:
    """Acceptance 5: the stock LimitRequestBody refuses it as it passes 16 MiB (413), and what
    was read of it is held once."""
    conf = stock_config(tmp_path, component_cache)
    server = Server.__new__(Server)
    server.root, server.conf = tmp_path, conf
    server.port = int(conf.read_text().split("Listen 127.0.0.1:")[1].split()[0])
    server.error_log = tmp_path / "error_log"
    server.pid_file, server.stdout_log, server.stderr_log = tmp_path / "pid", tmp_path / "out", tmp_path / "err"
    server.process = None
    server.start()
    try:
        with PeakMemory(server) as memory:
            assert post_chunked(server.port, "/echo", 1 << 30) == 413
        assert memory.peak - memory.before < 16 * MIB + 64 * MIB
    finally:
        server.stop()


def test_a_large_body_is_held_once_in_a_memory_file_not_in_the_worker(
    make_server: Callable[..., Server],
) -> None:
    """A 256 MiB body to a guest that does not read it: the worker's own memory stays flat (the
    body is written to a memfd as it arrives, which the guest would read as its stdin)."""
    server = make_server(
        f"LimitRequestBody 512M\n<Location /hello>\n    SetHandler wasm-handler\n"
        f"    WasmModule {EXAMPLES}/hello.wasm\n    WasmEnableCGI On\n</Location>\n",
        start_servers=1,
    )
    with PeakMemory(server) as memory:
        assert post_chunked(server.port, "/hello", 256 * MIB) == 200
    assert memory.peak - memory.before < 64 * MIB


def test_a_large_body_reaches_the_guest_whole(make_server: Callable[..., Server]) -> None:
    server = make_server(
        f"LimitRequestBody 64M\nLimitResponseBody 64M\n<Location /echo>\n    SetHandler wasm-handler\n"
        f"    WasmModule {EXAMPLES}/echo.wasm\n    WasmEnableCGI On\n</Location>\n",
        start_servers=1,
    )
    body = bytes(range(256)) * (12 * MIB // 256)  # past the spool threshold
    status, _, echoed, _ = server.request("POST", "/echo", body=body)
    assert (status, len(echoed), echoed == body) == (200, len(body), True)
