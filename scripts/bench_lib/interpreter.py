"""`--interpreter`: prefork-wasm with a large real module (CPython 3.12 for WASI, 26 MB).

Measures start-up to the first answered request with a cold artifact cache (compile) and a
warm one (restart, deserialize only), and the memory of idle workers (USS/PSS/RSS from
psutil's memory_full_info on the master's children) for several pool sizes.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

from . import wrk
from .peers import ROOT, fill
from .procs import Proc, free_port, http_get, wait_http

PYTHON_WASM = ROOT / "build" / "python-wasm" / "python.wasm"
MIB = 1048576


def ensure_module() -> Path:
    if not PYTHON_WASM.exists():
        subprocess.run([str(ROOT / "scripts" / "fetch-python-wasm")], check=True, timeout=900)
    return PYTHON_WASM


def _start(run_dir: Path, name: str, workers: int, cache: Path) -> tuple[Proc, int, float]:
    port = free_port()
    conf = fill("prefork-wasm-python.conf.in", run_dir / f"{name}.conf", dir=run_dir, port=port, name=name,
                workers=workers, root=ROOT, cache=cache, python_wasm=PYTHON_WASM)
    proc = Proc(name, [str(ROOT / ".venv" / "bin" / "prefork-wasm"), "-f", str(conf)], run_dir / f"{name}.out")
    first = wait_http(proc, port, "/py", timeout=300)
    status, body = http_get(port, "/py")
    if status != 200 or b"Hello from Python" not in body:
        raise RuntimeError(f"/py answered {status} {body[:200]!r}")
    return proc, port, first


def _idle_workers(proc: Proc, workers: int, timeout: float = 120) -> list[psutil.Process]:
    """The workers, once all `workers` of them exist and show the 'idle' process title."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = proc.children()
        try:
            idle = [k for k in kids if "[idle]" in " ".join(k.cmdline())]
        except psutil.NoSuchProcess:
            idle = []
        if len(kids) == workers and len(idle) == workers:
            return kids
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name}: {workers} idle workers not seen within {timeout:.0f}s")


def memory(pids: list[psutil.Process]) -> dict[str, float]:
    """Median per-process USS/PSS/RSS in MiB, and the sum of PSS (what the pool really costs)."""
    infos = []
    for p in pids:
        try:
            infos.append(p.memory_full_info())
        except psutil.NoSuchProcess:
            pass
    if not infos:
        return {}
    return {
        "uss_mib": statistics.median(i.uss for i in infos) / MIB,
        "pss_mib": statistics.median(i.pss for i in infos) / MIB,
        "rss_mib": statistics.median(i.rss for i in infos) / MIB,
        "total_pss_mib": sum(i.pss for i in infos) / MIB,
        "processes": len(infos),
    }


def run(run_dir: Path, pool_sizes: list[int], load_seconds: float) -> dict[str, Any]:
    ensure_module()
    cache = run_dir / "py-cache"
    result: dict[str, Any] = {"module": str(PYTHON_WASM.relative_to(ROOT)),
                              "module_bytes": PYTHON_WASM.stat().st_size}

    # Start-up: cold (empty WasmCacheDir: the master compiles first) vs warm (a restart).
    startup = {}
    for label in ("cold", "warm"):
        proc, port, first = _start(run_dir, f"py-startup-{label}", 2, cache)
        t0 = time.monotonic()
        http_get(port, "/py")
        startup[label] = {"first_response_s": first, "one_request_ms": (time.monotonic() - t0) * 1000}
        proc.stop()
    result["startup"] = startup
    print(f"bench: interpreter start-up to first response: cold {startup['cold']['first_response_s']:.2f}s, "
          f"warm {startup['warm']['first_response_s']:.2f}s")

    pools = []
    for n in pool_sizes:
        proc, port, first = _start(run_dir, f"py-pool-{n}", n, cache)
        try:
            kids = _idle_workers(proc, n)
            time.sleep(1.0)  # let the last ones settle
            master = psutil.Process(proc.pid)
            idle = memory(kids)
            # Every worker serves requests (Connection: close spreads them over the pool).
            load = wrk.run(f"http://127.0.0.1:{port}/py", n, load_seconds, close=True)
            kids = _idle_workers(proc, n)
            after = memory(kids)
            row = {"workers": n, "start_s": first, "master": memory([master]), "idle": idle,
                   "after_load": after, "load": load}
            pools.append(row)
            print(f"bench: interpreter pool {n}: idle worker USS {idle['uss_mib']:.1f} MiB, PSS "
                  f"{idle['pss_mib']:.1f} MiB; after load USS {after['uss_mib']:.1f} MiB; "
                  f"{load['rps']:.0f} req/s at c={n}")
        finally:
            proc.stop()
    result["pools"] = pools
    return result


def markdown(res: dict[str, Any]) -> str:
    s = res["startup"]
    lines = [
        f"Module: `{res['module']}` ({res['module_bytes'] / MIB:.1f} MiB), CPython 3.12.0 for wasm32-wasi, "
        "stdlib embedded; `/py` runs `benchmarks/app/hello.py` as CGI.",
        "",
        "| start-up (2 workers) | to first response | that request |",
        "| --- | ---: | ---: |",
        f"| cold cache (compile) | {s['cold']['first_response_s']:.2f} s | {s['cold']['one_request_ms']:.1f} ms |",
        f"| warm cache (restart) | {s['warm']['first_response_s']:.2f} s | {s['warm']['one_request_ms']:.1f} ms |",
        "",
        "| workers | idle USS | idle PSS | idle RSS | pool PSS total | USS after load | PSS after load "
        "| master PSS | /py req/s (c=workers, close) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in res["pools"]:
        i, a, m = p["idle"], p["after_load"], p["master"]
        lines.append(
            f"| {p['workers']} | {i['uss_mib']:.1f} MiB | {i['pss_mib']:.1f} MiB | {i['rss_mib']:.1f} MiB "
            f"| {i['total_pss_mib']:.0f} MiB | {a['uss_mib']:.1f} MiB | {a['pss_mib']:.1f} MiB "
            f"| {m['pss_mib']:.1f} MiB | {p['load']['rps']:.0f} |"
        )
    lines += ["", "USS/PSS/RSS are medians over the workers (psutil `memory_full_info`)."]
    return "\n".join(lines)
