"""Issue 18's crowd and memory figures for prefork-wasm's held connections: wrk at hundreds and a
thousand connections, where no request may fail, and what idle kept-alive connections cost the
workers' memory.

wrk's timeout is raised to CROWD_TIMEOUT_S for the crowds: at -c1000 its two threads share the
cores with four busy workers and read some answers late, which its default of 2 s counts as
errors that the server's own record does not show (docs/performance.md).
"""

from __future__ import annotations

import resource
import socket
import time
from typing import Any

import psutil

from . import wrk
from .peers import System

CROWDS = (256, 1000)
CROWD_TIMEOUT_S = 10.0
IDLE = 2000  # kept-alive connections held at once for the memory figure
MB = 1e6  # the goal is in MB
SETTLE_S = 1.0  # how long the count of held connections may take to see them all


def crowds(system: System, seconds: float) -> list[dict[str, Any]]:
    """wrk at each crowd size, keep-alive and `Connection: close`."""
    runs = []
    for connections in CROWDS:
        for mode in ("keep-alive", "close"):
            r = wrk.run(system.url, connections, seconds, mode == "close", timeout_s=CROWD_TIMEOUT_S)
            runs.append({**r, "mode": mode})
    return runs


def idle_memory(system: System, count: int = IDLE) -> dict[str, Any]:
    """The workers' memory (USS, summed) before and while `count` connections are held idle, each
    after one request answered; all of it within KeepAliveTimeout (5 s in the bench's config)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 256), hard))
    before = _workers_uss(system)
    request = f"GET {system.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", system.port), timeout=10)
            socks.append(sock)
            sock.sendall(request)
            _read_response(sock, system.expect)
        held = _held(system, count)
        after = _workers_uss(system)
    finally:
        for sock in socks:
            sock.close()
    return {
        "connections": count,
        "held": held,
        "uss_before_mb": before / MB,
        "uss_after_mb": after / MB,
        "mb_per_1000": (after - before) / MB / count * 1000,
    }


def _read_response(sock: socket.socket, expect: bytes) -> None:
    data = b""
    while expect not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError(f"the server closed a connection before answering: {data[:200]!r}")
        data += chunk


def _workers_uss(system: System) -> int:
    return sum(psutil.Process(pid).memory_full_info().uss for pid in system.worker_pids())


def _held(system: System, count: int) -> int:
    """The established connections to the server's port that its workers hold, counted again
    (for SETTLE_S at most) until all `count` are seen: a connection the balance is moving from
    one worker to another is in neither's table for that moment."""
    deadline = time.monotonic() + SETTLE_S
    while (held := _held_now(system)) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return held


def _held_now(system: System) -> int:
    held = 0
    for pid in system.worker_pids():
        conns = psutil.Process(pid).net_connections("tcp")
        held += sum(1 for c in conns if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == system.port)
    return held


def targets(held: dict[str, Any]) -> list[tuple[str, float | None, float, str]]:
    """(name, value, goal, kind) of issue 18's crowd and memory goals."""
    runs = held.get("crowds", [])
    errors = sum(r["errors"] for r in runs) if runs else None
    memory = held.get("idle", {}).get("mb_per_1000")
    return [
        (f"errors at -c{' and -c'.join(map(str, CROWDS))} (keep-alive and close, wrk timeout "
         f"{CROWD_TIMEOUT_S:g} s)", errors, 0, "=="),
        (f"memory per 1,000 held idle connections (MB, workers' USS, {IDLE:,} held)", memory, 10.0, "<="),
    ]


def markdown(held: dict[str, Any]) -> str:
    lines = [
        "| connections | mode | req/s | p50 ms | p99 ms | errors | timeouts |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in held.get("crowds", []):
        lines.append(f"| {r['connections']:,} | {r['mode']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {r['errors']} | {r['timeouts']} |")
    idle = held.get("idle")
    if idle:
        lines += ["", f"{idle['connections']:,} kept-alive idle connections ({idle['held']:,} held by the "
                  f"workers when measured): the workers' USS went from {idle['uss_before_mb']:.1f} MB to "
                  f"{idle['uss_after_mb']:.1f} MB, **{idle['mb_per_1000']:.2f} MB per 1,000** (kernel socket "
                  "memory not included)."]
    return "\n".join(lines)
