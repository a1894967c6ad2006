"""Guests are bounded while they run (issue 8, items 5 and 6): output limits stop a guest as
it writes, memory is given back after each request, a guest stuck in a host call still gets
its client an answer, and an idle worker's threads sleep."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

import psutil

from harness import HELLO, Server, wait_for
from prefork_wasm.runtime import STDERR_CAP

LIMIT = 10 * 2**20
MiB = 2**20

BODY = f"""
LimitResponseBody 10M
<Location /flood>
    SetHandler wasm-handler
    WasmModule ${{MODULES}}/flood.wasm
    WasmEnableCGI On
    WasmTimeout 1
</Location>
<Location /slow>
    SetHandler wasm-handler
    WasmModule ${{MODULES}}/slow.wasm
    WasmEnableCGI On
    WasmTimeout 1
</Location>
{HELLO}
"""


def output_files(pid: int) -> list[str]:
    """The worker's guest-output memfds, as /proc paths (their pages are not in its RSS), each
    once (a worker also has them as its fds 1 and 2)."""
    by_inode = {}
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        path = f"/proc/{pid}/fd/{fd}"
        try:
            if os.readlink(path).startswith("/memfd:prefork-wasm-"):
                by_inode[os.stat(path).st_ino] = path
        except FileNotFoundError:  # a connection's socket, closed since the listing; the memfds stay
            continue
    return sorted(by_inode.values())


def output_sizes(pid: int) -> list[int]:
    return [os.stat(path).st_size for path in output_files(pid)]


class MemorySampler:
    """Samples a worker's RSS plus its memfds' sizes in a thread, for the peak during a request
    (cheaply: a busy sampler would slow the worker's watcher on a 2-core machine)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.files = output_files(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        statm = f"/proc/{self.pid}/statm"
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.wait(0.003):
            with open(statm) as f:
                rss = int(f.read().split()[1]) * page
            self.peak = max(self.peak, rss + sum(os.stat(path).st_size for path in self.files))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def only_worker(server: Server) -> int:
    return next(iter(wait_for(server.worker_pids, what="the worker")))  # type: ignore[call-overload]


def log_lines_with(server: Server, text: str) -> list[str]:
    return [line for line in server.log().splitlines() if text in line]


def test_endless_output_is_stopped_at_the_limit_and_memory_given_back(make_server: Callable[..., Server]) -> None:
    server = make_server(BODY, start_servers=1)
    assert server.get("/hello")[0] == 200
    worker = only_worker(server)
    baseline = psutil.Process(worker).memory_info().rss
    for query, stream, limit in (("", "stdout", LIMIT), ("stderr", "stderr", STDERR_CAP)):
        with MemorySampler(worker) as sampler:
            status = server.get(f"/flood?{query}")[0]
        assert status == 502
        growth = sampler.peak - baseline
        assert growth < limit + 50 * MiB, f"{stream}: the worker grew by {growth / MiB:.0f} MiB"
        line = wait_for(lambda: log_lines_with(server, f"{stream} of "), what=f"the {stream} log line")[-1]  # noqa: B023
        assert "flood.wasm" in line and "request " in line and "guest stopped" in line
        wait_for(lambda: output_sizes(worker) == [0, 0], what="the worker's memfds to be emptied")
    assert server.get("/hello")[0] == 200
    assert server.worker_pids() == {worker}


def test_a_guest_sleeping_in_a_host_call_gets_504_and_its_worker_is_replaced(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(BODY, start_servers=1)
    worker = only_worker(server)
    start = time.monotonic()
    status, headers, _, _ = server.get("/slow?30000", timeout=10)  # poll_oneoff with a 30 s clock
    elapsed = time.monotonic() - start
    assert status == 504 and headers["connection"] == "close"
    assert elapsed < 1 + 1  # WasmTimeout + 1 s
    line = wait_for(lambda: log_lines_with(server, "blocked in a host call"))[-1]  # type: ignore[index]
    assert "slow.wasm" in line and "request " in line and "WasmTimeout" in line
    wait_for(lambda: log_lines_with(server, f"worker {worker} exited with status 16 (it gave up a request"))
    wait_for(lambda: '"GET /slow?30000 HTTP/1.1" 504' in server.access_log.read_text(), what="the access log line")
    new = wait_for(lambda: server.worker_pids() - {worker}, what="a replacement worker")
    assert server.get("/hello")[0] == 200
    assert server.worker_pids() == new


def context_switches(pid: int) -> int:
    """Voluntary context switches of all the process's threads: a sleeping thread makes none."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except FileNotFoundError:
            continue
        total += int(status.split("voluntary_ctxt_switches:")[1].split()[0])
    return total


def test_an_idle_worker_does_not_wake(make_server: Callable[..., Server]) -> None:
    server = make_server(HELLO, start_servers=1)
    assert server.get("/hello")[0] == 200  # a guest has run: the worker's threads exist
    worker = only_worker(server)

    def quiet_second() -> bool:
        before = context_switches(worker)
        time.sleep(1.0)  # the window measured, not a wait for something to happen
        return context_switches(worker) - before < 5  # the accept loop wakes once a second

    wait_for(quiet_second, timeout=10, interval=0, what="a second with fewer than 5 wake-ups")
