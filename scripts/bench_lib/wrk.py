"""Run wrk once and read the JSON line printed by benchmarks/wrk/report.lua.

wrk 4 counts a timeout only when a late response finally arrives: a connection that never gets
an answer (a prefork server with fewer workers than connections and endless keep-alive) is
invisible in its output. So near the end of each run we also ask the kernel (ss) for wrk's
sockets that have received nothing for STALL_SECONDS or more, and report them as "stalled".
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from . import report

LUA = Path(__file__).resolve().parents[2] / "benchmarks" / "wrk" / "report.lua"
STALL_SECONDS = 2.0  # as wrk's own --timeout


def stalled_connections(port: int, min_age: float = STALL_SECONDS) -> int:
    """Client sockets to `port` that have received no byte since they connected min_age ago."""
    out = subprocess.run(
        ["ss", "-tniH", "state", "established", f"( dport = :{port} )"],
        capture_output=True, text=True, timeout=10,
    ).stdout
    count = 0
    for info in out.split("\n\t")[1:]:  # one info block per socket, after its address line
        if "bytes_received:" in info:
            continue
        m = re.search(r"lastrcv:(\d+)", info)
        if m and int(m.group(1)) >= min_age * 1000:
            count += 1
    return count


def run(url: str, connections: int, seconds: float, close: bool, threads: int = 2,
        timeout_s: float = STALL_SECONDS, env: dict[str, str] | None = None) -> dict[str, float]:
    """One wrk run; returns req/s, latency percentiles (ms) and error counts. `env` is added
    to wrk's environment (the TLS section's LD_PRELOAD)."""
    argv = [
        "wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{seconds:g}s",
        f"--timeout={timeout_s:g}s", "-s", str(LUA),
    ]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(url)
    port = int(url.split(":")[2].split("/")[0])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env} if env else None)
    try:
        stalled = 0
        if seconds > STALL_SECONDS + 0.5:
            time.sleep(seconds - 0.4)
            stalled = stalled_connections(port)
        stdout, stderr = proc.communicate(timeout=seconds + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    line = next((ln for ln in stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {stdout[-2000:]}{stderr[-2000:]}")
    raw = json.loads(line.split(" ", 1)[1])
    socket_errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "requests": raw["requests"],
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "mean_ms": raw["mean_us"] / 1000,
        "errors": socket_errors + raw["status"],
        "socket_errors": socket_errors,
        "status_errors": raw["status"],
        "timeouts": raw["timeout"],
        "stalled": stalled,
        "connections": connections,
        "seconds": seconds,
    }


def least_disturbed(url: str, connections: int, seconds: float, close: bool, pids: list[int],
                    retry_above: float, retries: int, threads: int = 2, env: dict[str, str] | None = None,
                    server_pids: list[int] | None = None) -> dict[str, Any]:
    """A wrk run plus the share of CPU that processes other than ours (this one with its reaped
    children, and the running servers' `pids`) took meanwhile; with `server_pids`, also the CPU
    time those processes (the server under test) used per request.

    If that share is above `retry_above`, run again (at most `retries` times) and keep the
    attempt with the least interference: chosen by the machine's load, not by the result.
    """
    best: dict[str, Any] | None = None
    for attempt in range(retries + 1):
        before, server_before = report.cpu_snapshot(pids), report.cpu_of(server_pids or [])
        r: dict[str, Any] = dict(run(url, connections, seconds, close, threads=threads, env=env))
        r["foreign_cpu"] = report.foreign_load(before, report.cpu_snapshot(pids))["foreign_cpu_share"]
        if server_pids is not None:
            used = report.cpu_of(server_pids) - server_before
            r["cpu_ms_per_request"] = used * 1000 / max(r["requests"], 1)
        if best is None or r["foreign_cpu"] < best["foreign_cpu"]:
            best = r
        if r["foreign_cpu"] <= retry_above:
            break
        if attempt < retries:
            print(f"bench: other processes took {r['foreign_cpu']:.0%} of the CPU, running again", flush=True)
    assert best is not None
    best["attempts"] = attempt + 1
    return best
