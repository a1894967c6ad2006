"""`--interpreter`: the same Python CGI script two ways, side by side in one run.

`benchmarks/app/hello.py` runs as a script in CPython 3.12 for WASI (a 26 MB core module that
starts the interpreter on every request) and inside a componentize-py component (the
interpreter and the script's imports pre-initialised into the component's memory image). Same
config apart from `WasmModule`, a fresh instance per request either way. For each: start-up to
the first answered request with a cold artifact cache (compile) and a warm one (restart), the
first request a fresh worker serves, then for several pool sizes req/s and p50/p99 under
`Connection: close` load at c = workers, and the memory of idle workers (USS/PSS/RSS from
psutil's memory_full_info on the master's children).
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from harness import Process, free_port, http_get, http_status

from . import procs, report, wrk
from .peers import ROOT, fill

PYTHON_WASM = ROOT / "build" / "python-wasm" / "python.wasm"
APP = ROOT / "benchmarks" / "app"
COMPONENT_SOURCES = (APP / "hello.py", APP / "component.py")
COMPONENT = ROOT / "build" / "python-component" / "hello.wasm"
MIB = 1048576
TARGET_RATIO = 10.0  # the component's req/s over the core module's


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    module: Path


VARIANTS = (
    Variant("core", "CPython 3.12 for WASI, core module (interpreter starts per request)", PYTHON_WASM),
    Variant("component", "componentize-py component (pre-initialised)", COMPONENT),
)


def ensure_module() -> Path:
    if not PYTHON_WASM.exists():
        subprocess.run([str(ROOT / "scripts" / "fetch-python-wasm")], check=True, timeout=900)
    return PYTHON_WASM


def ensure_component() -> Path:
    """Build hello.py into a component (scripts/build-components) unless it is up to date."""
    newest = max(p.stat().st_mtime for p in COMPONENT_SOURCES)
    if not COMPONENT.exists() or COMPONENT.stat().st_mtime < newest:
        subprocess.run([str(ROOT / "scripts" / "build-components"), str(APP / "component.py"), str(COMPONENT)],
                       check=True, timeout=900)
    return COMPONENT


def _start(run_dir: Path, variant: Variant, name: str, workers: int, cache: Path) -> tuple[Process, int]:
    """Start a server and wait until it answers (a 404 outside /py: no guest has run yet)."""
    port = free_port()
    conf = fill("prefork-wasm-python.conf.in", run_dir / f"{name}.conf", dir=run_dir, port=port, name=name,
                workers=workers, root=ROOT, cache=cache, module=variant.module)
    proc = procs.start_prefork_wasm(name, conf, run_dir / f"{name}.out")
    proc.wait_until(lambda: http_status(port, "/ready") is not None, 300, f"{name} to answer", interval=0.01)
    return proc, port


def _timed_get(port: int) -> float:
    """One /py request (checked), in milliseconds."""
    t0 = time.monotonic()
    status, body = http_get(port, "/py")
    ms = (time.monotonic() - t0) * 1000
    if status != 200 or b"Hello from Python" not in body:
        raise RuntimeError(f"/py answered {status} {body[:200]!r}")
    return ms


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


def startup(run_dir: Path, variant: Variant, cache: Path) -> dict[str, dict[str, float]]:
    """Cold (empty WasmCacheDir: the master compiles first) and warm (a restart) start-up: time
    to the first answered /py, that first request of a fresh worker, and the next ones."""
    out = {}
    for label in ("cold", "warm"):
        proc, port = _start(run_dir, variant, f"{variant.key}-startup-{label}", 2, cache)
        try:
            first_ms = _timed_get(port)
            out[label] = {
                "first_response_s": time.monotonic() - proc.started,
                "first_request_ms": first_ms,
                "next_request_ms": statistics.median(_timed_get(port) for _ in range(5)),
            }
        finally:
            proc.stop()
    return out


def pool(run_dir: Path, variant: Variant, workers: int, cache: Path, load_seconds: float,
         retry_above: float, retries: int) -> dict[str, Any]:
    """Idle memory, `Connection: close` load at c = workers spread over the pool (run again
    while other processes take more than `retry_above` of the CPU), memory after."""
    proc, port = _start(run_dir, variant, f"{variant.key}-pool-{workers}", workers, cache)
    try:
        start_s = procs.wait_http(proc, port, "/py", timeout=60)
        kids = procs.idle_workers(proc, workers)
        time.sleep(1.0)  # let the last ones settle
        idle = memory(kids)
        wrk.run(f"http://127.0.0.1:{port}/py", workers, 1.0, close=True)  # every worker has served
        pids = [proc.pid, *(k.pid for k in kids)]
        load = wrk.least_disturbed(f"http://127.0.0.1:{port}/py", workers, load_seconds, True, pids,
                                   retry_above, retries)
        after = memory(procs.idle_workers(proc, workers))
        return {"workers": workers, "start_s": start_s, "master": memory([psutil.Process(proc.pid)]),
                "idle": idle, "after_load": after, "load": load}
    finally:
        proc.stop()


def _other_cpu(before: dict[str, float]) -> float:
    """The share of the machine's CPU that processes not started here took since `before`."""
    return report.foreign_load(before, report.cpu_snapshot())["foreign_cpu_share"]


def run(run_dir: Path, pool_sizes: list[int], load_seconds: float, retry_above: float,
        retries: int) -> dict[str, Any]:
    """Each measurement for both variants back to back (core, then component), so that a
    shared machine's changing load hits the two alike."""
    ensure_module()
    ensure_component()
    result: dict[str, Any] = {"variants": {
        v.key: {"label": v.label, "module": str(v.module.relative_to(ROOT)), "module_bytes": v.module.stat().st_size,
                "pools": []}
        for v in VARIANTS}}
    for v in VARIANTS:
        before = report.cpu_snapshot()
        s = startup(run_dir, v, run_dir / f"{v.key}-cache")
        result["variants"][v.key]["startup"] = s | {"other_cpu": _other_cpu(before)}
        print(f"bench: {v.key}: start-up to first response cold {s['cold']['first_response_s']:.2f}s, warm "
              f"{s['warm']['first_response_s']:.2f}s; first request {s['warm']['first_request_ms']:.1f} ms, "
              f"next {s['warm']['next_request_ms']:.1f} ms", flush=True)
    for n in pool_sizes:
        for v in VARIANTS:
            row = pool(run_dir, v, n, run_dir / f"{v.key}-cache", load_seconds, retry_above, retries)
            result["variants"][v.key]["pools"].append(row)
            i, load = row["idle"], row["load"]
            print(f"bench: {v.key} pool {n}: {load['rps']:.0f} req/s, p50 {load['p50_ms']:.1f} ms, p99 "
                  f"{load['p99_ms']:.1f} ms, errors {load['errors']}; idle worker PSS {i['pss_mib']:.1f} MiB, "
                  f"USS {i['uss_mib']:.1f} MiB; other load {load['foreign_cpu']:.0%}", flush=True)
    result["ratios"] = ratios(result)
    for r in result["ratios"]:
        print(f"bench: component / core req/s at {r['workers']} workers: {r['ratio']:.1f}x "
              f"(target >= {TARGET_RATIO:g}x: {'PASS' if r['ratio'] >= TARGET_RATIO else 'MISS'})")
    return result


def ratios(res: dict[str, Any]) -> list[dict[str, float]]:
    core, comp = res["variants"]["core"]["pools"], res["variants"]["component"]["pools"]
    return [{"workers": a["workers"], "ratio": b["load"]["rps"] / a["load"]["rps"] if a["load"]["rps"] else 0.0}
            for a, b in zip(core, comp, strict=True)]


def markdown(res: dict[str, Any]) -> str:
    if "ratios" not in res or "foreign_cpu" not in res["variants"]["core"]["pools"][0]["load"]:
        return "(an older run, in another format: see the .json)"
    vs = res["variants"]
    lines = [
        "`/py` runs `benchmarks/app/hello.py` as CGI, with the same config apart from `WasmModule`: "
        + "; ".join(f"**{k}**: `{v['module']}` ({v['module_bytes'] / MIB:.1f} MiB), {v['label']}"
                    for k, v in vs.items())
        + ". A fresh instance per request either way.",
        "",
        "| start-up (2 workers) | " + " | ".join(vs) + " |",
        "| --- | " + " | ".join("---:" for _ in vs) + " |",
    ]

    def row(what: str, cell: Callable[[dict[str, Any]], str]) -> str:
        return f"| {what} | " + " | ".join(cell(v) for v in vs.values()) + " |"

    lines += [
        row("cold cache (compile): to first response",
            lambda v: f"{v['startup']['cold']['first_response_s']:.2f} s"),
        row("warm cache (restart): to first response",
            lambda v: f"{v['startup']['warm']['first_response_s']:.2f} s"),
        row("first request of a fresh worker", lambda v: f"{v['startup']['warm']['first_request_ms']:.1f} ms"),
        row("next requests (median of 5, one at a time)",
            lambda v: f"{v['startup']['warm']['next_request_ms']:.1f} ms"),
        row("other load meanwhile (share of the machine's CPU)", lambda v: f"{v['startup']['other_cpu']:.0%}"),
    ]
    lines += [
        "",
        ("| workers | variant | req/s (c=workers, close) | p50 | p99 | errors | idle PSS | idle USS | idle RSS "
         "| pool PSS total | PSS after load | master PSS | other load |"),
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    ratio_of = {r["workers"]: r["ratio"] for r in res["ratios"]}
    # The variants were measured for the same pool sizes: their lists are parallel.
    for same_size in zip(*(v["pools"] for v in vs.values()), strict=True):  # one pool size, every variant
        for k, p in zip(vs, same_size, strict=True):
            i, a, m, load = p["idle"], p["after_load"], p["master"], p["load"]
            lines.append(
                f"| {p['workers']} | {k} | {load['rps']:,.0f} | {load['p50_ms']:.1f} ms | {load['p99_ms']:.1f} ms "
                f"| {load['errors']} | {i['pss_mib']:.1f} MiB | {i['uss_mib']:.1f} MiB | {i['rss_mib']:.1f} MiB "
                f"| {i['total_pss_mib']:.0f} MiB | {a['pss_mib']:.1f} MiB | {m['pss_mib']:.1f} MiB "
                f"| {load['foreign_cpu']:.0%} |")
    lines += [
        "",
        "component / core req/s: " + ", ".join(
            f"{n} workers {r:.1f}x ({'PASS' if r >= TARGET_RATIO else 'MISS'})" for n, r in ratio_of.items())
        + f" (target >= {TARGET_RATIO:g}x).",
        "",
        "USS/PSS/RSS are medians over the workers (psutil `memory_full_info`).",
    ]
    return "\n".join(lines)
